/**
 * Stock PostgreSQL 15's page cache is shared_buffers. Capture lists it through pg_buffercache
 * (hottest first, capped, coalesced into block ranges); prewarm loads the ranges back online
 * with pg_prewarm(rel, 'buffer', fork, first, last), one connection per database, never evicting:
 * it loads at most as many blocks as there are unused buffers and skips blocks already cached.
 */
import type { ConfSetting } from '../postgres/config';
import { assertMaxChunks, incompatibleCacheState, type CacheBackend } from './backend';
import { hottest, isForkNumber, orderForPrewarm, type HeatedRange } from './block-ranges';
import { MAX_CACHE_STATE_RANGES } from './state-codec';
import { cancellableQuery, ensureExtension, openSession, type ConnectFn } from './pg-session';
import { num, serverBlockSize, StockPrewarm, type NumericRow } from './stock-prewarm';

/**
 * The postgresql.conf settings the stock backend needs. pg_buffercache and pg_prewarm() are plain
 * extensions (created on demand with CREATE EXTENSION IF NOT EXISTS) and need no preloading.
 * Contrib's autoprewarm worker, if someone preloads pg_prewarm, would dump and reload its own
 * block list in PGDATA next to ours; the setting is a harmless placeholder otherwise.
 */
export function stockCacheSettings(): ConfSetting[] {
  return [{ name: 'pg_prewarm.autoprewarm', value: false }];
}

export interface StockCacheBackendOptions {
  connect: ConnectFn;
  /** Database for the buffer-cache queries and shared catalogs (default "postgres"). */
  maintenanceDatabase?: string;
  /** Most blocks requested per statement, i.e. between progress reports (default 8192 = 64 MiB). */
  batchBlocks?: number;
  /**
   * While the unused buffers are not comfortably more than what is left to load, recount them
   * after loading this many blocks (default 32768): concurrent queries take unused buffers too,
   * and loading into more buffers than are free would evict.
   */
  recountEveryBlocks?: number;
  /**
   * Unused buffers left alone (default 128), plus 64 for each further database connected to:
   * our own sessions read catalog pages after a count, and those must not evict anything either.
   */
  reserveBuffers?: number;
}

function captureSql(bc: string): string {
  // Duplicated tags (a buffer being replaced while pg_buffercache reads without locks) collapse
  // in the first GROUP BY; runs of consecutive blocks share blk - row_number().
  return `
    with blocks as (
      select reldatabase as db, reltablespace as spc, relfilenode as rel, relforknumber as fork, relblocknumber as blk,
             max(coalesce(usagecount, 0)) as heat
      from ${bc}.pg_buffercache
      where relfilenode is not null and relforknumber between 0 and 3
      group by 1, 2, 3, 4, 5
    ), hottest as (
      select * from blocks order by heat desc, db, spc, rel, fork, blk limit $1
    ), runs as (
      select *, blk - row_number() over (partition by db, spc, rel, fork order by blk) as run from hottest
    )
    select db::int8, spc::int8, rel::int8, fork::int, min(blk)::int8 as first, count(*)::int8 as n, max(heat)::int as heat
    from runs group by db, spc, rel, fork, run`;
}

export function createStockCacheBackend(options: StockCacheBackendOptions): CacheBackend {
  const maintenance = options.maintenanceDatabase ?? 'postgres';
  const batchBlocks = options.batchBlocks ?? 8192;
  const recountEvery = options.recountEveryBlocks ?? 32768;
  const reserve = options.reserveBuffers ?? 128;
  if (!Number.isSafeInteger(batchBlocks) || batchBlocks < 1) throw new RangeError(`batchBlocks must be a positive integer, got ${batchBlocks}`);
  if (!Number.isSafeInteger(recountEvery) || recountEvery < 1) throw new RangeError(`recountEveryBlocks must be a positive integer, got ${recountEvery}`);
  if (!Number.isSafeInteger(reserve) || reserve < 0) throw new RangeError(`reserveBuffers must be a non-negative integer, got ${reserve}`);
  const cancelVia = () => openSession(options.connect, maintenance);

  return {
    kind: 'stock',

    async capture({ maxChunks, signal }) {
      assertMaxChunks(maxChunks);
      if (maxChunks === 0) return null;
      const session = await openSession(options.connect, maintenance);
      try {
        const bc = await ensureExtension(session, 'pg_buffercache');
        const blockSize = await serverBlockSize(session);
        const { rows } = await cancellableQuery<NumericRow>(session, captureSql(bc), [maxChunks ?? null], signal, cancelVia);
        if (rows.length === 0) return null;
        const ranges: HeatedRange[] = rows.map((r) => {
          const fork = num(r.fork);
          if (!isForkNumber(fork)) throw new Error(`pg_buffercache returned fork number ${fork}`);
          return { database: num(r.db), tablespace: num(r.spc), relfilenode: num(r.rel), fork, firstBlock: num(r.first), blockCount: num(r.n), heat: num(r.heat) };
        });
        // A badly fragmented cache can have more ranges than a state may hold: keep the hottest.
        return { kind: 'block-ranges', blockSize, ranges: orderForPrewarm(hottest(ranges, MAX_CACHE_STATE_RANGES)) };
      } finally {
        await session.close();
      }
    },

    async prewarm(state, opts) {
      if (state.kind !== 'block-ranges') throw incompatibleCacheState('a Neon LFC state cannot be loaded into stock PostgreSQL shared_buffers');
      return new StockPrewarm(options.connect, maintenance, { batchBlocks, recountEvery, reserve }, state, opts).run();
    },
  };
}
