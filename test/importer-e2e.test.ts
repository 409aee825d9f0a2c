import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import {
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  NoSuchUpload,
  PutObjectCommand,
  UploadPartCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { ApplicationFailure, type Logger } from '@temporalio/common';
import { MockActivityEnvironment } from '@temporalio/testing';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findPostgres, pgBin } from '../common/pg-binaries';
import { chownForPostgres, pgSpawnIdentity } from '../common/pg-identity';
import { createImporterActivities, type ImporterActivities } from '../activities/importer/activities';
import { initialProgress, type UploadProgress, type UploadResult } from '../drivers/importer/upload';
import { createS3Client } from '../drivers/s3/client';
import { getObjectBytes, listObjects } from '../drivers/s3/objects';
import { buildImportSpec } from '../drivers/secrets/import-spec';
import { createLocalKeyProvider, generateLocalKey, parseLocalKey } from '../drivers/secrets/local-aes';
import { importPgdataFromS3 } from '../dev/storage/pgdata-import';
import { freePort } from '../dev/processes';
import { uniqueId } from './helpers/ids';
import { importFingerprint, startImportSource, type ImportSource } from '../dev/import-source';
import { MOTO_CREDENTIALS } from './helpers/moto';
import { motoEndpoint } from './helpers/moto-endpoint';
import { testConfig } from './helpers/stack';

/**
 * The importer's activities against a real PostgreSQL 15 source (password authentication over
 * loopback), a real scratch Postgres and the test stack's s3rver, run in Temporal's activity
 * context (heartbeats, cancellation, heartbeat details of a previous attempt).
 */

const run = promisify(execFile);
const install = findPostgres({ pgBinDir: process.env.PG_BIN_DIR });
const PASSWORD = 'p@ss:w/rd pct%';
const DATABASE = 'appdb';
const MiB = 1024 * 1024;

let source: ImportSource;
let root: string;
let s3: S3Client;
let bucket: string;
const keyProviders = { Local: createLocalKeyProvider({ 'test-key': parseLocalKey(generateLocalKey()) }) };
/** Commands sent through `s3`: name (PutObjectCommand, UploadPartCommand...) and key. */
const sent: { command: string; key?: string }[] = [];
/** By object key: the x-amz-content-sha256 its last PutObject was signed with. */
const payloadHashes = new Map<string, string>();


async function newImport(opts: { password?: string; database?: string } = {}): Promise<{ prefix: string; workdir: string }> {
  const prefix = uniqueId('imports/e2e');
  const spec = await buildImportSpec({ providers: keyProviders, kind: 'Local', keyId: 'test-key', sourceConnstring: source.url(opts.password, opts.database) });
  await s3.send(new PutObjectCommand({ Bucket: bucket, Key: `${prefix}/spec.json`, Body: JSON.stringify(spec) }));
  return { prefix, workdir: path.join(root, uniqueId('work')) };
}

function activities(overrides: Partial<Parameters<typeof createImporterActivities>[0]> = {}): ImporterActivities {
  return createImporterActivities({
    s3,
    bucket,
    install,
    keyProviders,
    // Keep the scratch server small on a shared test machine.
    resources: { totalMemoryBytes: 1024 * MiB, cpus: 2 },
    // A heartbeat per file and part, so the tests can watch (and interrupt) the upload step by step.
    upload: { concurrency: 4, partSize: 5 * MiB, multipartThreshold: 8 * MiB, heartbeatIntervalMs: 0 },
    ...overrides,
  });
}

/** Records every command `client` sends (in `sent`) and the payload hash of each PUT (in `payloadHashes`). */
function instrumented(client: S3Client): S3Client {
  client.middlewareStack.add(
    (next, context) => async (args) => {
      sent.push({ command: context.commandName ?? '?', key: (args.input as { Key?: string }).Key });
      try {
        return await next(args);
      } catch (err) {
        // A server error names the request in the test output (s3rver says no more than InternalError).
        const input = args.input as { Key?: string; Prefix?: string };
        const status = (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode ?? 0;
        if (status === 500) console.error(`S3 ${context.commandName} ${input.Key ?? input.Prefix ?? ''} failed: ${(err as Error).name}: ${(err as Error).message}`);
        throw err;
      }
    },
    { step: 'initialize', name: 'countCommands' },
  );
  // The payload hash each PUT was signed with, as it went on the wire.
  client.middlewareStack.add(
    (next, context) => async (args) => {
      const headers = (args.request as { headers?: Record<string, string> }).headers ?? {};
      if (context.commandName === 'PutObjectCommand') payloadHashes.set((args.input as { Key: string }).Key, headers['x-amz-content-sha256'] ?? '');
      return next(args);
    },
    { step: 'finalizeRequest', name: 'recordPayloadHashes' },
  );
  return client;
}

/**
 * The S3 servers the upload tests run against: the stack's s3rver, and moto (test/helpers/moto.ts).
 * moto, a Python server, takes minutes for the uploads of the two resume tests; `npm test` runs
 * them against s3rver and only the quick one against moto, `npm run test:s3-compat` runs all of
 * them against both (DURABLE_COMPUTE_TEST_S3_COMPAT=1).
 */
const FULL_S3_COMPAT = process.env.DURABLE_COMPUTE_TEST_S3_COMPAT === '1';
const s3Backends: { name: string; connect: () => { s3: S3Client; bucket: string } | undefined }[] = [
  { name: 's3rver', connect: () => undefined },
  {
    name: 'moto',
    connect: () => {
      const moto = motoEndpoint();
      return { s3: createS3Client({ endpoint: moto.endpoint, region: moto.region, bucket: moto.bucket, forcePathStyle: true, credentials: MOTO_CREDENTIALS }), bucket: moto.bucket };
    },
  },
];

/** For the tests of a describe block: `s3` and `bucket` are the backend's (undefined: the stack's, as everywhere else). */
function useS3Backend(backend: (typeof s3Backends)[number]): void {
  let saved: { s3: S3Client; bucket: string } | undefined;
  beforeAll(() => {
    const other = backend.connect();
    if (!other) return;
    saved = { s3, bucket };
    s3 = instrumented(other.s3);
    bucket = other.bucket;
  });
  afterAll(() => {
    if (!saved) return;
    s3.destroy();
    ({ s3, bucket } = saved);
  });
}

beforeAll(async () => {
  root = mkdtempSync(path.join(os.tmpdir(), 'dc-importer-'));
  chownForPostgres(root, false);
  const config = testConfig();
  s3 = instrumented(createS3Client(config.s3));
  bucket = config.s3.bucket;

  // About 40 MB of events: one relation file big enough for a multipart upload.
  source = await startImportSource({ password: PASSWORD, database: DATABASE, size: { customers: 20_000, orders: 100_000, events: 250_000, eventPayloadRepeat: 3 } });
  expect(source.fingerprint.events).toMatch(/^250000:/);
  expect(source.fingerprint.invoice_seq).toBe('1041');
}, 600_000);

afterAll(async () => {
  for (const dir of root ? readdirSync(root) : []) {
    if (dir.startsWith('work-')) await activities().destroyWorkdir({ workdir: path.join(root, dir) }).catch(() => undefined);
  }
  await source?.server.stop();
  s3?.destroy();
  if (root) rmSync(root, { recursive: true, force: true });
}, 300_000);

/** Starts Postgres 15 on a downloaded data directory and returns the fingerprint of the imported database. */
async function fingerprintOfDataDir(dataDir: string): Promise<Record<string, string>> {
  const port = await freePort();
  writeFileSync(path.join(dataDir, 'postgresql.auto.conf'), `port = ${port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '${root}'\n`);
  chownForPostgres(dataDir);
  await run(pgBin(install, 'pg_ctl'), ['-D', dataDir, '-l', `${dataDir}.log`, '-w', '-t', '120', 'start'], pgSpawnIdentity());
  try {
    // The scratch server's socket trusts its owner; TCP needs the scratch password we don't have.
    const client = new pg.Client({ host: root, port, user: 'cloud_admin', database: DATABASE });
    await client.connect();
    try {
      return await importFingerprint(client);
    } finally {
      await client.end();
    }
  } finally {
    await run(pgBin(install, 'pg_ctl'), ['-D', dataDir, '-m', 'fast', '-w', 'stop'], pgSpawnIdentity());
  }
}

async function waitFor(what: string, predicate: () => boolean | Promise<boolean>, timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

/** MockActivityEnvironment.run with the activity's own result type. */
function runIn<A extends unknown[], R>(env: MockActivityEnvironment, fn: (...args: A) => Promise<R>, ...args: A): Promise<R> {
  return env.run(fn, ...args) as Promise<R>;
}

function countUploads(from: number): number {
  return sent.slice(from).filter((c) => c.command === 'PutObjectCommand' || c.command === 'CreateMultipartUploadCommand').length;
}

describe('fast import activities', () => {
  const state: { prefix?: string; workdir?: string; upload?: UploadResult } = {};

  it('import a database: scratch init, dump, restore, stop, upload, status; the download starts with the same data', async () => {
    const { prefix, workdir } = await newImport();
    Object.assign(state, { prefix, workdir });
    const a = activities();
    const env = new MockActivityEnvironment();
    const heartbeats: unknown[] = [];
    env.on('heartbeat', (d: unknown) => heartbeats.push(d));

    const init = await runIn(env, a.initScratchPostgres, { workdir, database: DATABASE });
    expect(init).toMatchObject({ reusedDataDir: false, started: true, createdDatabase: true });
    // Idempotent: a second call reuses the data directory and the running server.
    expect(await runIn(env, a.initScratchPostgres, { workdir, database: DATABASE })).toMatchObject({ reusedDataDir: true, started: false, createdDatabase: false, port: init.port });

    const dump = await runIn(env, a.dumpSource, { workdir, prefix, jobs: 2 });
    expect(dump.skipped).toBe(false);
    expect(readFileSync(path.join(workdir, 'pg_dump.log'), 'utf8')).not.toContain('s3cr3t');
    const restore = await runIn(env, a.restoreDump, { workdir, database: DATABASE, jobs: 2 });
    expect(restore).toEqual({ skipped: false, tocSha256: dump.tocSha256 });
    const stopped = await runIn(env, a.stopScratchPostgres, { workdir });
    expect(stopped.state).toBe('shut down');

    // A symlink in the data directory is skipped, not followed.
    symlinkSync('/etc/passwd', path.join(workdir, 'pgdata', 'pg_stat', 'not-a-real-file'));
    const before = sent.length;
    const upload = await runIn(env, a.uploadPgdata, { workdir, prefix });
    state.upload = upload;
    expect(upload.skippedSymlinks).toEqual(['pg_stat/not-a-real-file']);
    expect(upload.uploadedFiles).toBe(upload.filesTotal);
    expect(upload.skippedFiles).toBe(0);
    expect(sent.slice(before).map((c) => c.command)).toContain('CreateMultipartUploadCommand');
    expect(heartbeats.filter((h) => (h as UploadProgress).phase === 'upload').length).toBeGreaterThanOrEqual(upload.filesTotal);
    const keys: string[] = [];
    for await (const o of listObjects(s3, bucket, `${prefix}/pgdata/`)) keys.push(o.key);
    expect(keys).toHaveLength(upload.filesTotal);
    expect(keys.some((k) => k.includes('not-a-real-file'))).toBe(false);

    expect(await getObjectBytes(s3, bucket, `${prefix}/status/pgdata`)).toBeUndefined();
    await runIn(env, a.writePgdataStatus, { prefix });
    await runIn(env, a.writeFastImportStatus, { prefix });
    expect(JSON.parse((await getObjectBytes(s3, bucket, `${prefix}/status/pgdata`))!.toString())).toEqual({ done: true });
    expect(JSON.parse((await getObjectBytes(s3, bucket, `${prefix}/status/fast_import`))!.toString())).toEqual({ command: 'pgdata', done: true });

    const target = path.join(root, uniqueId('imported'));
    const imported = await importPgdataFromS3({ s3, bucket, prefix, targetDir: target });
    expect(imported.pgVersion).toBe(15);
    expect(imported.checkpointLsn).toBe(stopped.checkpointLsn);
    expect(await fingerprintOfDataDir(target)).toEqual(source.fingerprint);
  });

  it('never redoes a completed dump, and redoes an incomplete one from scratch', async () => {
    const { workdir, prefix } = state;
    const a = activities();
    const env = new MockActivityEnvironment();
    const tocMtime = statSync(path.join(workdir!, 'dumpdir', 'toc.dat')).mtimeMs;
    const again = await runIn(env, a.dumpSource, { workdir: workdir!, prefix: prefix! });
    expect(again.skipped).toBe(true);
    expect(statSync(path.join(workdir!, 'dumpdir', 'toc.dat')).mtimeMs).toBe(tocMtime);

    // An incomplete dump (no completion marker) in another work directory: removed and redone.
    const other = path.join(root, uniqueId('work'));
    const partial = path.join(other, 'dumpdir');
    await run('mkdir', ['-p', partial]);
    writeFileSync(path.join(partial, 'toc.dat'), 'half a table of contents');
    writeFileSync(path.join(partial, '9999.dat.gz'), 'leftover');
    const redone = await runIn(env, a.dumpSource, { workdir: other, prefix: prefix! });
    expect(redone.skipped).toBe(false);
    expect(existsSync(path.join(partial, '9999.dat.gz'))).toBe(false);
    expect(redone.tocSha256).not.toBe('');
    expect((await runIn(env, a.dumpSource, { workdir: other, prefix: prefix! })).skipped).toBe(true);
    rmSync(other, { recursive: true, force: true });
  });

  it('restarts an interrupted restore in a clean database', async () => {
    const { workdir } = state;
    const a = activities();
    // Forget the finished restore, as if the worker had died during it.
    rmSync(path.join(workdir!, 'restore.done.json'));
    const env = new MockActivityEnvironment();
    const interrupted = runIn(env, a.restoreDump, { workdir: workdir!, database: DATABASE, jobs: 2 });
    const scratch = JSON.parse(readFileSync(path.join(workdir!, 'scratch.json'), 'utf8')) as { port: number };
    const scratchClient = () => new pg.Client({ host: path.join(workdir!, 'run'), port: scratch.port, user: 'cloud_admin', database: DATABASE });
    await waitFor('pg_restore to have created tables', async () => {
      if (!existsSync(path.join(workdir!, 'pg_restore.pid'))) return false;
      const c = scratchClient();
      try {
        await c.connect();
        const { rows } = await c.query<{ n: string }>("SELECT count(*) AS n FROM pg_tables WHERE schemaname = 'public'");
        return Number(rows[0]!.n) > 0;
      } catch {
        return false;
      } finally {
        await c.end().catch(() => undefined);
      }
    });
    const pid = (JSON.parse(readFileSync(path.join(workdir!, 'pg_restore.pid'), 'utf8')) as { pid: number }).pid;
    env.cancel();
    await expect(interrupted).rejects.toThrow();
    await waitFor('the cancelled pg_restore to exit', () => !existsSync(`/proc/${pid}`) || readFileSync(`/proc/${pid}/stat`, 'utf8').split(' ')[2] === 'Z', 30_000);

    // Something the half-restored database holds that the source does not.
    const c = scratchClient();
    await c.connect();
    await c.query('CREATE TABLE IF NOT EXISTS leftover_from_interrupted_restore (x int)');
    await c.end();

    const resumed = await runIn(new MockActivityEnvironment({ attempt: 2 }), a.restoreDump, { workdir: workdir!, database: DATABASE, jobs: 2 });
    expect(resumed.skipped).toBe(false);
    const check = scratchClient();
    await check.connect();
    try {
      const { rows } = await check.query("SELECT 1 FROM pg_tables WHERE tablename = 'leftover_from_interrupted_restore'");
      expect(rows).toHaveLength(0);
      expect(await importFingerprint(check)).toEqual(source.fingerprint);
    } finally {
      await check.end();
    }
    expect((await runIn(new MockActivityEnvironment(), a.restoreDump, { workdir: workdir!, database: DATABASE })).skipped).toBe(true);
    await runIn(new MockActivityEnvironment(), a.stopScratchPostgres, { workdir: workdir! });
  });

  // The S3-specific parts (multipart resume, listing, ranged and conditional reads, aborting
  // unfinished uploads) against both S3 implementations: resume logic tuned to one server's quirks fails here.
  // moto is slower than s3rver (a Python server): these upload the whole data directory several times.
  describe.each(s3Backends)('against $name', { timeout: 360_000 }, (backend) => {
    useS3Backend(backend);

    const slowOnMoto = backend.name === 'moto' && !FULL_S3_COMPAT;

    it.skipIf(slowOnMoto)('resumes an upload aborted half way, sending only the missing files and the missing parts of a half-sent one', async () => {
      const { workdir } = state;
      const prefix = uniqueId('imports/resume');
      const a = activities();

      // Cancel past half the files, while a multipart upload has some parts done (a WAL segment:
      // they come late in the sorted order and go up in 4 parts of 5 MiB).
      const first = new MockActivityEnvironment();
      let last: UploadProgress | undefined;
      first.on('heartbeat', (d: UploadProgress) => {
        last = d;
        if (d.filesDone >= d.filesTotal / 2 && d.inFlight.some((m) => m.parts.length >= 2)) first.cancel();
      });
      const start1 = sent.length;
      await expect(runIn(first, a.uploadPgdata, { workdir: workdir!, prefix })).rejects.toThrow();
      const putsBeforeAbort = countUploads(start1);
      expect(last!.filesDone).toBeGreaterThanOrEqual(last!.filesTotal / 2);
      expect(last!.filesDone).toBeLessThan(last!.filesTotal);
      const halfSent = last!.inFlight.find((m) => m.parts.length >= 2)!;
      const halfSentParts = Math.ceil(halfSent.size / halfSent.partSize);
      expect(halfSent.parts.length).toBeLessThan(halfSentParts);

      const second = new MockActivityEnvironment({ attempt: 2, heartbeatDetails: last });
      const start2 = sent.length;
      const resumed = await runIn(second, a.uploadPgdata, { workdir: workdir!, prefix });
      const resumedRequests = sent.slice(start2);
      const { inFlight: _inFlight, ...lastSummary } = last!;
      expect(resumed.resumedFrom).toEqual(lastSummary);
      expect(resumed.filesDone).toBe(resumed.filesTotal);
      expect(resumed.skippedFiles).toBeGreaterThanOrEqual(last!.filesDone);
      expect(resumed.uploadedFiles + resumed.skippedFiles).toBe(resumed.filesTotal);
      // The half-sent file continued its multipart upload: no new upload, only its missing parts.
      expect(resumed.resumedParts).toBeGreaterThanOrEqual(halfSent.parts.length);
      expect(resumedRequests.filter((c) => c.key === halfSent.key && c.command === 'CreateMultipartUploadCommand')).toHaveLength(0);
      expect(resumedRequests.filter((c) => c.key === halfSent.key && c.command === 'UploadPartCommand')).toHaveLength(halfSentParts - halfSent.parts.length);
      // Every other PUT of the resumed run is a file that was missing; together, at most the files
      // in flight at the abort were started twice.
      const continued = last!.inFlight.filter((m) => resumedRequests.some((c) => c.key === m.key && c.command === 'CompleteMultipartUploadCommand')).length;
      expect(countUploads(start2)).toBe(resumed.uploadedFiles - continued);
      expect(putsBeforeAbort + countUploads(start2)).toBeLessThanOrEqual(resumed.filesTotal + 4);

      // One object deleted and one replaced by different content of the same size: exactly those two go again.
      const keys: { key: string; size: number }[] = [];
      for await (const o of listObjects(s3, bucket, `${prefix}/pgdata/`)) keys.push(o);
      const victims = keys.filter((o) => /\/base\/\d+\/\d+$/.test(o.key) && o.size === 8192).slice(0, 2);
      expect(victims).toHaveLength(2);
      await s3.send(new DeleteObjectCommand({ Bucket: bucket, Key: victims[0]!.key }));
      await s3.send(new PutObjectCommand({ Bucket: bucket, Key: victims[1]!.key, Body: Buffer.alloc(8192, 1) }));
      const start3 = sent.length;
      const repaired = await runIn(new MockActivityEnvironment(), a.uploadPgdata, { workdir: workdir!, prefix });
      expect(repaired.uploadedFiles).toBe(2);
      expect(countUploads(start3)).toBe(2);

      const start4 = sent.length;
      const noop = await runIn(new MockActivityEnvironment(), a.uploadPgdata, { workdir: workdir!, prefix });
      expect(noop).toMatchObject({ uploadedFiles: 0, skippedFiles: noop.filesTotal });
      expect(countUploads(start4)).toBe(0);

      await s3.send(new PutObjectCommand({ Bucket: bucket, Key: `${prefix}/status/pgdata`, Body: '{"done":true}' }));
      const target = path.join(root, uniqueId('resumed'));
      await importPgdataFromS3({ s3, bucket, prefix, targetDir: target });
      expect(await fingerprintOfDataDir(target)).toEqual(source.fingerprint);
    });

    it.skipIf(slowOnMoto)('keeps a segment whose multipart upload S3 completed just before the attempt died, unrecorded', async () => {
      const { workdir } = state;
      const a = activities();
      const journalFile = path.join(workdir!, 'upload-journal.jsonl');
      const multipartKeys = (prefix: string) =>
        readFileSync(journalFile, 'utf8')
          .split('\n')
          .filter((l) => l.includes('"t":"mpu"') && l.includes(`"${prefix}/`))
          .map((l) => (JSON.parse(l) as { key: string }).key);
      // The attempt dies between S3's answer to CompleteMultipartUpload and the journal's record of
      // it: every part is journaled, the object is complete in S3, the file record is missing.
      const dieAfterCompleting = async (prefix: string) => {
        await runIn(new MockActivityEnvironment(), a.uploadPgdata, { workdir: workdir!, prefix });
        const keys = multipartKeys(prefix);
        expect(keys.length).toBeGreaterThan(0);
        const lines = readFileSync(journalFile, 'utf8').split('\n');
        writeFileSync(journalFile, lines.filter((l) => !(l.includes('"t":"file"') && keys.some((k) => l.includes(`"key":${JSON.stringify(k)}`)))).join('\n'));
        return keys;
      };
      /** `completedAgain`: how many of `keys` the resumed attempt completes itself (counted as uploaded, nothing sent again). */
      const resume = async (prefix: string, keys: string[], completedAgain = 0) => {
        const from = sent.length;
        const resumed = await runIn(new MockActivityEnvironment({ attempt: 2 }), a.uploadPgdata, { workdir: workdir!, prefix });
        const again = sent.slice(from).filter((c) => keys.includes(c.key ?? '') && ['PutObjectCommand', 'CreateMultipartUploadCommand', 'UploadPartCommand'].includes(c.command));
        expect(again).toEqual([]);
        expect(resumed).toMatchObject({ uploadedFiles: completedAgain, restartedFiles: 0, skippedFiles: resumed.filesTotal - completedAgain });
        return sent.slice(from);
      };

      // Seen in the listing the resume starts from: kept without a request about it.
      const listed = uniqueId('imports/completed');
      const listedKeys = await dieAfterCompleting(listed);
      const requests = await resume(listed, listedKeys);
      expect(requests.filter((c) => listedKeys.includes(c.key ?? ''))).toEqual([]);

      // Not yet listed when the resume started (S3 still completing it): the resumed attempt's own
      // completion of that upload fails, and the object it finds then is kept.
      const late = uniqueId('imports/completed-late');
      const lateKeys = await dieAfterCompleting(late);
      s3.middlewareStack.add(
        (next, context) => async (args) => {
          const out = await next(args);
          const listing = out.output as { Contents?: { Key?: string }[] };
          if (context.commandName === 'ListObjectsCommand') listing.Contents = listing.Contents?.filter((o) => !lateKeys.includes(o.Key ?? ''));
          return out;
        },
        { step: 'initialize', name: 'hideCompleted' },
      );
      let lateRequests: { command: string; key?: string }[];
      try {
        // s3rver refuses to complete an upload it completed already, and the object found then is
        // kept (skipped); moto, like S3 for a while after a completion, completes it again with the
        // same parts (the file counts as uploaded). Either way not one byte goes again.
        lateRequests = await resume(late, lateKeys, backend.name === 's3rver' ? 0 : lateKeys.length);
      } finally {
        s3.middlewareStack.remove('hideCompleted');
      }
      expect(lateRequests.filter((c) => lateKeys.includes(c.key ?? '') && c.command === 'CompleteMultipartUploadCommand')).toHaveLength(lateKeys.length);
    });

    it('cleans a prefix so a new attempt starts empty', async () => {
      const prefix = uniqueId('imports/clean');
      await s3.send(new PutObjectCommand({ Bucket: bucket, Key: `${prefix}/spec.json`, Body: '{}' }));
      await s3.send(new PutObjectCommand({ Bucket: bucket, Key: `${prefix}/pgdata/PG_VERSION`, Body: '15\n' }));
      await s3.send(new PutObjectCommand({ Bucket: bucket, Key: `${prefix}/status/pgdata`, Body: '{"done":true}' }));
      await s3.send(new PutObjectCommand({ Bucket: bucket, Key: `${prefix}-sibling/keep`, Body: 'x' }));
      const a = activities();
      const unfinished = await s3.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: `${prefix}/pgdata/base/1/1259` }));
      await s3.send(new UploadPartCommand({ Bucket: bucket, Key: `${prefix}/pgdata/base/1/1259`, UploadId: unfinished.UploadId, PartNumber: 1, Body: Buffer.alloc(1024, 3) }));
      const env = new MockActivityEnvironment();
      expect(await runIn(env, a.cleanImportPrefix, { prefix, keepSpec: true })).toEqual({ deleted: 2 });
      // Unfinished multipart uploads go too, where the server can list them (s3rver cannot: its parts are invisible).
      const uploads = await s3.send(new ListMultipartUploadsCommand({ Bucket: bucket, Prefix: `${prefix}/` })).then(
        (out) => out.Uploads ?? [],
        (err: Error) => err.name,
      );
      expect(uploads).toEqual(backend.name === 's3rver' ? 'NotImplemented' : []);
      expect(await getObjectBytes(s3, bucket, `${prefix}/spec.json`)).toBeDefined();
      expect(await runIn(env, a.cleanImportPrefix, { prefix })).toEqual({ deleted: 1 });
      expect(await getObjectBytes(s3, bucket, `${prefix}-sibling/keep`)).toBeDefined();
      await expect(runIn(env, a.cleanImportPrefix, { prefix: '../escape' })).rejects.toThrow(/not a safe relative S3 prefix/);
    });
  });

  it('sends a half-sent file again whole, once and saying why, when S3 no longer has its earlier multipart upload', async () => {
    const { workdir } = state;
    const a = activities();
    const walDir = path.join(workdir!, 'pgdata', 'pg_wal');
    const segment = readdirSync(walDir).filter((n) => /^[0-9A-F]{24}$/.test(n)).sort()[0]!;
    const local = readFileSync(path.join(walDir, segment));
    const { mtimeMs } = statSync(path.join(walDir, segment));
    // What the killed attempt's heartbeat said: one part of the segment sent, to an upload S3 has
    // since dropped (expired by a lifecycle rule, or aborted).
    const killedAttempt = (prefix: string, uploadId: string): UploadProgress => ({
      ...initialProgress(0, 0),
      inFlight: [{ key: `${prefix}/pgdata/pg_wal/${segment}`, uploadId, size: local.length, mtimeMs, partSize: 5 * MiB, parts: [[1, `"${'0'.repeat(32)}"`]] }],
    });
    const warnings: { message: string; meta?: Record<string, unknown> }[] = [];
    const ignore = () => {};
    const logger: Logger = { log: ignore, trace: ignore, debug: ignore, info: ignore, error: ignore, warn: (message, meta) => warnings.push({ message, meta }) };

    const resumeAfterKill = async (prefix: string, uploadId: string) => {
      warnings.length = 0;
      const from = sent.length;
      const env = new MockActivityEnvironment({ attempt: 2, heartbeatDetails: killedAttempt(prefix, uploadId) }, { logger });
      const result = await runIn(env, a.uploadPgdata, { workdir: workdir!, prefix });
      const key = `${prefix}/pgdata/pg_wal/${segment}`;
      expect(result).toMatchObject({ restartedFiles: 1, resumedParts: 0, filesDone: result.filesTotal });
      expect(warnings).toEqual([
        { message: expect.stringMatching(/multipart upload of .* could not be continued; sending the whole file again/), meta: expect.objectContaining({ key, uploadId, partsKept: 1 }) },
      ]);
      // One fresh multipart upload, and the object is the local file.
      expect(sent.slice(from).filter((c) => c.key === key && c.command === 'CreateMultipartUploadCommand')).toHaveLength(1);
      expect((await getObjectBytes(s3, bucket, key, 64 * MiB))!.equals(local)).toBe(true);
    };

    // s3rver takes parts for any upload ID and fails the completion, when it finds no such upload.
    await resumeAfterKill(uniqueId('imports/expired'), 'f'.repeat(32));

    // Real S3 refuses the first part already: 404 NoSuchUpload.
    const goneId = 'e'.repeat(32);
    s3.middlewareStack.add(
      (next, context) => async (args) => {
        if (context.commandName === 'UploadPartCommand' && (args.input as { UploadId?: string }).UploadId === goneId) {
          throw new NoSuchUpload({ message: 'The specified upload does not exist.', $metadata: { httpStatusCode: 404 } });
        }
        return next(args);
      },
      { step: 'initialize', name: 'noSuchUpload' },
    );
    try {
      await resumeAfterKill(uniqueId('imports/aborted'), goneId);
    } finally {
      s3.middlewareStack.remove('noSuchUpload');
    }
  });

  it('heartbeats at most once a second by default, the last one with the final progress', async () => {
    const { workdir } = state;
    const a = activities({ upload: { concurrency: 4 } });
    const env = new MockActivityEnvironment();
    const beats: UploadProgress[] = [];
    env.on('heartbeat', (d: UploadProgress) => beats.push(d));
    const started = Date.now();
    const result = await runIn(env, a.uploadPgdata, { workdir: workdir!, prefix: uniqueId('imports/heartbeats') });
    const elapsedMs = Date.now() - started;
    expect(result.uploadedFiles).toBeGreaterThan(500);
    // One per second at most, plus the liveness one every 5 s and the closing one; not one per file.
    expect(beats.length).toBeGreaterThanOrEqual(1);
    expect(beats.length).toBeLessThanOrEqual(Math.ceil(elapsedMs / 1000) + Math.floor(elapsedMs / 5000) + 1);
    expect(beats.at(-1)).toMatchObject({ phase: 'upload', filesDone: result.filesTotal, bytesDone: result.bytesTotal });
  });

  it('streams larger files in single PUTs; without its journal, a resume checks the objects by content and sends nothing again', async () => {
    const { workdir } = state;
    const prefix = uniqueId('imports/streamed');
    // The default: every file up to a relation segment in one request (from memory below 8 MiB, streamed above).
    const a = activities({ upload: { concurrency: 4, heartbeatIntervalMs: 0 } });
    const start1 = sent.length;
    const first = await runIn(new MockActivityEnvironment(), a.uploadPgdata, { workdir: workdir!, prefix });
    expect(first.uploadedFiles).toBe(first.filesTotal);
    expect(sent.slice(start1).filter((c) => c.command === 'CreateMultipartUploadCommand')).toHaveLength(0);
    const large: { key: string; size: number }[] = [];
    for await (const o of listObjects(s3, bucket, `${prefix}/pgdata/`)) if (o.size >= 8 * MiB) large.push(o);
    expect(large.length).toBeGreaterThan(0);
    // Streamed or not, S3 can check every body: it is signed with the file's sha256, which is also the object's metadata.
    for (const o of large) {
      const local = createHash('sha256').update(readFileSync(path.join(workdir!, 'pgdata', o.key.slice(`${prefix}/pgdata/`.length)))).digest('hex');
      expect(payloadHashes.get(o.key)).toBe(local);
      expect((await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: o.key }))).Metadata?.sha256).toBe(local);
    }

    // With the journal, a resume asks S3 nothing per object.
    const start2 = sent.length;
    const again = await runIn(new MockActivityEnvironment(), a.uploadPgdata, { workdir: workdir!, prefix });
    expect(again).toMatchObject({ uploadedFiles: 0, skippedFiles: again.filesTotal, verifiedByContent: 0 });
    expect(sent.slice(start2).filter((c) => c.command !== 'ListObjectsCommand')).toEqual([]);

    // The journal lost: each object of the right size is compared with the local file by its
    // sha256 metadata, and none is sent again.
    rmSync(path.join(workdir!, 'upload-journal.jsonl'));
    const start3 = sent.length;
    const checked = await runIn(new MockActivityEnvironment(), a.uploadPgdata, { workdir: workdir!, prefix });
    expect(checked).toMatchObject({ uploadedFiles: 0, skippedFiles: checked.filesTotal, verifiedByContent: checked.filesTotal });
    expect(countUploads(start3)).toBe(0);
    expect(sent.slice(start3).filter((c) => c.command === 'HeadObjectCommand')).toHaveLength(checked.filesTotal);

    // A large object that differs (same size, other bytes) is found out and sent again.
    const victim = large[0]!;
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: victim.key, Body: Buffer.alloc(victim.size, 7) }));
    const start4 = sent.length;
    const repaired = await runIn(new MockActivityEnvironment(), a.uploadPgdata, { workdir: workdir!, prefix });
    expect(repaired.uploadedFiles).toBe(1);
    expect(sent.slice(start4).filter((c) => c.command === 'PutObjectCommand').map((c) => c.key)).toEqual([victim.key]);

    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: `${prefix}/status/pgdata`, Body: '{"done":true}' }));
    const target = path.join(root, uniqueId('streamed'));
    await importPgdataFromS3({ s3, bucket, prefix, targetDir: target });
    expect(await fingerprintOfDataDir(target)).toEqual(source.fingerprint);
  });
});

describe('permanent importer failures', () => {
  async function failureOf(p: Promise<unknown>): Promise<ApplicationFailure> {
    const err = await p.then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ApplicationFailure);
    return err as ApplicationFailure;
  }

  it('a wrong source password: non-retryable, connection string masked, and status/fast_import says why', async () => {
    const wrong = 'definitely-not-it-42';
    const { prefix, workdir } = await newImport({ password: wrong });
    const a = activities();
    const env = new MockActivityEnvironment();
    const failure = await failureOf(runIn(env, a.dumpSource, { workdir, prefix }));
    expect(failure.type).toBe('SourceAuthenticationFailed');
    expect(failure.nonRetryable).toBe(true);
    expect(failure.message).toMatch(/password authentication failed for user "importer"/);
    expect(failure.message).toContain(`postgresql://importer:********@127.0.0.1:${source.server.port}/${DATABASE}`);
    expect(failure.message).not.toContain(wrong);
    expect(readFileSync(path.join(workdir, 'pg_dump.log'), 'utf8')).not.toContain(wrong);
    expect(existsSync(path.join(workdir, 'dumpdir.done.json'))).toBe(false);

    await runIn(env, a.writeFastImportStatus, { prefix, error: `${failure.message} (${source.url(wrong)})` });
    const status = JSON.parse((await getObjectBytes(s3, bucket, `${prefix}/status/fast_import`))!.toString()) as { done: boolean; error: string; command: string };
    expect(status).toMatchObject({ command: 'pgdata', done: false });
    expect(status.error).toMatch(/password authentication failed/);
    expect(status.error).not.toContain(wrong);
  });

  it('a missing source database, a missing spec, an undecryptable spec and a missing pg_dump are permanent', async () => {
    const a = activities();
    const env = new MockActivityEnvironment();
    const noDb = await newImport({ database: 'no_such_db' });
    const missingDb = await failureOf(runIn(env, a.dumpSource, noDb));
    expect(missingDb.type).toBe('SourceDatabaseMissing');
    expect(missingDb.message).toMatch(/database "no_such_db" does not exist/);
    expect(missingDb.message).not.toContain(PASSWORD);
    expect(missingDb.message).not.toContain(encodeURIComponent(PASSWORD));

    const noSpec = await failureOf(runIn(env, a.dumpSource, { workdir: path.join(root, uniqueId('work')), prefix: uniqueId('imports/none') }));
    expect(noSpec).toMatchObject({ type: 'ImportSpecMissing', nonRetryable: true });

    const otherKey = activities({ keyProviders: { Local: createLocalKeyProvider({ 'test-key': parseLocalKey(generateLocalKey()) }) } });
    const { prefix, workdir } = await newImport();
    const undecryptable = await failureOf(runIn(env, otherKey.dumpSource, { workdir, prefix }));
    expect(undecryptable).toMatchObject({ type: 'DecryptionFailed', nonRetryable: true });

    const noBinaries = activities({ install: { ...install, binDir: path.join(root, 'no-such-bin') } });
    const missingBinary = await failureOf(runIn(env, noBinaries.dumpSource, { workdir, prefix }));
    expect(missingBinary).toMatchObject({ type: 'MissingBinary', nonRetryable: true });
  });
});
