/**
 * Offload and prewarm of a compute's cache state: the building block that the compute worker's
 * activities (activities/compute/cache-node-activities.ts) wrap. They return compute_ctl's JSON result
 * shapes ("completed" with timings, or "skipped"); failures are thrown (non-retryable ones with a
 * type), and cancellation rethrows the SDK's CancelledFailure. The workflow maps those to the
 * "failed"/"cancelled" states and enforces one prewarm and one offload at a time.
 */
import { Context } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import { performance } from 'node:perf_hooks';
import { maskSecrets } from '../../common/errors';
import { validResumePoint, type OffloadResult, type PrewarmProgress, type PrewarmResult } from '../../model/cache-state';
import { assertMaxChunks, type CacheBackend } from './backend';
import { createNeonCacheBackend } from './neon-backend';
import { decodeNeonEndpointState, encodeNeonEndpointState, neonStateAsBlockRanges } from './neon-endpoint-format';
import { throwIfAborted, type ConnectFn } from './pg-session';
import { crc32, decodeCacheState, encodeCacheState, type Compression } from './state-codec';
import { createStockCacheBackend } from './stock-backend';
import type { CacheStateStore } from './store';
import { every } from '../../common/activity-context';
import { retryable } from '../../common/failures';

export interface OffloadPrewarmDeps {
  /** Opens a connected client to a database of this compute's Postgres. */
  connect: ConnectFn;
  store: CacheStateStore;
  /** 'stock' (shared_buffers via pg_buffercache/pg_prewarm), 'neon' (the LFC), or a ready backend. */
  backend: 'stock' | 'neon' | CacheBackend;
  maintenanceDatabase?: string;
  /**
   * How states are stored: 'durable-compute' (the checked, versioned blob of state-codec.ts, the
   * direct-S3 path) or 'neon' (zstd of Neon's LFC state, what endpoint storage holds for Neon
   * computes too, so either system prewarms from the other's state). Default 'durable-compute'.
   */
  format?: 'durable-compute' | 'neon';
  /** Compression of the 'durable-compute' format. */
  compression?: Compression;
  /** Heartbeat at least this often during a prewarm so cancellation arrives (default 1000 ms). */
  heartbeatIntervalMs?: number;
  /**
   * Awaited after each prewarm statement, once the progress it made was heartbeated, with those
   * details: where the compute worker's 'prewarmBatch' failpoint pauses. Absent: no pause.
   */
  afterPrewarmBatch?(heartbeat: PrewarmHeartbeat): Promise<void>;
}

export interface OffloadCacheStateInput {
  tenantId: string;
  timelineId: string;
  endpointId: string;
  /** Cap on what is captured: LFC chunks (Neon) or buffers (stock), hottest first. */
  maxChunks?: number;
}

export interface PrewarmCacheInput {
  tenantId: string;
  timelineId: string;
  endpointId: string;
  /** Prewarm from another endpoint's state on the same timeline (a replica about to be promoted). */
  fromEndpointId?: string;
}

/** What prewarmCache heartbeats, and reads back on a retry. */
export interface PrewarmHeartbeat {
  /** CRC-32 of the stored blob: progress only applies to the very state it was made on. */
  stateCrc: number;
  progress: PrewarmProgress;
}

const elapsed = (since: number) => Math.round(performance.now() - since);

/** Cancellation and non-retryable failures pass through; anything else is retryable, secrets masked. */
function asActivityError(err: unknown, signal: AbortSignal, type: string): unknown {
  if (signal.aborted) return signal.reason instanceof Error ? signal.reason : err;
  if (err instanceof ApplicationFailure) return err;
  const message = maskSecrets(err instanceof Error ? err.message : String(err));
  return retryable(type, message);
}

function heartbeatDetails(details: unknown): PrewarmHeartbeat | undefined {
  if (typeof details !== 'object' || details === null) return undefined;
  const d = details as Partial<PrewarmHeartbeat>;
  if (typeof d.stateCrc !== 'number' || typeof d.progress !== 'object') return undefined;
  return { stateCrc: d.stateCrc, progress: d.progress };
}

export function createOffloadPrewarm(deps: OffloadPrewarmDeps) {
  const backend: CacheBackend =
    deps.backend === 'stock'
      ? createStockCacheBackend({ connect: deps.connect, maintenanceDatabase: deps.maintenanceDatabase })
      : deps.backend === 'neon'
        ? createNeonCacheBackend({ connect: deps.connect, maintenanceDatabase: deps.maintenanceDatabase })
        : deps.backend;
  const heartbeatEvery = deps.heartbeatIntervalMs ?? 1000;
  const neonFormat = deps.format === 'neon';

  return {
    /** Captures the cache and uploads it; 'skipped' (nothing uploaded) when the cache is empty. */
    async offloadCacheState(input: OffloadCacheStateInput): Promise<OffloadResult> {
      const ctx = Context.current();
      const signal = ctx.cancellationSignal;
      deps.store.key(input.tenantId, input.timelineId, input.endpointId);
      assertMaxChunks(input.maxChunks);
      try {
        let t = performance.now();
        const state = await backend.capture({ maxChunks: input.maxChunks, signal });
        const state_query_time_ms = elapsed(t);
        if (!state) return { status: 'skipped' };
        throwIfAborted(signal);
        t = performance.now();
        const blob = neonFormat ? await encodeNeonEndpointState(state) : encodeCacheState(state, { compression: deps.compression });
        const compress_time_ms = elapsed(t);
        ctx.heartbeat();
        t = performance.now();
        await deps.store.put(input.tenantId, input.timelineId, input.endpointId, blob, { signal });
        const state_upload_time_ms = elapsed(t);
        return { status: 'completed', state_query_time_ms, compress_time_ms, state_upload_time_ms };
      } catch (err) {
        throw asActivityError(err, signal, 'CacheOffloadError');
      }
    },

    /**
     * Downloads the endpoint's state and loads it; 'skipped' when none is stored. Heartbeats
     * its progress; a retry of the same state resumes after the last heartbeat.
     */
    async prewarmCache(input: PrewarmCacheInput): Promise<PrewarmResult> {
      const ctx = Context.current();
      const signal = ctx.cancellationSignal;
      const source = input.fromEndpointId ?? input.endpointId;
      deps.store.key(input.tenantId, input.timelineId, input.endpointId);
      deps.store.key(input.tenantId, input.timelineId, source);
      let latest: PrewarmHeartbeat | undefined;
      // Heartbeats also carry cancellation to the activity, so keep them flowing while one long
      // statement runs.
      const stopBeating = every(heartbeatEvery, () => ctx.heartbeat(latest));
      try {
        let t = performance.now();
        const blob = await deps.store.get(input.tenantId, input.timelineId, source, { signal });
        const state_download_time_ms = elapsed(t);
        if (!blob) return { status: 'skipped' };
        throwIfAborted(signal);
        t = performance.now();
        const decoded = neonFormat ? await decodeNeonEndpointState(blob) : decodeCacheState(blob);
        // A stock compute loads a Neon LFC state as the block ranges its chunks mark cached.
        const state = backend.kind === 'stock' && decoded.kind === 'neon-lfc' ? neonStateAsBlockRanges(decoded) : decoded;
        const stateCrc = crc32([blob]);
        const uncompress_time_ms = elapsed(t);
        const previous = heartbeatDetails(ctx.info.heartbeatDetails);
        const resumeFrom = previous?.stateCrc === stateCrc ? validResumePoint(state, previous.progress) : undefined;
        latest = resumeFrom ? { stateCrc, progress: resumeFrom } : undefined;
        t = performance.now();
        const counts = await backend.prewarm(state, {
          resumeFrom,
          signal,
          onProgress(progress) {
            latest = { stateCrc, progress };
            ctx.heartbeat(latest);
          },
          ...(deps.afterPrewarmBatch ? { afterBatch: (progress: PrewarmProgress) => deps.afterPrewarmBatch!({ stateCrc, progress }) } : {}),
        });
        const prewarm_time_ms = elapsed(t);
        return {
          status: 'completed',
          total: counts.prewarmed + counts.skipped,
          prewarmed: counts.prewarmed,
          skipped: counts.skipped,
          state_download_time_ms,
          uncompress_time_ms,
          prewarm_time_ms,
        };
      } catch (err) {
        throw asActivityError(err, signal, 'CachePrewarmError');
      } finally {
        stopBeating();
      }
    },
  };
}

export type OffloadPrewarm = ReturnType<typeof createOffloadPrewarm>;
