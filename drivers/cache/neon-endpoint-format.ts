/**
 * The cache state as Neon computes keep it in endpoint storage (compute_tools/src/compute_prewarm.rs):
 * the bytes neon.get_local_cache_state() returns (pgxn/neon's FileCacheState, see
 * neon-lfc-format.ts), zstd-compressed, and nothing else. Using it on the endpoint storage path
 * means a state offloaded by a Neon compute prewarms a compute here and the reverse:
 *
 * - A Neon backend stores and loads the LFC state as it is.
 * - A stock backend stores its shared_buffers ranges as LFC chunks of 128 pages, and loads an
 *   LFC state as the block ranges its chunks mark cached.
 *
 * The format records no page size: Neon builds use PostgreSQL's default 8 KiB, so a state read
 * here claims 8 KiB pages and a state of other pages is refused.
 */
import { compress, decompress, init } from '@bokuweb/zstd-wasm';
import type { CacheState } from '../../model/cache-state';
import { incompatibleCacheState } from './backend';
import { blockRangesToNeonLfcState, inspectNeonLfcState, neonLfcStateToBlockRanges } from './neon-lfc-format';
import { corruptCacheState, DEFAULT_MAX_UNCOMPRESSED_BYTES, MAX_STORED_CACHE_STATE_BYTES, rangeProblem } from './state-codec';

export const NEON_PAGE_BYTES = 8192;
const ZSTD_MAGIC = 0xfd2fb528;
/** zstd's default level, as Neon's encoder uses. */
const ZSTD_LEVEL = 3;

let ready: Promise<void> | undefined;
/** The zstd WebAssembly module loads once, on first use. */
const zstd = (): Promise<void> => (ready ??= init());

/**
 * The decompressed size a zstd frame header declares (RFC 8878 3.1.1.1), or undefined when the
 * frame does not say (Neon's streaming encoder does not). Throws on a blob that is no zstd frame.
 */
export function zstdDeclaredSize(blob: Uint8Array): number | undefined {
  if (blob.length < 6) throw new Error(`${blob.length} bytes is too short for a zstd frame`);
  const view = new DataView(blob.buffer, blob.byteOffset, blob.byteLength);
  if (view.getUint32(0, true) !== ZSTD_MAGIC) throw new Error('not zstd-compressed (bad magic)');
  const descriptor = blob[4]!;
  const fcsFlag = descriptor >> 6;
  const singleSegment = (descriptor >> 5) & 1;
  const dictIdBytes = [0, 1, 2, 4][descriptor & 3]!;
  const fcsBytes = fcsFlag === 0 ? singleSegment : [0, 2, 4, 8][fcsFlag]!;
  if (fcsBytes === 0) return undefined;
  const at = 5 + (singleSegment ? 0 : 1) + dictIdBytes;
  if (blob.length < at + fcsBytes) throw new Error('zstd frame header is truncated');
  if (fcsBytes === 1) return blob[at]!;
  if (fcsBytes === 2) return view.getUint16(at, true) + 256;
  if (fcsBytes === 4) return view.getUint32(at, true);
  return Number(view.getBigUint64(at, true));
}

/** Compresses the state as Neon stores it. */
export async function encodeNeonEndpointState(state: CacheState): Promise<Buffer> {
  if (state.blockSize !== NEON_PAGE_BYTES) throw incompatibleCacheState(`Neon's state format holds ${NEON_PAGE_BYTES}-byte pages, this state has ${state.blockSize}-byte blocks`);
  let raw: Uint8Array;
  if (state.kind === 'neon-lfc') {
    inspectNeonLfcState(state.lfcState);
    raw = state.lfcState;
  } else {
    const problem = rangeProblem(state.ranges);
    if (problem) throw new RangeError(`cannot encode cache state: ${problem}`);
    raw = blockRangesToNeonLfcState(state.ranges);
  }
  if (raw.length > DEFAULT_MAX_UNCOMPRESSED_BYTES) throw new RangeError(`cache state of ${raw.length} bytes exceeds the ${DEFAULT_MAX_UNCOMPRESSED_BYTES}-byte limit`);
  await zstd();
  const blob = Buffer.from(compress(raw, ZSTD_LEVEL));
  if (blob.length > MAX_STORED_CACHE_STATE_BYTES) throw new RangeError(`compressed cache state of ${blob.length} bytes exceeds the ${MAX_STORED_CACHE_STATE_BYTES}-byte storage limit`);
  return blob;
}

/**
 * Decompresses and validates a state Neon's way; throws ApplicationFailure 'CorruptCacheState'.
 * Decompression never allocates past the cap, whatever the frame claims.
 */
export async function decodeNeonEndpointState(blob: Uint8Array, cap = DEFAULT_MAX_UNCOMPRESSED_BYTES): Promise<CacheState> {
  let declared: number | undefined;
  try {
    declared = zstdDeclaredSize(blob);
  } catch (err) {
    throw corruptCacheState((err as Error).message);
  }
  if (declared !== undefined && declared > cap) throw corruptCacheState(`uncompressed size ${declared} exceeds the ${cap}-byte limit`);
  await zstd();
  let raw: Uint8Array | undefined;
  let lastError: unknown;
  // Without a declared size, grow the output buffer until the frame fits or the cap is reached.
  for (let capacity = Math.min(cap, Math.max(1 << 20, blob.length * 8)); ; capacity = Math.min(cap, capacity * 4)) {
    try {
      raw = decompress(blob, { defaultHeapSize: capacity });
      break;
    } catch (err) {
      lastError = err;
      if (declared !== undefined || capacity >= cap) break;
    }
  }
  if (!raw) throw corruptCacheState(`does not zstd-decompress within ${cap} bytes (${(lastError as Error).message})`);
  let pages: number;
  try {
    pages = inspectNeonLfcState(raw).pages;
  } catch (err) {
    throw corruptCacheState((err as Error).message);
  }
  return { kind: 'neon-lfc', blockSize: NEON_PAGE_BYTES, lfcState: Uint8Array.from(raw), pages };
}

/** A Neon LFC state as the block ranges a stock compute loads; throws 'CorruptCacheState' if they do not hold together. */
export function neonStateAsBlockRanges(state: Extract<CacheState, { kind: 'neon-lfc' }>): Extract<CacheState, { kind: 'block-ranges' }> {
  const ranges = neonLfcStateToBlockRanges(state.lfcState);
  const problem = rangeProblem(ranges);
  if (problem) throw corruptCacheState(problem);
  return { kind: 'block-ranges', blockSize: state.blockSize, ranges };
}

