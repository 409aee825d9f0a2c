import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync, statSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findPostgres, pgBin } from '../common/pg-binaries';
import { chownForPostgres, pgSpawnIdentity } from '../common/pg-identity';
import { createS3Client } from '../drivers/s3/client';
import { listObjects, type ListedObject } from '../drivers/s3/objects';
import { downloadObjects } from '../dev/storage/pgdata-import/download';
import { stepContext } from '../common/activity-context';
import { uploadDataDirectory } from '../drivers/importer/upload';
import { classifyEntry, crc32c, createImportPgdataHandler, importPgdataFromS3, parsePgControl, resealPgControl, walSegmentName } from '../dev/storage/pgdata-import';
import { freePort } from '../dev/processes';
import { uniqueId } from './helpers/ids';
import { testConfig } from './helpers/stack';

const run = promisify(execFile);
const install = findPostgres({ pgBinDir: process.env.PG_BIN_DIR });

let root: string;
let pgdata: string;
let s3: S3Client;
let bucket: string;
let validPrefix: string;
let controlBytes: Buffer;

async function put(key: string, body: string | Buffer) {
  await s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body }));
}

/** A prefix holding the commit marker, the given pg_control and a few extra objects. */
async function hostilePrefix(control: Buffer, extra: Record<string, string | Buffer> = {}, status = '{"done":true}'): Promise<string> {
  const prefix = uniqueId('imports/hostile');
  await put(`${prefix}/status/pgdata`, status);
  await put(`${prefix}/pgdata/global/pg_control`, control);
  for (const [rel, body] of Object.entries(extra)) await put(`${prefix}/pgdata/${rel}`, body);
  return prefix;
}

function target(): string {
  return path.join(root, uniqueId('target'));
}

beforeAll(async () => {
  root = mkdtempSync(path.join(os.tmpdir(), 'dc-pgdata-import-'));
  chownForPostgres(root, false);
  pgdata = path.join(root, 'source-pgdata');
  await run(pgBin(install, 'initdb'), ['-D', pgdata, '-U', 'cloud_admin', '-E', 'UTF8', '--locale', 'C', '-A', 'trust', '--no-sync'], pgSpawnIdentity());
  controlBytes = readFileSync(path.join(pgdata, 'global', 'pg_control'));
  const config = testConfig();
  s3 = createS3Client(config.s3);
  bucket = config.s3.bucket;
  validPrefix = uniqueId('imports/valid');
  await uploadDataDirectory({ s3, bucket, dataDir: pgdata, keyPrefix: `${validPrefix}/pgdata`, ctx: stepContext() });
  await put(`${validPrefix}/status/pgdata`, '{"done":true}');
});

afterAll(() => {
  s3?.destroy();
  if (root) rmSync(root, { recursive: true, force: true });
});

describe('CRC-32C and pg_control', () => {
  it('computes the standard check value and verifies a real pg_control', async () => {
    expect(crc32c(Buffer.from('123456789'))).toBe(0xe3069283);
    const info = parsePgControl(controlBytes);
    const { stdout } = await run(pgBin(install, 'pg_controldata'), ['-D', pgdata], { env: { LC_ALL: 'C' } });
    expect(info.pgMajor).toBe(15);
    expect(info.catalogVersion).toBe(Number(/Catalog version number:\s+(\d+)/.exec(stdout)![1]));
    expect(info.checkpointLsn).toBe(/Latest checkpoint location:\s+(\S+)/.exec(stdout)![1]);
    expect(info.systemIdentifier.toString()).toBe(/Database system identifier:\s+(\d+)/.exec(stdout)![1]);
    expect(info.state).toBe('shut down');
    expect(existsSync(path.join(pgdata, 'pg_wal', walSegmentName(info.timeline, info.checkpointLsnValue, info.walSegmentSize)))).toBe(true);
  });

  it('maps catalog versions and refuses unknown ones and other majors', () => {
    const withCatalog = (v: number) => {
      const b = Buffer.from(controlBytes);
      b.writeUInt32LE(v, 12);
      return resealPgControl(b);
    };
    expect(() => parsePgControl(withCatalog(202307071))).toThrow(/PostgreSQL 16; only PostgreSQL 15/);
    expect(() => parsePgControl(withCatalog(202107181))).toThrow(/PostgreSQL 14; only PostgreSQL 15/);
    expect(() => parsePgControl(withCatalog(202406281))).toThrow(/format 1300 does not match/);
    expect(() => parsePgControl(withCatalog(201909212))).toThrow(/unrecognized catalog version 201909212/);
    expect(parsePgControl(withCatalog(202307071), [16]).pgMajor).toBe(16);
  });
});

describe('object names', () => {
  it('refuses every way out of the data directory', () => {
    const bad = ['../x', 'base/../../etc/passwd', '/etc/passwd', 'base\\1\\2', 'base/1/\0', 'base//1', 'base/./1', 'global/', 'pg_tblspc/16384'];
    for (const rel of bad) expect(() => classifyEntry(`p/pgdata/${rel}`, rel, 8192, 16 << 20), rel).toThrow(/Refusing object/);
    expect(classifyEntry('p/pgdata/base/5/1259', 'base/5/1259', 8192 * 3, 16 << 20).kind).toBe('relation');
    expect(classifyEntry('p/pgdata/base/5/1259_fsm.2', 'base/5/1259_fsm.2', 8192, 16 << 20).kind).toBe('relation');
    expect(() => classifyEntry('k', 'base/5/1259', 8191, 16 << 20)).toThrow(/not a multiple of 8192/);
    expect(() => classifyEntry('k', 'base/5/1259', 2 ** 30 + 8192, 16 << 20)).toThrow(/exceeds/);
  });
});

describe('importPgdataFromS3', () => {
  it('downloads a valid upload from which PostgreSQL 15 starts', async () => {
    const dir = target();
    const result = await importPgdataFromS3({ s3, bucket, prefix: validPrefix, targetDir: dir });
    expect(result.pgVersion).toBe(15);
    expect(result.checkpointLsn).toBe(parsePgControl(controlBytes).checkpointLsn);
    expect(result.files).toBeGreaterThan(900);
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    expect(readFileSync(path.join(dir, 'global', 'pg_control')).equals(controlBytes)).toBe(true);

    const port = await freePort();
    writeFileSync(path.join(dir, 'postgresql.auto.conf'), `port = ${port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '${root}'\n`);
    chownForPostgres(dir);
    const log = path.join(root, `${path.basename(dir)}.log`);
    await run(pgBin(install, 'pg_ctl'), ['-D', dir, '-l', log, '-w', '-t', '120', 'start'], pgSpawnIdentity());
    try {
      const client = new pg.Client({ host: '127.0.0.1', port, user: 'cloud_admin', database: 'postgres' });
      await client.connect();
      const { rows } = await client.query<{ n: string }>('SELECT count(*) AS n FROM pg_database');
      await client.end();
      expect(Number(rows[0]!.n)).toBe(3);
    } finally {
      await run(pgBin(install, 'pg_ctl'), ['-D', dir, '-m', 'fast', '-w', 'stop'], pgSpawnIdentity());
    }
  });

  it('refuses an import whose commit marker is missing or not done', async () => {
    const missing = uniqueId('imports/unfinished');
    await put(`${missing}/pgdata/global/pg_control`, controlBytes);
    await expect(importPgdataFromS3({ s3, bucket, prefix: missing, targetDir: target() })).rejects.toThrow(/status\/pgdata does not exist/);
    const notDone = await hostilePrefix(controlBytes, {}, '{"done":false}');
    await expect(importPgdataFromS3({ s3, bucket, prefix: notDone, targetDir: target() })).rejects.toThrow(/does not say \{"done":true\}/);
  });

  it('refuses a pg_control with a bad CRC, an unknown catalog version or an unclean state', async () => {
    const flipped = Buffer.from(controlBytes);
    flipped[40]! ^= 0xff;
    await expect(importPgdataFromS3({ s3, bucket, prefix: await hostilePrefix(flipped), targetDir: target() })).rejects.toThrow(
      /pgdata\/global\/pg_control: pg_control fails its CRC-32C check/,
    );
    const unknown = Buffer.from(controlBytes);
    unknown.writeUInt32LE(209912311, 12);
    await expect(importPgdataFromS3({ s3, bucket, prefix: await hostilePrefix(resealPgControl(unknown)), targetDir: target() })).rejects.toThrow(
      /unrecognized catalog version 209912311/,
    );
    const running = Buffer.from(controlBytes);
    running.writeInt32LE(5, 16);
    await expect(importPgdataFromS3({ s3, bucket, prefix: await hostilePrefix(resealPgControl(running)), targetDir: target() })).rejects.toThrow(
      /not shut down cleanly \(pg_control state: in production\)/,
    );
    await expect(importPgdataFromS3({ s3, bucket, prefix: await hostilePrefix(controlBytes.subarray(0, 4096)), targetDir: target() })).rejects.toThrow(
      /pg_control is 4096 bytes, expected 8192/,
    );
  });

  it('refuses hostile names and sizes, naming the key', async () => {
    const cases: [Record<string, string | Buffer>, RegExp][] = [
      [{ 'base/5/16384': Buffer.alloc(8192 + 100) }, /"imports\/hostile-[0-9a-f-]+\/pgdata\/base\/5\/16384": size 8292 is not a multiple of 8192/],
      [{ 'global/2677.1': Buffer.alloc(5) }, /pgdata\/global\/2677\.1": size 5 is not a multiple of 8192/],
      [{ 'base\\5\\1259': 'x' }, /backslash/],
      [{ 'pg_tblspc/16400': 'x' }, /tablespace links cannot be imported/],
      [{ 'secrets/key.pem': 'x' }, /unexpected top-level directory secrets/],
      [{ 'postmaster.pid': '123' }, /was not stopped/],
      [{ 'base/5/evil.sh': 'x' }, /"evil\.sh" is not a relation file name/],
      [{ 'pg_wal/000000010000000000000001': Buffer.alloc(100) }, /WAL segment is 100 bytes/],
    ];
    for (const [extra, error] of cases) {
      const dir = target();
      await expect(importPgdataFromS3({ s3, bucket, prefix: await hostilePrefix(controlBytes, extra), targetDir: dir })).rejects.toThrow(error);
      expect(existsSync(dir)).toBe(false);
    }
    await expect(importPgdataFromS3({ s3, bucket, prefix: validPrefix, targetDir: target(), maxTotalBytes: 10 * 1024 * 1024 })).rejects.toThrow(
      /exceeds the 10485760-byte limit/,
    );
    const noWal = await hostilePrefix(controlBytes, { PG_VERSION: '15\n', 'global/pg_filenode.map': Buffer.alloc(512) });
    await expect(importPgdataFromS3({ s3, bucket, prefix: noWal, targetDir: target() })).rejects.toThrow(/lacks .*pg_wal\/0000000100000000000000\d\d, the WAL segment holding the checkpoint/);
  });

  it('refuses a listing with a ".." key (served by a hostile S3 endpoint)', async () => {
    // s3rver normalizes dot segments away, so a loopback proxy plays the hostile server: it adds
    // a "../" key to the listing of an otherwise valid upload.
    const upstream = new URL(testConfig().s3.endpoint!);
    const proxy = http.createServer((req, res) => {
      const forward = http.request(
        { host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers },
        (up) => {
          const chunks: Buffer[] = [];
          up.on('data', (c: Buffer) => chunks.push(c));
          up.on('end', () => {
            let body = Buffer.concat(chunks);
            if (req.method === 'GET' && /[?&]prefix=/.test(req.url ?? '')) {
              const evil = `<Contents><Key>${validPrefix}/pgdata/base/../../../etc/cron.d/evil</Key><Size>8192</Size><StorageClass>STANDARD</StorageClass></Contents>`;
              body = Buffer.from(body.toString('utf8').replace('</ListBucketResult>', `${evil}</ListBucketResult>`));
            }
            res.writeHead(up.statusCode ?? 500, { ...up.headers, 'content-length': String(body.length) });
            res.end(body);
          });
        },
      );
      req.pipe(forward);
    });
    await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
    const hostile = createS3Client({ ...testConfig().s3, endpoint: `http://127.0.0.1:${(proxy.address() as AddressInfo).port}` });
    try {
      const dir = target();
      await expect(importPgdataFromS3({ s3: hostile, bucket, prefix: validPrefix, targetDir: dir })).rejects.toThrow(
        /Refusing object ".*\/pgdata\/base\/\.\.\/\.\.\/\.\.\/etc\/cron\.d\/evil": "\.\." path segment/,
      );
      expect(existsSync(dir)).toBe(false);
    } finally {
      hostile.destroy();
      await new Promise<void>((resolve) => proxy.close(() => resolve()));
    }
  });

  it('refuses a non-empty target directory', async () => {
    await expect(importPgdataFromS3({ s3, bucket, prefix: validPrefix, targetDir: pgdata })).rejects.toThrow(/is not empty/);
  });

  it('serves the dev pageserver as its import_pgdata handler, reading only allowed buckets', async () => {
    const handler = createImportPgdataHandler({ s3, allowedBuckets: [bucket] });
    const request = (importPgdata: unknown) => ({ tenantId: 't', timelineId: 'tl', importPgdata, targetPgdata: target() });
    await expect(handler(request({ idempotency_key: 'k' }))).rejects.toThrow(/import_pgdata is malformed: location/);
    await expect(handler(request({ location: { AwsS3: { region: 'us-east-1', bucket: 'someone-elses', key: validPrefix } } }))).rejects.toThrow(
      /bucket "someone-elses", which this pageserver does not read/,
    );
    await expect(handler(request({ location: { AwsS3: { region: 'us-east-1', bucket, key: '../x' } } }))).rejects.toThrow(/not a safe relative S3 prefix/);
    const ok = request({ idempotency_key: 'k', location: { AwsS3: { region: 'us-east-1', bucket, key: `${validPrefix}/` } } });
    await expect(handler(ok)).resolves.toMatchObject({ pgVersion: 15 });
    expect(existsSync(path.join(ok.targetPgdata, 'global', 'pg_control'))).toBe(true);
  });

  it('refuses an object that changed between the listing and its download', async () => {
    const key = `${uniqueId('imports/changing')}/pgdata/base/5/900001`;
    await put(key, randomBytes(8192 * 4));
    const listed: ListedObject[] = [];
    for await (const o of listObjects(s3, bucket, key)) listed.push(o);
    await put(key, randomBytes(8192 * 4));
    const dest = path.join(root, uniqueId('changing'), 'file');
    await expect(downloadObjects(s3, bucket, [{ key, size: listed[0]!.size, etag: listed[0]!.etag, dest }], { concurrency: 2 })).rejects.toThrow(/changed after it was listed/);
  });
});
