/**
 * The offload/prewarm activities and the S3 store, on a real PostgreSQL 15 (stock backend) and
 * the test stack's s3rver, run inside the Temporal SDK's activity test environment (real
 * Context: heartbeats, heartbeat details from a previous attempt, cancellation).
 */
import { execFile } from 'node:child_process';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { HeadObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { ApplicationFailure, CancelledFailure } from '@temporalio/common';
import { MockActivityEnvironment } from '@temporalio/testing';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createOffloadPrewarm, type PrewarmHeartbeat } from '../drivers/cache/offload-prewarm';
import type { ConnectFn } from '../drivers/cache/pg-session';
import { crc32, decodeCacheState, encodeCacheState } from '../drivers/cache/state-codec';
import { createCacheStateStore, type CacheStateStore } from '../drivers/cache/store';
import { createS3Client } from '../drivers/s3/client';
import { findPostgres, pgBin } from '../common/pg-binaries';
import { pgSpawnIdentity } from '../common/pg-identity';
import { devS3Credentials } from '../dev/stack';
import type { BlockRange, CacheState, PrewarmCompleted } from '../model/cache-state';
import { neonId, uniqueId } from './helpers/ids';
import { MOTO_CREDENTIALS } from './helpers/moto';
import { motoEndpoint } from './helpers/moto-endpoint';
import { startThrowawayPostgres, type ThrowawayPostgres } from '../dev/throwaway-postgres';

const run = promisify(execFile);

let server: ThrowawayPostgres;
let connect: ConnectFn;
let s3: S3Client;
let bucket: string;
let store: CacheStateStore;
let prefix: string;
let connects = 0;

async function restart(): Promise<void> {
  const install = findPostgres({ pgBinDir: process.env.PG_BIN_DIR });
  await run(pgBin(install, 'pg_ctl'), ['-D', server.dataDir, '-l', path.join(path.dirname(server.dataDir), 'log'), '-w', '-t', '60', '-m', 'fast', 'restart'], pgSpawnIdentity());
}

async function cachedAccountBlocks(): Promise<number[]> {
  const { rows } = await server.query<{ b: string }>(
    `select relblocknumber::int8 as b from pg_buffercache where relfilenode = pg_relation_filenode('accounts') and relforknumber = 0
       and reldatabase = (select oid from pg_database where datname = current_database()) order by 1`,
  );
  return rows.map((r) => Number(r.b));
}

async function accountsState(ranges: [first: number, count: number][]): Promise<CacheState> {
  const { rows } = await server.query<{ db: string; rel: string }>(
    `select (select oid from pg_database where datname = current_database())::int8 as db, pg_relation_filenode('accounts')::int8 as rel`,
  );
  const database = Number(rows[0]!.db);
  const relfilenode = Number(rows[0]!.rel);
  return { kind: 'block-ranges', blockSize: 8192, ranges: ranges.map(([firstBlock, blockCount]): BlockRange => ({ database, tablespace: 1663, relfilenode, fork: 0, firstBlock, blockCount })) };
}

const ids = () => ({ tenantId: neonId(), timelineId: neonId(), endpointId: uniqueId('ep') });

beforeAll(async () => {
  const stack = inject('stack');
  s3 = createS3Client({ endpoint: stack.s3.endpoint, region: stack.s3.region, bucket: stack.s3.bucket, forcePathStyle: true, credentials: devS3Credentials() });
  bucket = stack.s3.bucket;
  prefix = uniqueId('lfc-test');
  store = createCacheStateStore({ s3, bucket, prefix: `${prefix}/` });
  server = await startThrowawayPostgres({ shared_buffers: "'16MB'", autovacuum: 'off' });
  connect = async (database) => {
    connects++;
    const c = new pg.Client({ host: '127.0.0.1', port: server.port, user: 'postgres', database });
    await c.connect();
    return c;
  };
  await server.query(`create table accounts (id int primary key, balance int not null, filler text not null)`);
  await server.query(`insert into accounts select g, 1000, repeat('x', 120) from generate_series(1, 100000) g`);
  await server.query('create extension pg_buffercache');
}, 300_000);

afterAll(async () => {
  s3?.destroy();
  await server?.stop();
});

/** The store against both S3 implementations: the stack's s3rver and moto (test/helpers/moto.ts). */
describe.each(['s3rver', 'moto'])('cache state store (%s)', (backend) => {
  let s3: S3Client;
  let bucket: string;
  let store: CacheStateStore;
  beforeAll(() => {
    const server = backend === 'moto' ? { ...motoEndpoint(), credentials: MOTO_CREDENTIALS } : { ...inject('stack').s3, credentials: devS3Credentials() };
    s3 = createS3Client({ ...server, forcePathStyle: true });
    bucket = server.bucket;
    store = createCacheStateStore({ s3, bucket, prefix: `${prefix}/` });
  });
  afterAll(() => s3?.destroy());

  it('puts and gets under <prefix>/<tenant>/<timeline>/<endpoint>/lfc_state; absent is null', async () => {
    const { tenantId, timelineId, endpointId } = ids();
    expect(await store.get(tenantId, timelineId, endpointId)).toBeNull();
    const blob = Buffer.from('state bytes');
    await store.put(tenantId, timelineId, endpointId, blob);
    expect(await store.get(tenantId, timelineId, endpointId)).toEqual(blob);
    const head = await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: `${prefix}/${tenantId}/${timelineId}/${endpointId}/lfc_state` }));
    expect(head.ContentLength).toBe(blob.length);
    // PUT overwrites.
    await store.put(tenantId, timelineId, endpointId, Buffer.from('newer'));
    expect((await store.get(tenantId, timelineId, endpointId))!.toString()).toBe('newer');
  });

  it('refuses IDs that could leave the prefix, before any request', async () => {
    const { tenantId, timelineId } = ids();
    for (const [t, tl, ep] of [
      [tenantId, timelineId, '../../x'],
      [tenantId, timelineId, 'a/b'],
      ['..', timelineId, 'ep-1'],
      [tenantId, `${timelineId}/..`, 'ep-1'],
    ] as const) {
      const err = await store.get(t, tl, ep).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ApplicationFailure);
      expect(err).toMatchObject({ type: 'InvalidArgument', nonRetryable: true });
      await expect(store.put(t, tl, ep, Buffer.from('x'))).rejects.toMatchObject({ type: 'InvalidArgument' });
    }
    expect(() => createCacheStateStore({ s3, bucket, prefix: 'a/../b' })).toThrow(/prefix/);
  });
});

describe('offloadCacheState and prewarmCache activities (stock backend)', () => {
  it('offloads, then prewarms a restarted (cold) server, with compute_ctl result shapes and heartbeats', async () => {
    const acts = createOffloadPrewarm({ connect, store, backend: 'stock' });
    const id = ids();
    await restart();
    await server.query(`select sum(balance) from accounts where id <= 30000`);
    const offload = await new MockActivityEnvironment().run(acts.offloadCacheState, id);
    expect(offload).toEqual({ status: 'completed', state_query_time_ms: expect.any(Number), compress_time_ms: expect.any(Number), state_upload_time_ms: expect.any(Number) });
    const stored = decodeCacheState((await store.get(id.tenantId, id.timelineId, id.endpointId))!);
    expect(stored.kind).toBe('block-ranges');

    await restart();
    const env = new MockActivityEnvironment();
    const heartbeats: unknown[] = [];
    env.on('heartbeat', (d: unknown) => heartbeats.push(d));
    const outcome = await env.run(acts.prewarmCache, id);
    const result = outcome as PrewarmCompleted;
    expect(result).toEqual({
      status: 'completed',
      total: expect.any(Number),
      prewarmed: expect.any(Number),
      skipped: expect.any(Number),
      state_download_time_ms: expect.any(Number),
      uncompress_time_ms: expect.any(Number),
      prewarm_time_ms: expect.any(Number),
    });
    expect(result.total).toBeGreaterThan(0);
    expect(result.prewarmed).toBeGreaterThan(0);
    expect(result.total).toBe(result.prewarmed + result.skipped);
    const last = heartbeats.filter(Boolean).at(-1) as PrewarmHeartbeat;
    expect(last.stateCrc).toBe(crc32([(await store.get(id.tenantId, id.timelineId, id.endpointId))!]));
    expect(last.progress).toMatchObject({ prewarmed: result.prewarmed, skipped: result.skipped });
    // The table's pages read before the offload are back in shared_buffers.
    expect((await cachedAccountBlocks()).length).toBeGreaterThan(400);
  });

  it('skips an offload of an empty capture and keeps the stored state; skips a prewarm with nothing stored', async () => {
    const acts = createOffloadPrewarm({ connect, store, backend: 'stock' });
    const id = ids();
    expect(await new MockActivityEnvironment().run(acts.offloadCacheState, { ...id, maxChunks: 0 })).toEqual({ status: 'skipped' });
    expect(await store.get(id.tenantId, id.timelineId, id.endpointId)).toBeNull();
    expect(await new MockActivityEnvironment().run(acts.prewarmCache, id)).toEqual({ status: 'skipped' });

    await new MockActivityEnvironment().run(acts.offloadCacheState, id);
    const good = await store.get(id.tenantId, id.timelineId, id.endpointId);
    expect(good).not.toBeNull();
    expect(await new MockActivityEnvironment().run(acts.offloadCacheState, { ...id, maxChunks: 0 })).toEqual({ status: 'skipped' });
    expect(await store.get(id.tenantId, id.timelineId, id.endpointId)).toEqual(good);
  });

  it('prewarms from another endpoint of the timeline (fromEndpointId)', async () => {
    const acts = createOffloadPrewarm({ connect, store, backend: 'stock' });
    const primary = ids();
    const replica = { ...primary, endpointId: uniqueId('ep-replica') };
    await store.put(primary.tenantId, primary.timelineId, primary.endpointId, encodeCacheState(await accountsState([[0, 40]])));
    await restart();
    const result = await new MockActivityEnvironment().run(acts.prewarmCache, { ...replica, fromEndpointId: primary.endpointId });
    expect(result).toMatchObject({ status: 'completed', total: 40, prewarmed: 40, skipped: 0 });
    expect(await new MockActivityEnvironment().run(acts.prewarmCache, replica)).toEqual({ status: 'skipped' });
  });

  it('fails a corrupt stored state as non-retryable CorruptCacheState before touching Postgres', async () => {
    const acts = createOffloadPrewarm({ connect, store, backend: 'stock' });
    const id = ids();
    const blob = encodeCacheState(await accountsState([[0, 10]]));
    blob[blob.length - 5]! ^= 0xff;
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: store.key(id.tenantId, id.timelineId, id.endpointId), Body: blob }));
    const before = connects;
    const err = await new MockActivityEnvironment().run(acts.prewarmCache, id).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApplicationFailure);
    expect(err).toMatchObject({ type: 'CorruptCacheState', nonRetryable: true });
    expect(connects).toBe(before);
  });

  it('resumes from the heartbeat details of a previous attempt, only for the same state', async () => {
    const acts = createOffloadPrewarm({ connect, store, backend: 'stock' });
    const id = ids();
    const blob = encodeCacheState(await accountsState([[0, 20], [100, 20], [200, 20], [300, 20]]));
    await store.put(id.tenantId, id.timelineId, id.endpointId, blob);
    const details: PrewarmHeartbeat = { stateCrc: crc32([blob]), progress: { rangeIndex: 2, blockOffset: 5, prewarmed: 45, skipped: 0 } };

    await restart();
    const resumed = await new MockActivityEnvironment({ heartbeatDetails: details, attempt: 2 }).run(acts.prewarmCache, id);
    expect(resumed).toMatchObject({ status: 'completed', total: 80, prewarmed: 80, skipped: 0 });
    const expectedBlocks = [...Array.from({ length: 15 }, (_, i) => 205 + i), ...Array.from({ length: 20 }, (_, i) => 300 + i)];
    expect(await cachedAccountBlocks()).toEqual(expectedBlocks);

    // Details made on a different state are ignored: everything is loaded.
    await restart();
    const other = await new MockActivityEnvironment({ heartbeatDetails: { ...details, stateCrc: details.stateCrc ^ 1 }, attempt: 2 }).run(acts.prewarmCache, id);
    expect(other).toMatchObject({ status: 'completed', total: 80, prewarmed: 80, skipped: 0 });
    expect((await cachedAccountBlocks()).length).toBe(80);
  });

  it('honours activity cancellation mid-prewarm (the SQL is cancelled); a later prewarm completes', async () => {
    const acts = createOffloadPrewarm({ connect, store, backend: 'stock', heartbeatIntervalMs: 100 });
    const id = ids();
    await store.put(id.tenantId, id.timelineId, id.endpointId, encodeCacheState(await accountsState([[0, 100]])));
    await restart();
    const locker = await connect('postgres');
    try {
      await locker.query('begin; lock table accounts in access exclusive mode');
      const env = new MockActivityEnvironment();
      const outcome = env.run(acts.prewarmCache, id).then(
        () => 'completed',
        (e: unknown) => e,
      );
      const deadline = Date.now() + 30_000;
      const waiting = async () => Number((await server.query<{ n: string }>(`select count(*) as n from pg_locks where relation = 'accounts'::regclass and not granted`)).rows[0]!.n);
      while ((await waiting()) === 0) {
        if (Date.now() > deadline) throw new Error('prewarm never waited for the lock');
        await sleep(50);
      }
      env.cancel();
      const result = await Promise.race([outcome, sleep(20_000).then(() => 'still running 20 s after cancel')]);
      expect(result).toBeInstanceOf(CancelledFailure);
      expect(await waiting()).toBe(0);
      await locker.query('rollback');
    } finally {
      await locker.end();
    }
    expect(await new MockActivityEnvironment().run(acts.prewarmCache, id)).toMatchObject({ status: 'completed', total: 100, prewarmed: 100 });
  });
});
