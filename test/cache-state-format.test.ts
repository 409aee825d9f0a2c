import { deflateSync } from 'node:zlib';
import { ApplicationFailure } from '@temporalio/common';
import { describe, expect, it } from 'vitest';
import {
  cacheStateKey,
  mayOffloadPeriodically,
  validResumePoint,
  type BlockRange,
  type CacheState,
  type PrewarmState,
} from '../model/cache-state';
import { hottest, normalizeSpans, orderForPrewarm, subtractCached } from '../drivers/cache/block-ranges';
import { buildNeonLfcState, inspectNeonLfcState } from '../drivers/cache/neon-lfc-format';
import { crc32, decodeCacheState, encodeCacheState } from '../drivers/cache/state-codec';
import { neonId } from './helpers/ids';

const range = (relfilenode: number, firstBlock: number, blockCount: number, fork: BlockRange['fork'] = 0, database = 5): BlockRange => ({
  database,
  tablespace: 1663,
  relfilenode,
  fork,
  firstBlock,
  blockCount,
});

const sample: CacheState = { kind: 'block-ranges', blockSize: 8192, ranges: [range(16384, 0, 10), range(16384, 20, 5), range(16390, 0, 3, 1), range(1262, 0, 1, 0, 0)] };

function expectCorrupt(blob: Uint8Array, pattern: RegExp): void {
  let caught: unknown;
  try {
    decodeCacheState(blob);
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(ApplicationFailure);
  const failure = caught as ApplicationFailure;
  expect(failure.type).toBe('CorruptCacheState');
  expect(failure.nonRetryable).toBe(true);
  expect(failure.message).toMatch(pattern);
}

/** Rewrites a header field of an uncompressed blob and recomputes the checksum, so only the targeted check can fire. */
function withHeader(blob: Buffer, edit: (header: Buffer) => void): Buffer {
  const out = Buffer.from(blob);
  edit(out);
  out.writeUInt32BE(crc32([out.subarray(0, 28), blob.subarray(28, blob.length - 4)]), out.length - 4);
  return out;
}

/** Builds a blob from raw parts, with a correct checksum, bypassing the encoder's own checks. */
function rawBlob(opts: { flags?: number; blockSize?: number; records: number; pages: number; body: Buffer; compress?: boolean; declaredLength?: number }): Buffer {
  const compressed = opts.compress === false ? opts.body : deflateSync(opts.body);
  const header = Buffer.alloc(28);
  header.write('DCCS', 0, 'latin1');
  header.writeUInt16BE(1, 4);
  header.writeUInt16BE(opts.flags ?? (opts.compress === false ? 0 : 1), 6);
  header.writeUInt32BE(opts.blockSize ?? 8192, 8);
  header.writeUInt32BE(opts.records, 12);
  header.writeUInt32BE(opts.pages, 16);
  header.writeUInt32BE(opts.declaredLength ?? opts.body.length, 20);
  header.writeUInt32BE(compressed.length, 24);
  const trailer = Buffer.alloc(4);
  trailer.writeUInt32BE(crc32([header, opts.body]), 0);
  return Buffer.concat([header, compressed, trailer]);
}

function rangeBody(ranges: { db: number; spc: number; rel: number; fork: number; first: number; count: number }[]): Buffer {
  const body = Buffer.alloc(ranges.length * 21);
  ranges.forEach((r, i) => {
    body.writeUInt32BE(r.db, i * 21);
    body.writeUInt32BE(r.spc, i * 21 + 4);
    body.writeUInt32BE(r.rel, i * 21 + 8);
    body.writeUInt8(r.fork, i * 21 + 12);
    body.writeUInt32BE(r.first, i * 21 + 13);
    body.writeUInt32BE(r.count, i * 21 + 17);
  });
  return body;
}

describe('cache state blob', () => {
  it('round-trips block ranges with deflate, brotli and no compression, keeping the order', () => {
    for (const compression of ['deflate', 'brotli', 'none'] as const) {
      const blob = encodeCacheState(sample, { compression });
      expect(decodeCacheState(blob)).toEqual(sample);
    }
  });

  it('compresses a realistic state far below 21 bytes per range', () => {
    const ranges = Array.from({ length: 5000 }, (_, i) => range(16384 + (i % 7), i * 3, 2));
    const blob = encodeCacheState({ kind: 'block-ranges', blockSize: 8192, ranges });
    expect(blob.length).toBeLessThan(ranges.length * 21 * 0.5);
    expect(decodeCacheState(blob)).toEqual({ kind: 'block-ranges', blockSize: 8192, ranges });
  });

  it('round-trips a Neon LFC state byte for byte', () => {
    const lfc = buildNeonLfcState(7, [
      { tablespace: 1663, database: 5, relfilenode: 16384, fork: 0, firstBlock: 0, cached: [0, 1, 2, 127] },
      { tablespace: 1663, database: 5, relfilenode: 16384, fork: 0, firstBlock: 128, cached: [5] },
    ]);
    const blob = encodeCacheState({ kind: 'neon-lfc', blockSize: 8192, lfcState: lfc, pages: 5 });
    const decoded = decodeCacheState(blob);
    expect(decoded.kind).toBe('neon-lfc');
    if (decoded.kind !== 'neon-lfc') return;
    expect(Buffer.from(decoded.lfcState).equals(lfc)).toBe(true);
    expect(decoded.pages).toBe(5);
  });

  it('rejects truncated blobs at every length', () => {
    const blob = encodeCacheState(sample);
    for (let len = 0; len < blob.length; len++) {
      expect(() => decodeCacheState(blob.subarray(0, len)), `length ${len}`).toThrow(ApplicationFailure);
    }
    expectCorrupt(blob.subarray(0, 10), /shorter than/);
    expectCorrupt(blob.subarray(0, blob.length - 1), /truncated or padded/);
    expectCorrupt(Buffer.concat([blob, Buffer.from([0])]), /truncated or padded/);
  });

  it('rejects a wrong magic, an unknown version, unknown flags and a bad block size', () => {
    const blob = encodeCacheState(sample, { compression: 'none' });
    expect(decodeCacheState(withHeader(blob, () => undefined))).toEqual(sample);
    expectCorrupt(withHeader(blob, (h) => h.write('NOPE', 0, 'latin1')), /bad magic "NOPE"/);
    expectCorrupt(withHeader(blob, (h) => h.writeUInt16BE(2, 4)), /format version 2 is not supported/);
    expectCorrupt(withHeader(blob, (h) => h.writeUInt16BE(0x8001, 6)), /unknown flags/);
    expectCorrupt(withHeader(blob, (h) => h.writeUInt16BE(3, 6)), /unknown compression/);
    expectCorrupt(withHeader(blob, (h) => h.writeUInt32BE(8191, 8)), /block size 8191/);
  });

  it('rejects a checksum mismatch (one flipped bit in the body or the trailer)', () => {
    const blob = encodeCacheState(sample, { compression: 'none' });
    const flipped = Buffer.from(blob);
    flipped[28 + 3]! ^= 1;
    expectCorrupt(flipped, /checksum mismatch/);
    const badTrailer = Buffer.from(blob);
    badTrailer[badTrailer.length - 1]! ^= 0x80;
    expectCorrupt(badTrailer, /checksum mismatch/);
  });

  it('rejects huge counts before allocating or decompressing anything', () => {
    const body = rangeBody([{ db: 5, spc: 1663, rel: 16384, fork: 0, first: 0, count: 1 }]);
    expectCorrupt(rawBlob({ records: 0xffffffff, pages: 1, body, declaredLength: 0xffffffff }), /exceeds the 33554432-byte limit/);
    expectCorrupt(rawBlob({ records: 1000, pages: 1, body }), /1000 ranges need 21000 bytes, header says 21/);
  });

  it('stops a decompression bomb at the declared size', () => {
    // 64 MiB of zeros deflates to ~64 KiB; the header claims 21 bytes (one range).
    const bomb = deflateSync(Buffer.alloc(64 * 1024 * 1024));
    const header = Buffer.alloc(28);
    header.write('DCCS', 0, 'latin1');
    header.writeUInt16BE(1, 4);
    header.writeUInt16BE(1, 6);
    header.writeUInt32BE(8192, 8);
    header.writeUInt32BE(1, 12);
    header.writeUInt32BE(1, 16);
    header.writeUInt32BE(21, 20);
    header.writeUInt32BE(bomb.length, 24);
    const blob = Buffer.concat([header, bomb, Buffer.alloc(4)]);
    const before = process.memoryUsage().arrayBuffers;
    expectCorrupt(blob, /decompresses to more than the declared 21 bytes/);
    expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(16 * 1024 * 1024);
    expectCorrupt(rawBlob({ records: 1, pages: 1, body: Buffer.from('not a range body, too long'), declaredLength: 21 }), /more than the declared 21 bytes/);
  });

  it('rejects a body that is not a zlib stream', () => {
    const body = rangeBody([{ db: 5, spc: 1663, rel: 16384, fork: 0, first: 0, count: 1 }]);
    const blob = rawBlob({ records: 1, pages: 1, body, compress: false, flags: 1 });
    expectCorrupt(blob, /does not decompress/);
  });

  it('rejects overlapping, out-of-range and malformed ranges', () => {
    const ok = { db: 5, spc: 1663, rel: 16384, fork: 0, first: 0, count: 10 };
    const cases: [Parameters<typeof rangeBody>[0], RegExp][] = [
      [[ok, { ...ok, first: 9, count: 3 }], /ranges 0 and 1 overlap/],
      [[ok, { ...ok, first: 0, count: 1 }], /overlap/],
      [[{ ...ok, first: 0xfffffff0, count: 0x20 }], /ends past the largest block number/],
      [[{ ...ok, first: 0xffffffff, count: 1 }], /ends past the largest block number/],
      [[{ ...ok, count: 0 }], /block count 0/],
      [[{ ...ok, fork: 4 }], /fork number 4/],
      [[{ ...ok, rel: 0 }], /zero tablespace or relfilenode/],
      [[{ ...ok, spc: 0 }], /zero tablespace or relfilenode/],
    ];
    for (const [ranges, pattern] of cases) {
      const pages = ranges.reduce((n, r) => n + r.count, 0);
      expectCorrupt(rawBlob({ records: ranges.length, pages: pages > 0xffffffff ? 0 : pages, body: rangeBody(ranges) }), pattern);
    }
    // Same blocks in a different fork or relation do not overlap.
    const distinct = [ok, { ...ok, fork: 1 }, { ...ok, rel: 16385 }, { ...ok, db: 6 }];
    expect(decodeCacheState(rawBlob({ records: 4, pages: 40, body: rangeBody(distinct) })).kind).toBe('block-ranges');
    expectCorrupt(rawBlob({ records: 4, pages: 41, body: rangeBody(distinct) }), /ranges hold 40 pages, header says 41/);
  });

  it('refuses to encode a state it could not decode', () => {
    expect(() => encodeCacheState({ kind: 'block-ranges', blockSize: 8192, ranges: [range(1, 0, 5), range(1, 4, 2)] })).toThrow(/overlap/);
    expect(() => encodeCacheState({ kind: 'block-ranges', blockSize: 1000, ranges: [] })).toThrow(/block size/);
  });

  it('validates an embedded Neon state: magic, size, forks and page count', () => {
    const good = buildNeonLfcState(2, [{ tablespace: 1663, database: 5, relfilenode: 16384, fork: 0, firstBlock: 0, cached: [0, 3] }]);
    expect(inspectNeonLfcState(good)).toEqual({ chunks: 1, pages: 2, chunkSizeLog: 2 });
    const wrap = (lfc: Buffer, chunks: number, pages: number) => rawBlob({ flags: 1 | 4, records: chunks, pages, body: lfc });
    const badMagic = Buffer.from(good);
    badMagic.writeUInt32LE(0xdeadbeef, 0);
    expectCorrupt(wrap(badMagic, 1, 2), /magic 0xdeadbeef/);
    const hugeChunks = Buffer.from(good);
    hugeChunks.writeUInt32LE(0x7fffffff, 4);
    expectCorrupt(wrap(hugeChunks, 0x7fffffff, 2), /chunks of 2\^2 pages need/);
    const badFork = Buffer.from(good);
    badFork.writeInt32LE(9, 16 + 12);
    expectCorrupt(wrap(badFork, 1, 2), /fork number 9/);
    const lyingPages = Buffer.from(good);
    lyingPages.writeUInt32LE(3, 8);
    expectCorrupt(wrap(lyingPages, 1, 3), /claims 3 pages but its bitmap marks 2/);
    const hugeLog = Buffer.from(good);
    hugeLog.writeUInt16LE(40, 12);
    expectCorrupt(wrap(hugeLog, 1, 2), /chunk size log 40/);
    expectCorrupt(wrap(good, 2, 2), /disagree/);
  });
});

describe('block range helpers', () => {
  it('subtracts cached spans and counts them', () => {
    const cached = normalizeSpans([
      { start: 8, end: 12 },
      { start: 2, end: 4 },
      { start: 3, end: 5 },
      { start: 20, end: 30 },
    ]);
    expect(cached).toEqual([
      { start: 2, end: 5 },
      { start: 8, end: 12 },
      { start: 20, end: 30 },
    ]);
    expect(subtractCached({ start: 0, end: 25 }, cached)).toEqual({
      missing: [
        { start: 0, end: 2 },
        { start: 5, end: 8 },
        { start: 12, end: 20 },
      ],
      cachedBlocks: 3 + 4 + 5,
    });
    expect(subtractCached({ start: 9, end: 10 }, cached)).toEqual({ missing: [], cachedBlocks: 1 });
    expect(subtractCached({ start: 30, end: 40 }, cached)).toEqual({ missing: [{ start: 30, end: 40 }], cachedBlocks: 0 });
    expect(subtractCached({ start: 4, end: 9 }, cached)).toEqual({ missing: [{ start: 5, end: 8 }], cachedBlocks: 2 });
  });

  it('orders by database heat, then heat, then physical order', () => {
    const hr = (database: number, relfilenode: number, firstBlock: number, heat: number) => ({ ...range(relfilenode, firstBlock, 1, 0, database), heat });
    const ordered = orderForPrewarm([hr(7, 1, 0, 1), hr(5, 2, 4, 3), hr(5, 2, 0, 3), hr(7, 3, 0, 5), hr(5, 1, 0, 1)]);
    expect(ordered.map((r) => [r.database, r.relfilenode, r.firstBlock])).toEqual([
      [7, 3, 0],
      [7, 1, 0],
      [5, 2, 0],
      [5, 2, 4],
      [5, 1, 0],
    ]);
    expect(ordered[0]).not.toHaveProperty('heat');
  });

  it('keeps the hottest ranges when there are too many', () => {
    const hr = (relfilenode: number, heat: number) => ({ ...range(relfilenode, 0, 1), heat });
    const all = [hr(1, 1), hr(2, 5), hr(3, 2), hr(4, 5), hr(5, 0)];
    expect(hottest(all, 10)).toBe(all);
    expect(hottest(all, 3).map((r) => r.relfilenode)).toEqual([2, 4, 3]);
  });
});

describe('model: resume points, keys, offload guard', () => {
  const state: CacheState = { kind: 'block-ranges', blockSize: 8192, ranges: [range(1, 0, 10), range(2, 0, 5), range(3, 0, 7)] };

  it('accepts consistent resume points and rejects the rest', () => {
    expect(validResumePoint(state, { rangeIndex: 1, blockOffset: 2, prewarmed: 9, skipped: 3 })).toEqual({ rangeIndex: 1, blockOffset: 2, prewarmed: 9, skipped: 3 });
    expect(validResumePoint(state, { rangeIndex: 3, blockOffset: 0, prewarmed: 22, skipped: 0 })).toBeDefined();
    expect(validResumePoint(state, { rangeIndex: 1, blockOffset: 2, prewarmed: 9, skipped: 2 })).toBeUndefined();
    expect(validResumePoint(state, { rangeIndex: 1, blockOffset: 5, prewarmed: 15, skipped: 0 })).toBeUndefined();
    expect(validResumePoint(state, { rangeIndex: 4, blockOffset: 0, prewarmed: 22, skipped: 0 })).toBeUndefined();
    expect(validResumePoint(state, { rangeIndex: -1, blockOffset: 0, prewarmed: 0, skipped: 0 })).toBeUndefined();
    expect(validResumePoint(state, 'garbage')).toBeUndefined();
    expect(validResumePoint(state, null)).toBeUndefined();
  });

  it('builds keys only from valid IDs', () => {
    const tenant = neonId();
    const timeline = neonId();
    expect(cacheStateKey('lfc/', tenant, timeline, 'ep-cool-darkness-123456')).toBe(`lfc/${tenant}/${timeline}/ep-cool-darkness-123456/lfc_state`);
    expect(cacheStateKey('', tenant, timeline, 'ep-1')).toBe(`${tenant}/${timeline}/ep-1/lfc_state`);
    expect(() => cacheStateKey('lfc', tenant, timeline, '../other')).toThrow(/endpoint ID/);
    expect(() => cacheStateKey('lfc', tenant, timeline, 'ep/x')).toThrow(/endpoint ID/);
    expect(() => cacheStateKey('lfc', tenant, timeline, '')).toThrow(/endpoint ID/);
    expect(() => cacheStateKey('lfc', '../../x', timeline, 'ep-1')).toThrow(/tenant ID/);
    expect(() => cacheStateKey('lfc', tenant, tenant.toUpperCase(), 'ep-1')).toThrow(/timeline ID/);
    expect(() => cacheStateKey('a/../b', tenant, timeline, 'ep-1')).toThrow(/prefix/);
  });

  it('allows periodic offload only after a good or absent prewarm', () => {
    const states: [PrewarmState, boolean][] = [
      [{ status: 'not_prewarmed' }, true],
      [{ status: 'skipped' }, true],
      [{ status: 'completed', total: 1, prewarmed: 1, skipped: 0, state_download_time_ms: 0, uncompress_time_ms: 0, prewarm_time_ms: 0 }, true],
      [{ status: 'prewarming' }, false],
      [{ status: 'failed', error: 'x' }, false],
      [{ status: 'cancelled' }, false],
    ];
    for (const [s, allowed] of states) expect(mayOffloadPeriodically(s), s.status).toBe(allowed);
  });
});
