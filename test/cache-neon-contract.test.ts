/**
 * CONTRACT TEST for the Neon backend. The neon extension cannot run here, so this creates SQL
 * functions with the same names and signatures in a `neon` schema of a real PostgreSQL 15:
 * they record how they were called, return a configured state, and report progress through
 * sequences (which, unlike tables, are visible to other sessions mid-transaction). It checks the
 * SQL our backend issues, what it does with the answers, and that cancellation interrupts the
 * running call; it says nothing about the real LFC's behaviour.
 */
import pg from 'pg';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createNeonCacheBackend } from '../drivers/cache/neon-backend';
import { buildNeonLfcState } from '../drivers/cache/neon-lfc-format';
import type { ConnectFn } from '../drivers/cache/pg-session';
import type { PrewarmProgress } from '../model/cache-state';
import { startThrowawayPostgres, type ThrowawayPostgres } from '../dev/throwaway-postgres';

const MOCK_NEON_SQL = `
create schema neon;
create table neon.mock_state (state bytea);
create table neon.mock_config (page_delay float8 not null);
create table neon.mock_warm (done bool);
create table neon.calls (id serial primary key, fn text not null, max_chunks int, state bytea, n_workers int);
create sequence neon.mock_total minvalue 0 start 0;
create sequence neon.mock_prewarmed minvalue 0 start 0;
create sequence neon.mock_skipped minvalue 0 start 0;
create sequence neon.mock_started minvalue 0 start 0;
select setval('neon.mock_started', 0, true);

create function neon.get_local_cache_state(max_chunks integer default null) returns bytea language plpgsql as $$
begin
  insert into neon.calls (fn, max_chunks) values ('get_local_cache_state', max_chunks);
  return (select state from neon.mock_state limit 1);
end $$;

-- Pages are prewarmed one at a time; a second prewarm finds them cached and skips them.
create function neon.prewarm_local_cache(state bytea, n_workers integer default 1) returns void language plpgsql as $$
declare
  n_pages int := get_byte(state, 8) + (get_byte(state, 9) << 8) + (get_byte(state, 10) << 16) + (get_byte(state, 11) << 24);
  warm bool := exists (select 1 from neon.mock_warm);
  delay float8 := (select page_delay from neon.mock_config);
begin
  if get_byte(state, 0) <> 252 or get_byte(state, 1) <> 252 or get_byte(state, 2) <> 252 or get_byte(state, 3) <> 252 then
    raise exception 'LFC: Invalid file cache state magic';
  end if;
  perform nextval('neon.mock_started');
  insert into neon.calls (fn, state, n_workers) values ('prewarm_local_cache', state, n_workers);
  perform setval('neon.mock_total', n_pages, true), setval('neon.mock_prewarmed', 0, true), setval('neon.mock_skipped', 0, true);
  for i in 1..n_pages loop
    perform pg_sleep(delay);
    if warm then perform nextval('neon.mock_skipped'); else perform nextval('neon.mock_prewarmed'); end if;
  end loop;
  insert into neon.mock_warm values (true);
end $$;

create function neon.get_prewarm_info(out total_pages int, out prewarmed_pages int, out skipped_pages int, out active_workers int)
language sql as $$
  select (select last_value from neon.mock_total)::int, (select last_value from neon.mock_prewarmed)::int,
         (select last_value from neon.mock_skipped)::int, 0
$$;
`;

let server: ThrowawayPostgres;
let connect: ConnectFn;

const lfcState = buildNeonLfcState(3, [
  { tablespace: 1663, database: 5, relfilenode: 16384, fork: 0, firstBlock: 0, cached: [0, 1, 2, 3, 4, 5] },
  { tablespace: 1663, database: 5, relfilenode: 16384, fork: 0, firstBlock: 8, cached: [0, 7] },
  { tablespace: 1663, database: 5, relfilenode: 16390, fork: 1, firstBlock: 0, cached: [1, 2] },
]);

async function calls(fn: string): Promise<{ max_chunks: number | null; state: Buffer | null; n_workers: number | null }[]> {
  return (await server.query(`select max_chunks, state, n_workers from neon.calls where fn = $1 order by id`, [fn])).rows as never;
}

beforeAll(async () => {
  server = await startThrowawayPostgres();
  connect = async (database) => {
    const c = new pg.Client({ host: '127.0.0.1', port: server.port, user: 'postgres', database });
    await c.connect();
    return c;
  };
  await server.query(MOCK_NEON_SQL);
}, 120_000);

afterAll(async () => {
  await server?.stop();
});

beforeEach(async () => {
  await server.query(`truncate neon.mock_state, neon.calls, neon.mock_warm, neon.mock_config; insert into neon.mock_config values (0.001)`);
});

describe('Neon backend (contract test against same-signature SQL functions)', () => {
  it('captures with neon.get_local_cache_state(max_chunks) and validates the state', async () => {
    await server.query('insert into neon.mock_state values ($1)', [lfcState]);
    const backend = createNeonCacheBackend({ connect });
    const state = await backend.capture({ maxChunks: 7 });
    expect(state).toMatchObject({ kind: 'neon-lfc', blockSize: 8192, pages: 10 });
    expect(Buffer.from((state as { lfcState: Uint8Array }).lfcState).equals(lfcState)).toBe(true);
    await backend.capture({});
    expect((await calls('get_local_cache_state')).map((c) => c.max_chunks)).toEqual([7, null]);
  });

  it('treats NULL (cache disabled) and an empty state as nothing to offload', async () => {
    const backend = createNeonCacheBackend({ connect });
    expect(await backend.capture({})).toBeNull();
    await server.query('insert into neon.mock_state values ($1)', [buildNeonLfcState(7, [])]);
    expect(await backend.capture({})).toBeNull();
  });

  it('refuses a malformed state from the server', async () => {
    const bad = Buffer.from(lfcState);
    bad.writeUInt32LE(99, 8); // page count disagrees with the bitmap
    await server.query('insert into neon.mock_state values ($1)', [bad]);
    await expect(createNeonCacheBackend({ connect }).capture({})).rejects.toMatchObject({ type: 'CorruptCacheState', nonRetryable: true });
  });

  it('prewarms with neon.prewarm_local_cache(state, n_workers), reporting get_prewarm_info progress', async () => {
    await server.query('update neon.mock_config set page_delay = 0.1');
    const backend = createNeonCacheBackend({ connect, workers: 4, progressIntervalMs: 100 });
    const progress: PrewarmProgress[] = [];
    const counts = await backend.prewarm(
      { kind: 'neon-lfc', blockSize: 8192, lfcState, pages: 10 },
      { onProgress: (p) => progress.push(p), signal: new AbortController().signal },
    );
    expect(counts).toEqual({ total: 10, prewarmed: 10, skipped: 0 });
    const [call] = await calls('prewarm_local_cache');
    expect(call!.n_workers).toBe(4);
    expect(call!.state!.equals(lfcState)).toBe(true);
    // Intermediate progress was seen, never decreasing, ending at the final counts.
    const seen = progress.map((p) => p.prewarmed);
    expect(seen.some((n) => n > 0 && n < 10)).toBe(true);
    expect([...seen].sort((a, b) => a - b)).toEqual(seen);
    expect(progress.at(-1)).toMatchObject({ prewarmed: 10, skipped: 0 });

    // The LFC skips pages it already holds.
    await server.query('update neon.mock_config set page_delay = 0.001');
    expect(await backend.prewarm({ kind: 'neon-lfc', blockSize: 8192, lfcState, pages: 10 }, { onProgress: () => undefined, signal: new AbortController().signal })).toEqual({
      total: 10,
      prewarmed: 0,
      skipped: 10,
    });
  });

  it('cancels a running neon.prewarm_local_cache through pg_cancel_backend; a new prewarm then completes', async () => {
    await server.query('update neon.mock_config set page_delay = 0.2');
    const backend = createNeonCacheBackend({ connect, progressIntervalMs: 100 });
    const controller = new AbortController();
    const state = { kind: 'neon-lfc' as const, blockSize: 8192, lfcState, pages: 10 };
    const startedCalls = async () => Number((await server.query<{ n: string }>('select last_value as n from neon.mock_started')).rows[0]!.n);
    const callsBefore = await startedCalls();
    const started = Date.now();
    const run = backend.prewarm(state, {
      onProgress: (p) => {
        if (p.prewarmed >= 1) controller.abort(new Error('cancelled by request'));
      },
      signal: controller.signal,
    });
    await expect(run).rejects.toThrow('cancelled by request');
    expect(Date.now() - started).toBeLessThan(1800); // 10 pages x 0.2 s would take 2 s
    const { rows } = await server.query<{ n: string }>(`select count(*) as n from pg_stat_activity where query like '%prewarm_local_cache%' and state = 'active' and pid <> pg_backend_pid()`);
    expect(Number(rows[0]!.n)).toBe(0);
    // The call did start (sequences ignore the rollback) and rolled back its bookkeeping.
    expect(await startedCalls()).toBe(callsBefore + 1);
    expect(await calls('prewarm_local_cache')).toHaveLength(0);

    await server.query('update neon.mock_config set page_delay = 0.001');
    expect(await backend.prewarm(state, { onProgress: () => undefined, signal: new AbortController().signal })).toEqual({ total: 10, prewarmed: 10, skipped: 0 });
  });

  it('refuses stock block ranges and a state of another block size', async () => {
    const backend = createNeonCacheBackend({ connect });
    const signal = new AbortController().signal;
    await expect(backend.prewarm({ kind: 'block-ranges', blockSize: 8192, ranges: [] }, { onProgress: () => undefined, signal })).rejects.toMatchObject({ type: 'IncompatibleCacheState' });
    await expect(backend.prewarm({ kind: 'neon-lfc', blockSize: 16384, lfcState, pages: 10 }, { onProgress: () => undefined, signal })).rejects.toMatchObject({
      type: 'IncompatibleCacheState',
    });
    expect(await calls('prewarm_local_cache')).toHaveLength(0);
  });
});
