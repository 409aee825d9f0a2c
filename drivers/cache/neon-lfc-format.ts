/**
 * Structural check of the state neon.get_local_cache_state() returns, done before the blob goes
 * anywhere near neon.prewarm_local_cache(): a crafted state once crashed the server.
 *
 * Layout (the bytea payload of pgxn/neon's FileCacheState, server byte order, little-endian on
 * every platform Neon ships): magic u32 = 0xfcfcfcfc, n_chunks u32, n_pages u32,
 * chunk_size_log u16, 2 bytes padding, n_chunks BufferTags of 20 bytes (tablespace, database,
 * relfilenode, fork, first block; u32 each), then a bitmap of n_chunks << chunk_size_log bits
 * marking the cached pages. Older Neon releases had no n_pages field; this checks the current one.
 */

import type { BlockRange, ForkNumber } from '../../model/cache-state';

export const NEON_LFC_MAGIC = 0xfcfcfcfc;
const HEADER_BYTES = 16;
const BUFFER_TAG_BYTES = 20;
/** Neon's chunks are 1 MB (128 pages) by default; anything far beyond is not a real state. */
const MAX_CHUNK_SIZE_LOG = 16;

export interface NeonLfcSummary {
  chunks: number;
  pages: number;
  chunkSizeLog: number;
}

function popcount8(b: number): number {
  b = b - ((b >> 1) & 0x55);
  b = (b & 0x33) + ((b >> 2) & 0x33);
  return (b + (b >> 4)) & 0x0f;
}

/** Validates the blob and returns its counts; throws an Error naming the first problem. */
export function inspectNeonLfcState(bytes: Uint8Array): NeonLfcSummary {
  if (bytes.length < HEADER_BYTES) throw new Error(`Neon LFC state is ${bytes.length} bytes, shorter than its ${HEADER_BYTES}-byte header`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const magic = view.getUint32(0, true);
  if (magic !== NEON_LFC_MAGIC) throw new Error(`Neon LFC state has magic 0x${magic.toString(16)}, expected 0x${NEON_LFC_MAGIC.toString(16)}`);
  const chunks = view.getUint32(4, true);
  const pages = view.getUint32(8, true);
  const chunkSizeLog = view.getUint16(12, true);
  if (chunkSizeLog > MAX_CHUNK_SIZE_LOG) throw new Error(`Neon LFC state has chunk size log ${chunkSizeLog}, at most ${MAX_CHUNK_SIZE_LOG} is valid`);
  const bitmapBits = chunks * 2 ** chunkSizeLog;
  const expected = HEADER_BYTES + chunks * BUFFER_TAG_BYTES + Math.ceil(bitmapBits / 8);
  if (bytes.length !== expected) throw new Error(`Neon LFC state is ${bytes.length} bytes, but ${chunks} chunks of 2^${chunkSizeLog} pages need ${expected}`);
  for (let i = 0; i < chunks; i++) {
    const fork = view.getInt32(HEADER_BYTES + i * BUFFER_TAG_BYTES + 12, true);
    if (fork < 0 || fork > 3) throw new Error(`Neon LFC state chunk ${i} has fork number ${fork}, expected 0-3`);
  }
  let counted = 0;
  const bitmapStart = HEADER_BYTES + chunks * BUFFER_TAG_BYTES;
  for (let i = bitmapStart; i < bytes.length; i++) counted += popcount8(bytes[i]!);
  if (counted !== pages) throw new Error(`Neon LFC state claims ${pages} pages but its bitmap marks ${counted}`);
  return { chunks, pages, chunkSizeLog };
}

/** Builds a well-formed state (tests and the contract-test mock use it). */
export function buildNeonLfcState(chunkSizeLog: number, chunks: { tablespace: number; database: number; relfilenode: number; fork: number; firstBlock: number; cached: number[] }[]): Buffer {
  const pagesPerChunk = 2 ** chunkSizeLog;
  const bitmapBytes = Math.ceil((chunks.length * pagesPerChunk) / 8);
  const out = Buffer.alloc(HEADER_BYTES + chunks.length * BUFFER_TAG_BYTES + bitmapBytes);
  out.writeUInt32LE(NEON_LFC_MAGIC, 0);
  out.writeUInt32LE(chunks.length, 4);
  out.writeUInt16LE(chunkSizeLog, 12);
  let pages = 0;
  const bitmapStart = HEADER_BYTES + chunks.length * BUFFER_TAG_BYTES;
  chunks.forEach((c, i) => {
    const at = HEADER_BYTES + i * BUFFER_TAG_BYTES;
    out.writeUInt32LE(c.tablespace, at);
    out.writeUInt32LE(c.database, at + 4);
    out.writeUInt32LE(c.relfilenode, at + 8);
    out.writeInt32LE(c.fork, at + 12);
    out.writeUInt32LE(c.firstBlock, at + 16);
    for (const page of new Set(c.cached)) {
      if (page < 0 || page >= pagesPerChunk) throw new RangeError(`page ${page} is outside a chunk of ${pagesPerChunk}`);
      const bit = i * pagesPerChunk + page;
      out[bitmapStart + (bit >> 3)]! |= 1 << (bit & 7);
      pages++;
    }
  });
  out.writeUInt32LE(pages, 8);
  return out;
}

/** Neon's LFC chunk: 128 pages (1 MiB of 8 KiB pages), its default and what its states use. */
export const NEON_DEFAULT_CHUNK_SIZE_LOG = 7;

/** One chunk of a state: its buffer tag and the offsets of its cached pages. */
interface Chunk {
  tablespace: number;
  database: number;
  relfilenode: number;
  fork: number;
  firstBlock: number;
  cached: number[];
}

/**
 * Block ranges (a stock compute's shared_buffers) as a Neon LFC state: each range's blocks go into
 * chunk-aligned chunks (the tag's block is the first block of the chunk, as the LFC keys them),
 * chunks in the order the ranges first reach them, so the hottest stay first.
 */
export function blockRangesToNeonLfcState(ranges: readonly BlockRange[], chunkSizeLog = NEON_DEFAULT_CHUNK_SIZE_LOG): Buffer {
  const pagesPerChunk = 2 ** chunkSizeLog;
  const chunks = new Map<string, Chunk>();
  for (const r of ranges) {
    for (let block = r.firstBlock; block < r.firstBlock + r.blockCount; block++) {
      const offset = block % pagesPerChunk;
      const firstBlock = block - offset;
      const key = `${r.tablespace}/${r.database}/${r.relfilenode}/${r.fork}/${firstBlock}`;
      let chunk = chunks.get(key);
      if (!chunk) {
        chunk = { tablespace: r.tablespace, database: r.database, relfilenode: r.relfilenode, fork: r.fork, firstBlock, cached: [] };
        chunks.set(key, chunk);
      }
      chunk.cached.push(offset);
    }
  }
  return buildNeonLfcState(chunkSizeLog, [...chunks.values()]);
}

/**
 * A Neon LFC state as block ranges, in chunk order: every run of cached pages of a chunk is a
 * range, joined with the one before when it continues it. Validate with inspectNeonLfcState first.
 */
export function neonLfcStateToBlockRanges(bytes: Uint8Array): BlockRange[] {
  const { chunks, chunkSizeLog } = inspectNeonLfcState(bytes);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const pagesPerChunk = 2 ** chunkSizeLog;
  const bitmapStart = HEADER_BYTES + chunks * BUFFER_TAG_BYTES;
  const ranges: BlockRange[] = [];
  for (let i = 0; i < chunks; i++) {
    const at = HEADER_BYTES + i * BUFFER_TAG_BYTES;
    const tag = {
      tablespace: view.getUint32(at, true),
      database: view.getUint32(at + 4, true),
      relfilenode: view.getUint32(at + 8, true),
      fork: view.getInt32(at + 12, true) as ForkNumber,
    };
    const firstBlock = view.getUint32(at + 16, true);
    for (let page = 0; page < pagesPerChunk; page++) {
      const bit = i * pagesPerChunk + page;
      if ((bytes[bitmapStart + (bit >> 3)]! & (1 << (bit & 7))) === 0) continue;
      const block = firstBlock + page;
      const last = ranges[ranges.length - 1];
      if (last && last.tablespace === tag.tablespace && last.database === tag.database && last.relfilenode === tag.relfilenode && last.fork === tag.fork && last.firstBlock + last.blockCount === block) {
        last.blockCount += 1;
      } else {
        ranges.push({ ...tag, firstBlock: block, blockCount: 1 });
      }
    }
  }
  return ranges;
}
