/**
 * Cache-state offload and prewarm: the status values compute_ctl reports (JSON, tag "status",
 * snake_case), the decoded cache state, prewarm progress, storage keys and metric names.
 * Pure and deterministic: workflows import it.
 */
import { assertNeonId } from './ids';

// ---------------------------------------------------------------------------------------------
// Status values, exactly the JSON shapes of compute_ctl's /lfc/prewarm and /lfc/offload.

export interface PrewarmCompleted {
  status: 'completed';
  /** Always prewarmed + skipped. */
  total: number;
  prewarmed: number;
  /** Pages already cached, of dropped or shrunk relations, or left out because the cache was full. */
  skipped: number;
  state_download_time_ms: number;
  uncompress_time_ms: number;
  prewarm_time_ms: number;
}

export type PrewarmState =
  | { status: 'not_prewarmed' }
  | { status: 'prewarming' }
  | PrewarmCompleted
  | { status: 'failed'; error: string }
  /** Storage has no state for the endpoint (first start, or the cache was empty at the last offload). */
  | { status: 'skipped' }
  | { status: 'cancelled' };

export interface OffloadCompleted {
  status: 'completed';
  state_query_time_ms: number;
  compress_time_ms: number;
  state_upload_time_ms: number;
}

export type OffloadState =
  | { status: 'not_offloaded' }
  | { status: 'offloading' }
  | OffloadCompleted
  | { status: 'failed'; error: string }
  /** The cache was empty or disabled: nothing uploaded, so a good stored state is never overwritten. */
  | { status: 'skipped' };

/**
 * Where a compute keeps its cache state when its spec names endpoint storage
 * (endpoint_storage_addr, endpoint_storage_token): reached over HTTP with the token, so the
 * compute needs no bucket credentials. The token is a secret; it travels only inside encrypted
 * payloads.
 */
export interface EndpointStorageTarget {
  addr: string;
  token: string;
}

/** What the prewarm activity returns; failures and cancellation are thrown, not returned. */
export type PrewarmResult = PrewarmCompleted | { status: 'skipped' };
/** What the offload activity returns. */
export type OffloadResult = OffloadCompleted | { status: 'skipped' };

/**
 * The periodic offload runs only while the prewarm state is completed, not_prewarmed or skipped:
 * a compute that uploaded a half-warm state (prewarming, failed, cancelled) and then restarted
 * would prewarm from that incomplete state.
 */
export function mayOffloadPeriodically(prewarm: PrewarmState): boolean {
  return prewarm.status === 'completed' || prewarm.status === 'not_prewarmed' || prewarm.status === 'skipped';
}

/** Prometheus counter names compute_ctl exports for these operations. */
export const CACHE_METRICS = {
  prewarms: 'compute_ctl_lfc_prewarms_total',
  prewarmErrors: 'compute_ctl_lfc_prewarm_errors_total',
  offloads: 'compute_ctl_lfc_offloads_total',
  offloadErrors: 'compute_ctl_lfc_offload_errors_total',
} as const;

// ---------------------------------------------------------------------------------------------
// The decoded cache state.

/** PostgreSQL fork numbers and the names pg_prewarm()/pg_relation_size() take. */
export const FORK_NAMES = ['main', 'fsm', 'vm', 'init'] as const;
export type ForkNumber = 0 | 1 | 2 | 3;

/**
 * Consecutive cached blocks of one relation fork. `database` is 0 for shared catalogs;
 * `tablespace` and `relfilenode` are as pg_buffercache reports them (never 0).
 */
export interface BlockRange {
  database: number;
  tablespace: number;
  relfilenode: number;
  fork: ForkNumber;
  firstBlock: number;
  blockCount: number;
}

export type CacheState =
  /** Stock PostgreSQL: shared_buffers contents, ranges in prewarm order (hottest first). */
  | { kind: 'block-ranges'; blockSize: number; ranges: BlockRange[] }
  /** Neon: the opaque state neon.get_local_cache_state() returns; `pages` is its page count. */
  | { kind: 'neon-lfc'; blockSize: number; lfcState: Uint8Array; pages: number };

/** Number of pages the state describes: the `total` a completed prewarm reports. */
export function cacheStatePages(state: CacheState): number {
  if (state.kind === 'neon-lfc') return state.pages;
  let total = 0;
  for (const r of state.ranges) total += r.blockCount;
  return total;
}

/**
 * How far a prewarm got, in the state's deterministic order: the next block to request is
 * `blockOffset` blocks into range `rangeIndex`. Heartbeated so a retried activity resumes there.
 * Always prewarmed + skipped = the number of blocks before that point.
 */
export interface PrewarmProgress {
  rangeIndex: number;
  blockOffset: number;
  prewarmed: number;
  skipped: number;
}

export const NO_PROGRESS: PrewarmProgress = Object.freeze({ rangeIndex: 0, blockOffset: 0, prewarmed: 0, skipped: 0 });

function isCount(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

/**
 * `progress` if it is a consistent point inside block-range `state`, else undefined (start over).
 * Heartbeat details come from an earlier attempt and may not fit the state downloaded now.
 */
export function validResumePoint(state: CacheState, progress: unknown): PrewarmProgress | undefined {
  if (typeof progress !== 'object' || progress === null) return undefined;
  const p = progress as Record<string, unknown>;
  if (!isCount(p.rangeIndex) || !isCount(p.blockOffset) || !isCount(p.prewarmed) || !isCount(p.skipped)) return undefined;
  if (state.kind !== 'block-ranges') return undefined;
  const { ranges } = state;
  if (p.rangeIndex > ranges.length) return undefined;
  const current = ranges[p.rangeIndex];
  if (current ? p.blockOffset >= current.blockCount : p.blockOffset !== 0) return undefined;
  let before = p.blockOffset;
  for (let i = 0; i < p.rangeIndex; i++) before += ranges[i]!.blockCount;
  if (p.prewarmed + p.skipped !== before) return undefined;
  return { rangeIndex: p.rangeIndex, blockOffset: p.blockOffset, prewarmed: p.prewarmed, skipped: p.skipped };
}

// ---------------------------------------------------------------------------------------------
// Storage keys.

/**
 * Endpoint IDs (Neon's look like "ep-cool-darkness-123456"): letters, digits, '-' and '_', at
 * most 64 characters, starting with a letter or digit, so a key can never leave its prefix.
 */
const ENDPOINT_ID = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;

export function assertEndpointId(text: string, what = 'endpoint ID'): string {
  if (typeof text !== 'string' || !ENDPOINT_ID.test(text)) {
    throw new RangeError(`${what} must be 1-64 letters, digits, '-' or '_' starting with a letter or digit, got ${JSON.stringify(text)}`);
  }
  return text;
}

/** Key prefixes: slash-separated segments of letters, digits, '.', '-', '_' (no '.' or '..' segment). */
const PREFIX_SEGMENT = /^[A-Za-z0-9._-]+$/;

export function normalizeKeyPrefix(prefix: string): string {
  const trimmed = prefix.replace(/^\/+|\/+$/g, '');
  if (trimmed === '') return '';
  for (const segment of trimmed.split('/')) {
    if (!PREFIX_SEGMENT.test(segment) || segment === '.' || segment === '..') {
      throw new RangeError(`cache state key prefix ${JSON.stringify(prefix)} has an invalid segment ${JSON.stringify(segment)}`);
    }
  }
  return trimmed;
}

/** `<prefix>/<tenant_id>/<timeline_id>/<endpoint_id>/lfc_state`, every part validated. */
export function cacheStateKey(prefix: string, tenantId: string, timelineId: string, endpointId: string): string {
  const parts = [assertNeonId(tenantId, 'tenant ID'), assertNeonId(timelineId, 'timeline ID'), assertEndpointId(endpointId), 'lfc_state'];
  const p = normalizeKeyPrefix(prefix);
  return p ? `${p}/${parts.join('/')}` : parts.join('/');
}
