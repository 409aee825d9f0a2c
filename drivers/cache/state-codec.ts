/**
 * The stored cache-state blob. Everything in it is validated here, before any of it reaches SQL:
 * a corrupt, truncated or hostile blob fails with ApplicationFailure type 'CorruptCacheState'.
 *
 * Layout (big-endian):
 *   0  magic "DCCS"
 *   4  u16 format version (1)
 *   6  u16 flags: bits 0-1 compression (0 none, 1 zlib deflate, 2 brotli), bit 2 payload kind
 *      (0 stock block ranges, 1 Neon LFC state); other bits must be 0
 *   8  u32 block size in bytes
 *  12  u32 record count (ranges, or Neon chunks)
 *  16  u32 total pages
 *  20  u32 uncompressed body length
 *  24  u32 compressed body length
 *  28  compressed body
 *  end u32 CRC-32 of header bytes 0-27 followed by the uncompressed body
 * A block-range body is `record count` records of 21 bytes: database, tablespace, relfilenode
 * (u32), fork (u8), first block, block count (u32), in prewarm order.
 *
 * Neon compresses with zstd; Node 20's zlib has no zstd, so this uses deflate (or brotli).
 */
import { brotliCompressSync, brotliDecompressSync, constants as zlibConstants, deflateSync, inflateSync } from 'node:zlib';
import { ApplicationFailure } from '@temporalio/common';
import type { BlockRange, CacheState } from '../../model/cache-state';
import { isForkNumber } from './block-ranges';
import { inspectNeonLfcState } from './neon-lfc-format';
import { nonRetryable } from '../../common/failures';

export const CACHE_STATE_MAGIC = 'DCCS';
export const CACHE_STATE_FORMAT_VERSION = 1;
const HEADER_BYTES = 28;
const RANGE_RECORD_BYTES = 21;
const TRAILER_BYTES = 4;
const COMPRESSION_MASK = 0b11;
const KIND_NEON = 0b100;
const KNOWN_FLAGS = COMPRESSION_MASK | KIND_NEON;
const MAX_BLOCK_NUMBER = 0xfffffffe;

/** Neon's endpoint storage refuses uploads over 100 MiB; so do we, both ways. */
export const MAX_STORED_CACHE_STATE_BYTES = 100 * 1024 * 1024;
/**
 * Default cap on the decompressed body: 32 MiB, 1.6 million ranges (about 130 MB once decoded),
 * which covers 12 GiB of shared_buffers even if no two cached blocks were adjacent.
 */
export const DEFAULT_MAX_UNCOMPRESSED_BYTES = 32 * 1024 * 1024;
/** Most ranges a state may hold; capture keeps the hottest ones beyond that. */
export const MAX_CACHE_STATE_RANGES = Math.floor(DEFAULT_MAX_UNCOMPRESSED_BYTES / RANGE_RECORD_BYTES);

export type Compression = 'none' | 'deflate' | 'brotli';
const COMPRESSION_CODES: Record<Compression, number> = { none: 0, deflate: 1, brotli: 2 };

export const CORRUPT_CACHE_STATE = 'CorruptCacheState';

export function corruptCacheState(problem: string): ApplicationFailure {
  return nonRetryable(CORRUPT_CACHE_STATE, `corrupt cache state: ${problem}`);
}

// CRC-32 (IEEE), table-driven: zlib.crc32 only exists from Node 20.15.
const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

export function crc32(chunks: readonly Uint8Array[]): number {
  let crc = 0xffffffff;
  for (const chunk of chunks) for (let i = 0; i < chunk.length; i++) crc = CRC_TABLE[(crc ^ chunk[i]!) & 0xff]! ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

function isValidBlockSize(n: number): boolean {
  return Number.isInteger(n) && n >= 1024 && n <= 32768 && (n & (n - 1)) === 0;
}

/** Checks ranges as decode does (counts, bounds, forks, no overlap); returns the first problem or undefined. */
export function rangeProblem(ranges: readonly BlockRange[]): string | undefined {
  for (let i = 0; i < ranges.length; i++) {
    const r = ranges[i]!;
    const where = `range ${i}`;
    if (!isForkNumber(r.fork)) return `${where} has fork number ${String(r.fork)}, expected 0-3`;
    if (r.tablespace === 0 || r.relfilenode === 0) return `${where} has a zero tablespace or relfilenode`;
    if (!Number.isInteger(r.blockCount) || r.blockCount < 1) return `${where} has block count ${r.blockCount}`;
    if (r.firstBlock + r.blockCount - 1 > MAX_BLOCK_NUMBER) return `${where} ends past the largest block number`;
  }
  // Overlaps: sort indices (not copies) by relation fork and first block, compare neighbours.
  const order = new Uint32Array(ranges.length);
  for (let i = 0; i < order.length; i++) order[i] = i;
  order.sort((x, y) => {
    const a = ranges[x]!;
    const b = ranges[y]!;
    return a.database - b.database || a.tablespace - b.tablespace || a.relfilenode - b.relfilenode || a.fork - b.fork || a.firstBlock - b.firstBlock;
  });
  for (let j = 1; j < order.length; j++) {
    const a = ranges[order[j - 1]!]!;
    const b = ranges[order[j]!]!;
    if (a.database === b.database && a.tablespace === b.tablespace && a.relfilenode === b.relfilenode && a.fork === b.fork && b.firstBlock < a.firstBlock + a.blockCount) {
      return `ranges ${Math.min(order[j - 1]!, order[j]!)} and ${Math.max(order[j - 1]!, order[j]!)} overlap`;
    }
  }
  return undefined;
}

export interface EncodeOptions {
  compression?: Compression;
  maxUncompressedBytes?: number;
}

/** Serializes and compresses a state. Refuses states decode would refuse. */
export function encodeCacheState(state: CacheState, opts: EncodeOptions = {}): Buffer {
  const compression = opts.compression ?? 'deflate';
  const cap = opts.maxUncompressedBytes ?? DEFAULT_MAX_UNCOMPRESSED_BYTES;
  if (!isValidBlockSize(state.blockSize)) throw new RangeError(`block size ${state.blockSize} is not a power of two in 1024-32768`);
  let body: Buffer;
  let records: number;
  let pages: number;
  if (state.kind === 'block-ranges') {
    const problem = rangeProblem(state.ranges);
    if (problem) throw new RangeError(`cannot encode cache state: ${problem}`);
    records = state.ranges.length;
    body = Buffer.alloc(records * RANGE_RECORD_BYTES);
    pages = 0;
    state.ranges.forEach((r, i) => {
      const at = i * RANGE_RECORD_BYTES;
      body.writeUInt32BE(r.database, at);
      body.writeUInt32BE(r.tablespace, at + 4);
      body.writeUInt32BE(r.relfilenode, at + 8);
      body.writeUInt8(r.fork, at + 12);
      body.writeUInt32BE(r.firstBlock, at + 13);
      body.writeUInt32BE(r.blockCount, at + 17);
      pages += r.blockCount;
    });
  } else {
    const summary = inspectNeonLfcState(state.lfcState);
    records = summary.chunks;
    pages = summary.pages;
    body = Buffer.from(state.lfcState.buffer, state.lfcState.byteOffset, state.lfcState.byteLength);
  }
  if (pages > 0xffffffff) throw new RangeError(`cache state of ${pages} pages is too large to encode`);
  if (body.length > cap) throw new RangeError(`cache state body of ${body.length} bytes exceeds the ${cap}-byte limit`);
  const compressed =
    compression === 'deflate'
      ? deflateSync(body)
      : compression === 'brotli'
        ? brotliCompressSync(body, { params: { [zlibConstants.BROTLI_PARAM_QUALITY]: 5, [zlibConstants.BROTLI_PARAM_SIZE_HINT]: body.length } })
        : body;
  const header = Buffer.alloc(HEADER_BYTES);
  header.write(CACHE_STATE_MAGIC, 0, 'latin1');
  header.writeUInt16BE(CACHE_STATE_FORMAT_VERSION, 4);
  header.writeUInt16BE(COMPRESSION_CODES[compression] | (state.kind === 'neon-lfc' ? KIND_NEON : 0), 6);
  header.writeUInt32BE(state.blockSize, 8);
  header.writeUInt32BE(records, 12);
  header.writeUInt32BE(pages, 16);
  header.writeUInt32BE(body.length, 20);
  header.writeUInt32BE(compressed.length, 24);
  const trailer = Buffer.alloc(TRAILER_BYTES);
  trailer.writeUInt32BE(crc32([header, body]), 0);
  const blob = Buffer.concat([header, compressed, trailer]);
  if (blob.length > MAX_STORED_CACHE_STATE_BYTES) throw new RangeError(`compressed cache state of ${blob.length} bytes exceeds the ${MAX_STORED_CACHE_STATE_BYTES}-byte storage limit`);
  return blob;
}

export interface DecodeOptions {
  maxUncompressedBytes?: number;
}

/** Validates everything and returns the state; throws ApplicationFailure 'CorruptCacheState'. */
export function decodeCacheState(blob: Uint8Array, opts: DecodeOptions = {}): CacheState {
  const cap = opts.maxUncompressedBytes ?? DEFAULT_MAX_UNCOMPRESSED_BYTES;
  const buf = Buffer.from(blob.buffer, blob.byteOffset, blob.byteLength);
  if (buf.length < HEADER_BYTES + TRAILER_BYTES) throw corruptCacheState(`${buf.length} bytes is shorter than the ${HEADER_BYTES + TRAILER_BYTES}-byte header and trailer`);
  if (buf.length > MAX_STORED_CACHE_STATE_BYTES) throw corruptCacheState(`${buf.length} bytes exceeds the ${MAX_STORED_CACHE_STATE_BYTES}-byte limit`);
  const magic = buf.toString('latin1', 0, 4);
  if (magic !== CACHE_STATE_MAGIC) throw corruptCacheState(`bad magic ${JSON.stringify(magic)}, expected ${JSON.stringify(CACHE_STATE_MAGIC)}`);
  const version = buf.readUInt16BE(4);
  if (version !== CACHE_STATE_FORMAT_VERSION) throw corruptCacheState(`format version ${version} is not supported (this build reads ${CACHE_STATE_FORMAT_VERSION})`);
  const flags = buf.readUInt16BE(6);
  if ((flags & ~KNOWN_FLAGS) !== 0) throw corruptCacheState(`unknown flags 0x${flags.toString(16)}`);
  const compressionCode = flags & COMPRESSION_MASK;
  if (compressionCode === 3) throw corruptCacheState('unknown compression method 3');
  const neon = (flags & KIND_NEON) !== 0;
  const blockSize = buf.readUInt32BE(8);
  if (!isValidBlockSize(blockSize)) throw corruptCacheState(`block size ${blockSize} is not a power of two in 1024-32768`);
  const records = buf.readUInt32BE(12);
  const pages = buf.readUInt32BE(16);
  const bodyLength = buf.readUInt32BE(20);
  const compressedLength = buf.readUInt32BE(24);
  if (bodyLength > cap) throw corruptCacheState(`uncompressed size ${bodyLength} exceeds the ${cap}-byte limit`);
  if (!neon && bodyLength !== records * RANGE_RECORD_BYTES) throw corruptCacheState(`${records} ranges need ${records * RANGE_RECORD_BYTES} bytes, header says ${bodyLength}`);
  if (HEADER_BYTES + compressedLength + TRAILER_BYTES !== buf.length) {
    throw corruptCacheState(`blob is ${buf.length} bytes but its header describes ${HEADER_BYTES + compressedLength + TRAILER_BYTES} (truncated or padded)`);
  }
  const compressed = buf.subarray(HEADER_BYTES, HEADER_BYTES + compressedLength);
  let body: Buffer;
  try {
    // maxOutputLength stops a decompression bomb at the declared size instead of exhausting memory.
    const limit = { maxOutputLength: Math.max(bodyLength, 1) };
    body = compressionCode === 1 ? inflateSync(compressed, limit) : compressionCode === 2 ? brotliDecompressSync(compressed, limit) : compressed;
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === 'ERR_BUFFER_TOO_LARGE') throw corruptCacheState(`body decompresses to more than the declared ${bodyLength} bytes`);
    throw corruptCacheState(`body does not decompress (${(err as Error).message})`);
  }
  if (body.length !== bodyLength) throw corruptCacheState(`body decompresses to ${body.length} bytes, header says ${bodyLength}`);
  const expectedCrc = buf.readUInt32BE(buf.length - TRAILER_BYTES);
  if (crc32([buf.subarray(0, HEADER_BYTES), body]) !== expectedCrc) throw corruptCacheState('checksum mismatch');

  if (neon) {
    let summary;
    try {
      summary = inspectNeonLfcState(body);
    } catch (err) {
      throw corruptCacheState((err as Error).message);
    }
    if (summary.chunks !== records || summary.pages !== pages) throw corruptCacheState(`header counts (${records} chunks, ${pages} pages) disagree with the Neon state (${summary.chunks}, ${summary.pages})`);
    return { kind: 'neon-lfc', blockSize, lfcState: Uint8Array.from(body), pages };
  }
  const ranges: BlockRange[] = new Array(records);
  let total = 0;
  for (let i = 0; i < records; i++) {
    const at = i * RANGE_RECORD_BYTES;
    const fork = body.readUInt8(at + 12);
    const range = {
      database: body.readUInt32BE(at),
      tablespace: body.readUInt32BE(at + 4),
      relfilenode: body.readUInt32BE(at + 8),
      fork: fork as BlockRange['fork'],
      firstBlock: body.readUInt32BE(at + 13),
      blockCount: body.readUInt32BE(at + 17),
    };
    ranges[i] = range;
    total += range.blockCount;
  }
  const problem = rangeProblem(ranges);
  if (problem) throw corruptCacheState(problem);
  if (total !== pages) throw corruptCacheState(`ranges hold ${total} pages, header says ${pages}`);
  return { kind: 'block-ranges', blockSize, ranges };
}
