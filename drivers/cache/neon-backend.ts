/**
 * Neon's Local File Cache, driven through the neon extension's SQL functions:
 * neon.get_local_cache_state(max_chunks), neon.prewarm_local_cache(state, n_workers) and
 * neon.get_prewarm_info(). The LFC itself skips pages it already holds and stops when full.
 *
 * Resume: prewarm_local_cache is one blocking call, so a retried attempt runs it again; pages the
 * first attempt loaded are already in the LFC and come back as skipped.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { assertMaxChunks, incompatibleCacheState, type CacheBackend, type PrewarmCounts } from './backend';
import { inspectNeonLfcState } from './neon-lfc-format';
import { cancellableQuery, openSession, throwIfAborted, type ConnectFn, type Session } from './pg-session';
import { CORRUPT_CACHE_STATE } from './state-codec';
import { nonRetryable } from '../../common/failures';

export interface NeonCacheBackendOptions {
  connect: ConnectFn;
  maintenanceDatabase?: string;
  /** Prewarm workers, 1-8 (Neon's limit). */
  workers?: number;
  /** How often progress is read from neon.get_prewarm_info() during a prewarm (default 500 ms). */
  progressIntervalMs?: number;
}

const MAX_WORKERS = 8;

interface PrewarmInfoRow {
  total_pages: number | string | null;
  prewarmed_pages: number | string | null;
  skipped_pages: number | string | null;
}

async function prewarmInfo(session: Session): Promise<PrewarmCounts> {
  const { rows } = await session.client.query<PrewarmInfoRow>('select total_pages, prewarmed_pages, skipped_pages from neon.get_prewarm_info()');
  const row = rows[0];
  return { total: Number(row?.total_pages ?? 0), prewarmed: Number(row?.prewarmed_pages ?? 0), skipped: Number(row?.skipped_pages ?? 0) };
}

export function createNeonCacheBackend(options: NeonCacheBackendOptions): CacheBackend {
  const maintenance = options.maintenanceDatabase ?? 'postgres';
  const workers = options.workers ?? 1;
  if (!Number.isInteger(workers) || workers < 1 || workers > MAX_WORKERS) throw new RangeError(`workers must be 1-${MAX_WORKERS}, got ${workers}`);
  const interval = options.progressIntervalMs ?? 500;
  const cancelVia = () => openSession(options.connect, maintenance);

  return {
    kind: 'neon',

    async capture({ maxChunks, signal }) {
      assertMaxChunks(maxChunks);
      const session = await openSession(options.connect, maintenance);
      try {
        const { rows } = await cancellableQuery<{ state: Buffer | null; bs: number }>(
          session,
          `select neon.get_local_cache_state($1::integer) as state, current_setting('block_size')::int as bs`,
          [maxChunks ?? null],
          signal,
          cancelVia,
        );
        const state = rows[0]?.state ?? null;
        if (state === null || state.length === 0) return null; // cache disabled
        let summary;
        try {
          summary = inspectNeonLfcState(state);
        } catch (err) {
          throw nonRetryable(CORRUPT_CACHE_STATE, `neon.get_local_cache_state() returned a malformed state: ${(err as Error).message}`);
        }
        if (summary.chunks === 0 || summary.pages === 0) return null;
        return { kind: 'neon-lfc', blockSize: rows[0]!.bs, lfcState: state, pages: summary.pages };
      } finally {
        await session.close();
      }
    },

    async prewarm(state, opts) {
      if (state.kind !== 'neon-lfc') throw incompatibleCacheState('stock PostgreSQL block ranges cannot be loaded into the Neon LFC');
      throwIfAborted(opts.signal);
      const loader = await openSession(options.connect, maintenance);
      const watcher = await openSession(options.connect, maintenance).catch(async (err: unknown) => {
        await loader.close();
        throw err;
      });
      let finished = false;
      try {
        const bs = (await loader.client.query<{ bs: number }>(`select current_setting('block_size')::int as bs`)).rows[0]!.bs;
        if (bs !== state.blockSize) throw incompatibleCacheState(`captured with ${state.blockSize}-byte blocks, this server uses ${bs}`);
        const running = cancellableQuery(loader, 'select neon.prewarm_local_cache($1::bytea, $2::integer)', [Buffer.from(state.lfcState), workers], opts.signal, cancelVia).finally(() => {
          finished = true;
        });
        const watching = (async () => {
          while (!finished) {
            await Promise.race([running.catch(() => undefined), sleep(interval)]);
            if (finished) break;
            const info = await prewarmInfo(watcher).catch(() => undefined);
            if (info && !finished) opts.onProgress({ rangeIndex: 0, blockOffset: 0, prewarmed: info.prewarmed, skipped: info.skipped });
          }
        })();
        await running;
        await watching;
        const info = await prewarmInfo(watcher);
        opts.onProgress({ rangeIndex: 0, blockOffset: 0, prewarmed: info.prewarmed, skipped: info.skipped });
        return info;
      } finally {
        finished = true;
        await Promise.all([loader.close(), watcher.close()]);
      }
    },
  };
}
