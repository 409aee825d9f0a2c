import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stepContext } from '../common/activity-context';
import { uploadDataDirectory } from '../drivers/importer/upload';
import { createS3Client } from '../drivers/s3/client';
import { findPostgres, pgBin } from '../common/pg-binaries';
import { chownForPostgres, pgSpawnIdentity } from '../common/pg-identity';
import { freePort } from '../dev/processes';
import { resealPgControl } from '../dev/storage/pgdata-import';
import { neonId, uniqueId } from './helpers/ids';
import { killAllProcesses, startProcess } from '../dev/child-processes';
import { testConfig } from './helpers/stack';

/**
 * The dev pageserver's import_pgdata as a process (dev/storage/pageserver/main.ts with its S3
 * flags), reading the test stack's s3rver through a loopback proxy that can play a hostile S3
 * server. Checks Neon's contract: 201 accepted, 429 while running, the same key succeeds again
 * after completion, another key is 409; the import waits for status/pgdata; hostile uploads are
 * refused with a clear reason; the completion callback is sent; deletion stops a waiting import.
 */

const run = promisify(execFile);
const install = findPostgres({ pgBinDir: process.env.PG_BIN_DIR });

let root: string;
let s3: S3Client;
let bucket: string;
let controlBytes: Buffer;
let validPrefix: string;
let api: string;
let proxy: http.Server;
const callbacks: { tenant_id: string; timeline_id: string; error: string | null }[] = [];
let controlPlane: http.Server;

async function put(key: string, body: string | Buffer): Promise<void> {
  await s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body }));
}

async function call(method: string, p: string, body?: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(`${api}${p}`, { method, headers: body ? { 'content-type': 'application/json' } : {}, body: body ? JSON.stringify(body) : undefined });
  const text = await res.text();
  return { status: res.status, json: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
}

function importBody(timelineId: string, prefix: string, key = `key-${timelineId}`, targetBucket = bucket) {
  return { new_timeline_id: timelineId, import_pgdata: { idempotency_key: key, location: { AwsS3: { region: 'us-east-1', bucket: targetBucket, key: prefix } } } };
}

async function waitForState(tenantId: string, timelineId: string, done: (state: unknown) => boolean, timeoutMs = 60_000): Promise<Record<string, unknown>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await call('GET', `/v1/tenant/${tenantId}/timeline/${timelineId}`);
    if (r.status === 200 && done(r.json.state)) return r.json;
    if (Date.now() > deadline) throw new Error(`timeline state still ${JSON.stringify(r.json.state ?? r.json)}`);
    await sleep(100);
  }
}

const isBroken = (s: unknown) => typeof s === 'object' && s !== null && 'Broken' in s;

/** A prefix with the commit marker, the given pg_control and extra objects under pgdata/. */
async function prefixWith(control: Buffer, extra: Record<string, Buffer> = {}, name = 'hostile'): Promise<string> {
  const prefix = uniqueId(`imports/${name}`);
  await put(`${prefix}/status/pgdata`, '{"done":true}');
  await put(`${prefix}/pgdata/global/pg_control`, control);
  for (const [rel, body] of Object.entries(extra)) await put(`${prefix}/pgdata/${rel}`, body);
  return prefix;
}

beforeAll(async () => {
  root = mkdtempSync(path.join(os.tmpdir(), 'dc-imp-ps-'));
  chownForPostgres(root, false);
  const config = testConfig();
  s3 = createS3Client(config.s3);
  bucket = config.s3.bucket;

  const pgdata = path.join(root, 'source-pgdata');
  await run(pgBin(install, 'initdb'), ['-D', pgdata, '-U', 'cloud_admin', '-E', 'UTF8', '--locale', 'C', '-A', 'trust', '--no-sync'], pgSpawnIdentity());
  controlBytes = readFileSync(path.join(pgdata, 'global', 'pg_control'));
  validPrefix = uniqueId('imports/valid');

  // The hostile S3 server: for prefixes named "dotdot", the listing also names a key with "..".
  const upstream = new URL(config.s3.endpoint!);
  proxy = http.createServer((req, res) => {
    const forward = http.request({ host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers }, (up) => {
      const chunks: Buffer[] = [];
      up.on('data', (c: Buffer) => chunks.push(c));
      up.on('end', () => {
        let body = Buffer.concat(chunks);
        const m = /[?&]prefix=([^&]*dotdot[^&]*)/.exec(req.url ?? '');
        if (req.method === 'GET' && m) {
          const prefix = decodeURIComponent(m[1]!);
          const evil = `<Contents><Key>${prefix}base/../../../../etc/cron.d/evil</Key><Size>8192</Size><StorageClass>STANDARD</StorageClass></Contents>`;
          body = Buffer.from(body.toString('utf8').replace('</ListBucketResult>', `${evil}</ListBucketResult>`));
        }
        res.writeHead(up.statusCode ?? 502, { ...up.headers, 'content-length': String(body.length) });
        res.end(body);
      });
    });
    forward.on('error', () => res.destroy());
    req.pipe(forward);
  });
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));

  controlPlane = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (req.method === 'PUT' && req.url === '/import_complete') callbacks.push(JSON.parse(Buffer.concat(chunks).toString('utf8')) as (typeof callbacks)[number]);
      res.writeHead(200).end('{}');
    });
  });
  await new Promise<void>((resolve) => controlPlane.listen(0, '127.0.0.1', resolve));

  const httpPort = await freePort();
  await startProcess(
    'dev/storage/pageserver/main.ts',
    [
      '--dir', path.join(root, 'pageserver'),
      '--pg-port', String(await freePort()),
      '--http-port', String(httpPort),
      '--s3-endpoint', `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`,
      '--s3-buckets', bucket,
      '--import-poll-ms', '200',
      '--import-complete-url', `http://127.0.0.1:${(controlPlane.address() as AddressInfo).port}`,
    ],
    { env: { AWS_ACCESS_KEY_ID: config.s3.credentials!.accessKeyId, AWS_SECRET_ACCESS_KEY: config.s3.credentials!.secretAccessKey }, readyLine: /pageserver ready/ },
  );
  api = `http://127.0.0.1:${httpPort}`;
}, 180_000);

afterAll(async () => {
  await killAllProcesses();
  await new Promise<void>((resolve) => (proxy ? proxy.close(() => resolve()) : resolve()));
  await new Promise<void>((resolve) => (controlPlane ? controlPlane.close(() => resolve()) : resolve()));
  s3?.destroy();
  if (root) rmSync(root, { recursive: true, force: true });
});

describe('dev pageserver import_pgdata', () => {
  it('201 accepted, waits for status/pgdata, 429 while running, 409 for another key, the same key succeeds again when done; the callback is sent', async () => {
    const tenantId = neonId();
    const timelineId = neonId();
    const prefix = uniqueId('imports/contract');
    // The data directory is there, but not its commit marker yet.
    await uploadDataDirectory({ s3, bucket, dataDir: path.join(root, 'source-pgdata'), keyPrefix: `${prefix}/pgdata`, ctx: stepContext() });
    const started = await call('POST', `/v1/tenant/${tenantId}/timeline`, importBody(timelineId, prefix));
    expect(started.status).toBe(201);
    expect(started.json).toMatchObject({ timeline_id: timelineId, state: 'Loading' });
    expect((await call('POST', `/v1/tenant/${tenantId}/timeline`, importBody(timelineId, prefix))).status).toBe(429);
    const other = await call('POST', `/v1/tenant/${tenantId}/timeline`, importBody(timelineId, prefix, 'another-key'));
    expect(other.status).toBe(409);
    expect(other.json.msg).toMatch(/another idempotency key/);
    expect((await call('POST', `/v1/tenant/${tenantId}/timeline`, { new_timeline_id: timelineId, pg_version: 15 })).status).toBe(409);
    // Polled several times without the marker: still waiting, not failed.
    await sleep(1000);
    expect((await call('GET', `/v1/tenant/${tenantId}/timeline/${timelineId}`)).json.state).toBe('Loading');
    expect(callbacks.filter((c) => c.timeline_id === timelineId)).toEqual([]);

    await put(`${prefix}/status/pgdata`, '{"done":true}');
    const active = await waitForState(tenantId, timelineId, (s) => s === 'Active' || isBroken(s));
    expect(active.state).toBe('Active');
    expect(active.last_record_lsn).toMatch(/^[0-9A-F]+\/[0-9A-F]+$/);
    expect(active.last_record_lsn).not.toBe('0/0');
    const again = await call('POST', `/v1/tenant/${tenantId}/timeline`, importBody(timelineId, prefix));
    expect(again.status).toBe(201);
    expect(again.json.last_record_lsn).toBe(active.last_record_lsn);
    expect((await call('POST', `/v1/tenant/${tenantId}/timeline`, importBody(timelineId, prefix, 'another-key'))).status).toBe(409);
    const deadline = Date.now() + 10_000;
    while (!callbacks.some((c) => c.timeline_id === timelineId) && Date.now() < deadline) await sleep(50);
    expect(callbacks.filter((c) => c.timeline_id === timelineId)).toEqual([{ tenant_id: tenantId, timeline_id: timelineId, error: null }]);
  });

  it('refuses a request for another bucket or an unsafe prefix at once (400)', async () => {
    const tenantId = neonId();
    const wrongBucket = await call('POST', `/v1/tenant/${tenantId}/timeline`, importBody(neonId(), validPrefix, 'k', 'someone-elses-bucket'));
    expect(wrongBucket.status).toBe(400);
    expect(wrongBucket.json.msg).toMatch(/bucket "someone-elses-bucket", which this pageserver does not read/);
    const escape = await call('POST', `/v1/tenant/${tenantId}/timeline`, importBody(neonId(), '../other-tenant'));
    expect(escape.status).toBe(400);
    expect(escape.json.msg).toMatch(/not a safe relative S3 prefix/);
  });

  it.each([
    ['a pg_control with a bad CRC', () => {
      const b = Buffer.from(controlBytes);
      b[40]! ^= 0xff;
      return prefixWith(b);
    }, /pg_control fails its CRC-32C check/],
    ['an unknown catalog version', () => {
      const b = Buffer.from(controlBytes);
      b.writeUInt32LE(209912311, 12);
      return prefixWith(resealPgControl(b));
    }, /unrecognized catalog version 209912311/],
    ['a ".." key in the listing', () => prefixWith(controlBytes, {}, 'dotdot'), /"\.\." path segment/],
    ['a relation file whose size is not a multiple of 8192', () => prefixWith(controlBytes, { 'base/5/16384': Buffer.alloc(8192 + 100) }), /size 8292 is not a multiple of 8192/],
  ])('refuses %s: the timeline is Broken with the reason, the callback carries it, and deleting it works', async (_name, make, reason) => {
    const tenantId = neonId();
    const timelineId = neonId();
    const prefix = await make();
    expect((await call('POST', `/v1/tenant/${tenantId}/timeline`, importBody(timelineId, prefix))).status).toBe(201);
    const broken = await waitForState(tenantId, timelineId, (s) => isBroken(s) || s === 'Active');
    expect(isBroken(broken.state)).toBe(true);
    expect((broken.state as { Broken: { reason: string } }).Broken.reason).toMatch(reason);
    const deadline = Date.now() + 10_000;
    while (!callbacks.some((c) => c.timeline_id === timelineId) && Date.now() < deadline) await sleep(50);
    expect(callbacks.find((c) => c.timeline_id === timelineId)?.error).toMatch(reason);
    // Nothing was built from it, and the broken import can be deleted like any timeline.
    expect((await call('DELETE', `/v1/tenant/${tenantId}/timeline/${timelineId}`)).status).toBe(202);
    expect((await call('GET', `/v1/tenant/${tenantId}/timeline/${timelineId}`)).status).toBe(404);
  });

  it('deleting a timeline stops its waiting import: a commit marker written afterwards builds nothing', async () => {
    const tenantId = neonId();
    const timelineId = neonId();
    const prefix = uniqueId('imports/deleted');
    expect((await call('POST', `/v1/tenant/${tenantId}/timeline`, importBody(timelineId, prefix))).status).toBe(201);
    expect((await call('DELETE', `/v1/tenant/${tenantId}/timeline/${timelineId}`)).status).toBe(202);
    expect((await call('GET', `/v1/tenant/${tenantId}/timeline/${timelineId}`)).status).toBe(404);
    await uploadDataDirectory({ s3, bucket, dataDir: path.join(root, 'source-pgdata'), keyPrefix: `${prefix}/pgdata`, ctx: stepContext() });
    await put(`${prefix}/status/pgdata`, '{"done":true}');
    await sleep(1500);
    expect((await call('GET', `/v1/tenant/${tenantId}/timeline/${timelineId}`)).status).toBe(404);
    // The same import may be started afresh.
    expect((await call('POST', `/v1/tenant/${tenantId}/timeline`, importBody(timelineId, prefix))).status).toBe(201);
    expect((await waitForState(tenantId, timelineId, (s) => s === 'Active' || isBroken(s))).state).toBe('Active');
  });
});
