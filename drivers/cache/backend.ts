import { ApplicationFailure } from '@temporalio/common';
import type { CacheState, PrewarmProgress } from '../../model/cache-state';
import { nonRetryable } from '../../common/failures';

export interface PrewarmOptions {
  /** Where an earlier attempt got to; blocks before it are not requested again. */
  resumeFrom?: PrewarmProgress;
  /** Called whenever more of the state is done (after each statement), in order. */
  onProgress(progress: PrewarmProgress): void;
  /** Aborting cancels the running SQL (pg_cancel_backend); prewarm then rejects with the abort reason. */
  signal: AbortSignal;
  /**
   * Awaited after each statement that requested blocks, once its progress was reported and
   * before the next statement: the pause point fault-injection tests kill a worker at. The stock
   * backend calls it; Neon's loads everything in one statement and has no such point.
   */
  afterBatch?(progress: PrewarmProgress): Promise<void>;
}

export interface PrewarmCounts {
  /** prewarmed + skipped: every page of the state. */
  total: number;
  prewarmed: number;
  skipped: number;
}

/** A compute's page cache: Neon's LFC or stock PostgreSQL's shared_buffers. */
export interface CacheBackend {
  readonly kind: 'neon' | 'stock';
  /** The cached pages, hottest first, capped; null when nothing is cached or the cache is disabled. */
  capture(opts: { maxChunks?: number; signal?: AbortSignal }): Promise<CacheState | null>;
  /** Loads the state's pages without evicting cached ones; stops when the cache is full. */
  prewarm(state: CacheState, opts: PrewarmOptions): Promise<PrewarmCounts>;
}

export const INCOMPATIBLE_CACHE_STATE = 'IncompatibleCacheState';

export function incompatibleCacheState(problem: string): ApplicationFailure {
  return nonRetryable(INCOMPATIBLE_CACHE_STATE, `cache state does not fit this compute: ${problem}`);
}

export function assertMaxChunks(maxChunks: number | undefined): void {
  if (maxChunks !== undefined && (!Number.isSafeInteger(maxChunks) || maxChunks < 0 || maxChunks > 0x7fffffff)) {
    throw nonRetryable('InvalidArgument', `maxChunks must be an integer from 0 to 2147483647, got ${maxChunks}`);
  }
}
