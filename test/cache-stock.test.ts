/**
 * The stock PostgreSQL 15 cache backend against a real server: shared_buffers = 16 MB and a
 * ~40 MB table, restarted to get a cold cache.
 */
import { execFile } from 'node:child_process';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findPostgres, pgBin } from '../common/pg-binaries';
import { pgSpawnIdentity } from '../common/pg-identity';
import { cacheStatePages, validResumePoint, type BlockRange, type CacheState, type PrewarmProgress } from '../model/cache-state';
import { createStockCacheBackend } from '../drivers/cache/stock-backend';
import { decodeCacheState, encodeCacheState } from '../drivers/cache/state-codec';
import type { ConnectFn } from '../drivers/cache/pg-session';
import { startThrowawayPostgres, type ThrowawayPostgres } from '../dev/throwaway-postgres';

const run = promisify(execFile);
const HOT_QUERY = 'select sum(balance) from accounts where id between 1 and 20000';

let server: ThrowawayPostgres;
let connect: ConnectFn;

async function restart(): Promise<void> {
  const install = findPostgres({ pgBinDir: process.env.PG_BIN_DIR });
  const log = path.join(path.dirname(server.dataDir), 'log');
  await run(pgBin(install, 'pg_ctl'), ['-D', server.dataDir, '-l', log, '-w', '-t', '60', '-m', 'fast', 'restart'], pgSpawnIdentity());
}

async function withClient<T>(fn: (c: pg.Client) => Promise<T>, database = 'postgres'): Promise<T> {
  const c = await connect(database);
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

/** Shared-buffer hit ratio of the hot query, from EXPLAIN (ANALYZE, BUFFERS). */
async function hotHitRatio(): Promise<{ hit: number; read: number; ratio: number }> {
  return withClient(async (c) => {
    await c.query('set enable_seqscan = off');
    const { rows } = await c.query<{ 'QUERY PLAN': [{ Plan: Record<string, number> }] }>(`explain (analyze, buffers, format json) ${HOT_QUERY}`);
    const plan = rows[0]!['QUERY PLAN'][0].Plan;
    const hit = plan['Shared Hit Blocks']!;
    const read = plan['Shared Read Blocks']!;
    return { hit, read, ratio: hit / (hit + read) };
  });
}

/** Heap blocks of `accounts` currently in shared_buffers. */
async function cachedBlocks(relname: string, fork = 0): Promise<Set<number>> {
  return withClient(async (c) => {
    const { rows } = await c.query<{ b: string }>(
      `select b.relblocknumber::int8 as b from pg_buffercache b
       where b.relfilenode = pg_relation_filenode($1::regclass) and b.relforknumber = $2
         and b.reldatabase = (select oid from pg_database where datname = current_database())`,
      [relname, fork],
    );
    return new Set(rows.map((r) => Number(r.b)));
  });
}

/** Every valid buffer tag, to prove nothing was evicted. */
async function allBufferTags(): Promise<Set<string>> {
  return withClient(async (c) => {
    const { rows } = await c.query<{ t: string }>(
      `select concat_ws('/', reldatabase, reltablespace, relfilenode, relforknumber, relblocknumber) as t from pg_buffercache where relfilenode is not null`,
    );
    return new Set(rows.map((r) => r.t));
  });
}

async function freeBuffers(): Promise<number> {
  return withClient(async (c) => Number((await c.query<{ n: string }>('select count(*) as n from pg_buffercache where relfilenode is null')).rows[0]!.n));
}

async function relationIds(relname: string): Promise<{ database: number; relfilenode: number; blocks: number }> {
  return withClient(async (c) => {
    const { rows } = await c.query<{ db: number; rel: number; blocks: string }>(
      `select (select oid from pg_database where datname = current_database())::int8 as db, pg_relation_filenode($1::regclass)::int8 as rel,
              pg_relation_size($1::regclass) / current_setting('block_size')::int8 as blocks`,
      [relname],
    );
    return { database: Number(rows[0]!.db), relfilenode: Number(rows[0]!.rel), blocks: Number(rows[0]!.blocks) };
  });
}

function blocksOf(state: CacheState, relfilenode: number): number {
  if (state.kind !== 'block-ranges') throw new Error('expected block ranges');
  return state.ranges.filter((r) => r.relfilenode === relfilenode).reduce((n, r) => n + r.blockCount, 0);
}

const noProgress = () => undefined;
const never = () => new AbortController().signal;

beforeAll(async () => {
  server = await startThrowawayPostgres({ shared_buffers: "'16MB'", autovacuum: 'off', track_functions: "'all'" });
  connect = async (database) => {
    const c = new pg.Client({ host: '127.0.0.1', port: server.port, user: 'postgres', database });
    await c.connect();
    return c;
  };
  await withClient(async (c) => {
    await c.query(`create table accounts (id int primary key, balance int not null, filler text not null)`);
    await c.query(`insert into accounts select g, 1000, repeat('x', 120) from generate_series(1, 250000) g`);
    await c.query(`create table ballast as select g as id, repeat('y', 200) as filler from generate_series(1, 50000) g`);
    await c.query('vacuum analyze');
    await c.query('checkpoint');
    await c.query('create extension pg_buffercache');
  });
}, 300_000);

afterAll(async () => {
  await server?.stop();
});

describe('stock backend (pg_buffercache + pg_prewarm)', () => {
  it('uses a table larger than shared_buffers', async () => {
    const { blocks } = await relationIds('accounts');
    expect(blocks * 8192).toBeGreaterThan(2 * 16 * 1024 * 1024);
  });

  it('captures the hot subset first, and a cold restart then prewarm brings its hit ratio from ~0 to ~1', async () => {
    const backend = createStockCacheBackend({ connect });
    await restart();
    await withClient(async (c) => {
      await c.query('set enable_seqscan = off');
      for (let i = 0; i < 5; i++) await c.query(HOT_QUERY);
      // A colder pass over other rows, one read each, competing for the buffers.
      await c.query('set enable_bitmapscan = off');
      await c.query('select sum(balance) from accounts where id between 100000 and 200000');
      for (let i = 0; i < 3; i++) await c.query(HOT_QUERY);
    });
    const hot = await withClient(async (c) => {
      const { rows } = await c.query<{ b: number }>(`select distinct (ctid::text::point)[0]::int as b from accounts where id between 1 and 20000`);
      return rows.map((r) => r.b);
    });
    // Capped well below shared_buffers: the hot pages must be what is kept.
    const captured = await backend.capture({ maxChunks: 800 });
    expect(captured).not.toBeNull();
    const state = decodeCacheState(encodeCacheState(captured!));
    expect(state).toEqual(captured);
    expect(cacheStatePages(state)).toBe(800);
    const { relfilenode } = await relationIds('accounts');
    const inState = new Set<number>();
    for (const r of (state as { ranges: BlockRange[] }).ranges) {
      if (r.relfilenode === relfilenode && r.fork === 0) for (let b = r.firstBlock; b < r.firstBlock + r.blockCount; b++) inState.add(b);
    }
    const hotCovered = hot.filter((b) => inState.has(b)).length;
    expect(hotCovered / hot.length).toBeGreaterThan(0.95);

    await restart();
    const cold = await hotHitRatio();
    expect(cold.ratio).toBeLessThan(0.1);

    await restart();
    const progress: PrewarmProgress[] = [];
    const counts = await backend.prewarm(state, { onProgress: (p) => progress.push(p), signal: never() });
    expect(counts.total).toBe(800);
    expect(counts.prewarmed).toBeGreaterThan(0);
    expect(counts.prewarmed + counts.skipped).toBe(counts.total);
    expect(progress.at(-1)).toMatchObject({ prewarmed: counts.prewarmed, skipped: counts.skipped });
    const warm = await hotHitRatio();
    expect(warm.ratio).toBeGreaterThan(0.97);

    // Everything is cached now: a second prewarm loads nothing and counts it all as skipped.
    const again = await backend.prewarm(state, { onProgress: noProgress, signal: never() });
    expect(again).toEqual({ total: 800, prewarmed: 0, skipped: 800 });
  });

  it('counts blocks of dropped or rewritten relations as skipped, without an error', async () => {
    const backend = createStockCacheBackend({ connect });
    await withClient(async (c) => {
      await c.query(`create table victim as select g as id, repeat('v', 100) as filler from generate_series(1, 5000) g`);
      await c.query(`create table rewritten as select g as id, repeat('r', 100) as filler from generate_series(1, 5000) g`);
    });
    await restart();
    await withClient(async (c) => {
      await c.query(`create extension if not exists pg_prewarm; select pg_prewarm('victim'), pg_prewarm('rewritten')`);
      await c.query('set enable_seqscan = off');
      await c.query(HOT_QUERY);
    });
    const victim = await relationIds('victim');
    const rewritten = await relationIds('rewritten');
    const state = (await backend.capture({}))!;
    const goneBlocks = blocksOf(state, victim.relfilenode) + blocksOf(state, rewritten.relfilenode);
    expect(blocksOf(state, victim.relfilenode)).toBe(victim.blocks);
    expect(blocksOf(state, rewritten.relfilenode)).toBe(rewritten.blocks);

    await restart();
    await withClient(async (c) => {
      await c.query('drop table victim');
      await c.query('vacuum full rewritten');
    });
    const counts = await backend.prewarm(state, { onProgress: noProgress, signal: never() });
    expect(counts.total).toBe(cacheStatePages(state));
    expect(counts.prewarmed + counts.skipped).toBe(counts.total);
    expect(counts.skipped).toBeGreaterThanOrEqual(goneBlocks);
    expect(counts.prewarmed).toBeGreaterThan(0);
    // The rewritten table's new file was not loaded under its old name.
    expect((await cachedBlocks('rewritten')).size).toBe(0);
    await withClient((c) => c.query('drop table rewritten'));
  });

  it('never evicts: with the buffers mostly full it loads only into unused ones', async () => {
    const backend = createStockCacheBackend({ connect });
    await restart();
    await withClient((c) => c.query(`create extension if not exists pg_prewarm; select pg_prewarm('accounts')`));
    const state = (await backend.capture({}))!;
    expect(cacheStatePages(state)).toBeGreaterThan(1500);

    await restart();
    await withClient((c) => c.query(`select pg_prewarm('ballast')`));
    const before = await allBufferTags();
    const free = await freeBuffers();
    expect(free).toBeGreaterThan(50);
    expect(free).toBeLessThan(cacheStatePages(state));

    const counts = await backend.prewarm(state, { onProgress: noProgress, signal: never() });
    expect(counts.prewarmed).toBeGreaterThan(0);
    expect(counts.prewarmed).toBeLessThanOrEqual(free);
    expect(counts.skipped).toBeGreaterThanOrEqual(cacheStatePages(state) - free);
    expect(counts.prewarmed + counts.skipped).toBe(counts.total);
    const after = await allBufferTags();
    const evicted = [...before].filter((t) => !after.has(t));
    expect(evicted).toEqual([]);
  });

  it('resumes from a progress point without requesting the blocks before it', async () => {
    const { database, relfilenode } = await relationIds('accounts');
    const ranges: BlockRange[] = Array.from({ length: 10 }, (_, i) => ({ database, tablespace: 1663, relfilenode, fork: 0, firstBlock: i * 100, blockCount: 50 }));
    const state: CacheState = { kind: 'block-ranges', blockSize: 8192, ranges };
    await restart();
    await withClient((c) => c.query('select pg_stat_reset()'));
    const resumeFrom = { rangeIndex: 4, blockOffset: 10, prewarmed: 4 * 50 + 10, skipped: 0 };
    expect(validResumePoint(state, resumeFrom)).toEqual(resumeFrom);
    const progress: PrewarmProgress[] = [];
    const counts = await createStockCacheBackend({ connect }).prewarm(state, { resumeFrom, onProgress: (p) => progress.push(p), signal: never() });
    expect(counts).toEqual({ total: 500, prewarmed: 500, skipped: 0 });

    const expected = new Set<number>();
    for (let i = 4; i < 10; i++) for (let b = i * 100 + (i === 4 ? 10 : 0); b < i * 100 + 50; b++) expected.add(b);
    expect([...(await cachedBlocks('accounts'))].sort((a, b) => a - b)).toEqual([...expected].sort((a, b) => a - b));
    // One pg_prewarm() call per piece requested: ranges 4 (from block 10) to 9.
    let calls = 0;
    const deadline = Date.now() + 20_000;
    while (calls === 0 && Date.now() < deadline) {
      calls = await withClient(async (c) =>
        Number((await c.query<{ n: string | null }>(`select sum(calls) as n from pg_stat_user_functions where funcname = 'pg_prewarm'`)).rows[0]!.n ?? 0),
      );
      if (calls === 0) await sleep(100);
    }
    expect(calls).toBe(6);
  });

  it('reports consistent, increasing progress a retry can resume from', async () => {
    const state = (await createStockCacheBackend({ connect }).capture({}))!;
    await restart();
    const backend = createStockCacheBackend({ connect, batchBlocks: 64 });
    const progress: PrewarmProgress[] = [];
    const counts = await backend.prewarm(state, { onProgress: (p) => progress.push(p), signal: never() });
    expect(progress.length).toBeGreaterThan(5);
    let done = 0;
    for (const p of progress) {
      expect(validResumePoint(state, p)).toEqual(p);
      expect(p.prewarmed + p.skipped).toBeGreaterThanOrEqual(done);
      done = p.prewarmed + p.skipped;
    }
    expect(done).toBe(counts.total);

    // Interrupt a prewarm after a few batches, then resume from its last report.
    await restart();
    const controller = new AbortController();
    const first: PrewarmProgress[] = [];
    await expect(
      backend.prewarm(state, {
        onProgress: (p) => {
          first.push(p);
          if (first.length === 3) controller.abort(new Error('simulated crash'));
        },
        signal: controller.signal,
      }),
    ).rejects.toThrow('simulated crash');
    const resumeFrom = first.at(-1)!;
    expect(resumeFrom.prewarmed).toBeGreaterThan(0);
    const resumed = await backend.prewarm(state, { resumeFrom, onProgress: noProgress, signal: never() });
    expect(resumed.total).toBe(counts.total);
    expect(resumed.prewarmed + resumed.skipped).toBe(resumed.total);
    expect(resumed.prewarmed).toBeGreaterThanOrEqual(resumeFrom.prewarmed);
  });

  it('cancels the running SQL with pg_cancel_backend, and a later prewarm works', async () => {
    const { database, relfilenode } = await relationIds('accounts');
    const state: CacheState = { kind: 'block-ranges', blockSize: 8192, ranges: [{ database, tablespace: 1663, relfilenode, fork: 0, firstBlock: 0, blockCount: 300 }] };
    await restart();
    const locker = await connect('postgres');
    const lockerPid = (await locker.query<{ pid: number }>('select pg_backend_pid() as pid')).rows[0]!.pid;
    try {
      await locker.query('begin');
      await locker.query('lock table accounts in access exclusive mode');
      const controller = new AbortController();
      const prewarm = createStockCacheBackend({ connect }).prewarm(state, { onProgress: noProgress, signal: controller.signal });
      const outcome = prewarm.then(
        () => 'completed',
        (err: Error) => err.message,
      );
      const waiters = () =>
        withClient(async (c) => Number((await c.query<{ n: string }>(`select count(*) as n from pg_locks where relation = 'accounts'::regclass and not granted`)).rows[0]!.n));
      const deadline = Date.now() + 30_000;
      while ((await waiters()) === 0) {
        if (Date.now() > deadline) throw new Error('prewarm never waited for the lock');
        await sleep(50);
      }
      controller.abort(new Error('operator cancelled'));
      expect(await Promise.race([outcome, sleep(20_000).then(() => 'still running 20 s after the abort')])).toBe('operator cancelled');
      // The waiting statement was cancelled on the server while the lock is still held.
      expect(await waiters()).toBe(0);
      const active = await withClient(async (c) =>
        Number(
          (await c.query<{ n: string }>(`select count(*) as n from pg_stat_activity where pid <> pg_backend_pid() and pid <> $1 and state = 'active' and backend_type = 'client backend'`, [lockerPid])).rows[0]!.n,
        ),
      );
      expect(active).toBe(0);
      await locker.query('rollback');
    } finally {
      await locker.end();
    }
    const counts = await createStockCacheBackend({ connect }).prewarm(state, { onProgress: noProgress, signal: never() });
    expect(counts).toEqual({ total: 300, prewarmed: 300, skipped: 0 });
  });

  it('leaves data correct under a concurrent write workload', async () => {
    const backend = createStockCacheBackend({ connect, batchBlocks: 128 });
    await restart();
    await withClient((c) => c.query(`select pg_prewarm('accounts')`));
    const state = (await backend.capture({}))!;
    const sum = () => withClient(async (c) => Number((await c.query<{ s: string }>('select sum(balance) as s from accounts')).rows[0]!.s));
    const expectedSum = await sum();
    await restart();

    let prewarmDone = false;
    let transfers = 0;
    const workload = withClient(async (c) => {
      // Transfers between random accounts until the prewarm is over (and at least 50 ran).
      while (!prewarmDone || transfers < 50) {
        const a = 1 + Math.floor(Math.random() * 250000);
        const b = 1 + Math.floor(Math.random() * 250000);
        await c.query('begin');
        await c.query('update accounts set balance = balance - 7 where id = $1', [a]);
        await c.query('update accounts set balance = balance + 7 where id = $1', [b]);
        await c.query('commit');
        transfers++;
      }
    });
    const counts = await backend.prewarm(state, { onProgress: noProgress, signal: never() }).finally(() => {
      prewarmDone = true;
    });
    await workload;
    expect(counts.prewarmed + counts.skipped).toBe(counts.total);
    expect(counts.prewarmed).toBeGreaterThan(0);
    expect(await sum()).toBe(expectedSum);
    // Heap and index agree too.
    const viaIndex = await withClient(async (c) => {
      await c.query('set enable_seqscan = off');
      await c.query('set enable_bitmapscan = off');
      return Number((await c.query<{ s: string }>('select sum(balance) as s from accounts where id > 0')).rows[0]!.s);
    });
    expect(viaIndex).toBe(expectedSum);
  });

  it('prewarms each database over its own connection; blocks of a dropped database are skipped', async () => {
    for (const db of ['other_db', 'doomed_db']) {
      await withClient((c) => c.query(`create database ${c.escapeIdentifier(db)}`));
      await withClient((c) => c.query(`create table t as select g as id, repeat('t', 100) as filler from generate_series(1, 4000) g`), db);
    }
    await restart();
    for (const db of ['other_db', 'doomed_db']) await withClient((c) => c.query('select count(*) from t'), db);
    await withClient(async (c) => {
      await c.query('set enable_seqscan = off');
      await c.query(HOT_QUERY);
    });
    const oids = await withClient(async (c) => {
      const { rows } = await c.query<{ datname: string; oid: string }>(`select datname, oid::int8 as oid from pg_database`);
      return new Map(rows.map((r) => [r.datname, Number(r.oid)]));
    });
    const state = (await createStockCacheBackend({ connect }).capture({}))!;
    if (state.kind !== 'block-ranges') throw new Error('expected block ranges');
    const blocksIn = (db: number) => state.ranges.filter((r) => r.database === db).reduce((n, r) => n + r.blockCount, 0);
    expect(blocksIn(oids.get('other_db')!)).toBeGreaterThan(50);
    expect(blocksIn(oids.get('doomed_db')!)).toBeGreaterThan(50);
    expect(blocksIn(0)).toBeGreaterThan(0); // shared catalogs

    await restart();
    await withClient((c) => c.query('drop database doomed_db'));
    const connected: string[] = [];
    const counting: ConnectFn = (db) => {
      connected.push(db);
      return connect(db);
    };
    const counts = await createStockCacheBackend({ connect: counting }).prewarm(state, { onProgress: noProgress, signal: never() });
    expect(counts.prewarmed + counts.skipped).toBe(counts.total);
    expect(counts.skipped).toBeGreaterThanOrEqual(blocksIn(oids.get('doomed_db')!));
    expect(connected.filter((d) => d === 'postgres')).toHaveLength(1);
    expect(connected.filter((d) => d === 'other_db')).toHaveLength(1);
    expect(connected).not.toContain('doomed_db');
    const otherTable = await withClient(async (c) => {
      const { rows } = await c.query<{ rel: string; size: string }>(`select pg_relation_filenode('t')::int8 as rel, pg_relation_size('t') / 8192 as size`);
      return { relfilenode: Number(rows[0]!.rel), size: Number(rows[0]!.size) };
    }, 'other_db');
    const otherTableBlocks = await withClient(async (c) => {
      const { rows } = await c.query<{ cached: string }>(`select count(*) as cached from pg_buffercache where relfilenode = $1 and relforknumber = 0 and reldatabase = $2`, [
        otherTable.relfilenode,
        oids.get('other_db'),
      ]);
      return { cached: Number(rows[0]!.cached), size: otherTable.size };
    });
    expect(otherTableBlocks.cached).toBe(otherTableBlocks.size);
    // The backend created pg_prewarm where it was missing.
    const ext = await withClient(async (c) => (await c.query(`select extnamespace::regnamespace::text as schema from pg_extension where extname = 'pg_prewarm'`)).rows, 'other_db');
    expect(ext).toEqual([{ schema: 'public' }]);
    await withClient((c) => c.query('drop database other_db'));
  });

  it('refuses a state captured with another block size', async () => {
    const state: CacheState = { kind: 'block-ranges', blockSize: 16384, ranges: [{ database: 5, tablespace: 1663, relfilenode: 1, fork: 0, firstBlock: 0, blockCount: 1 }] };
    await expect(createStockCacheBackend({ connect }).prewarm(state, { onProgress: noProgress, signal: never() })).rejects.toMatchObject({
      type: 'IncompatibleCacheState',
      nonRetryable: true,
    });
  });
});
