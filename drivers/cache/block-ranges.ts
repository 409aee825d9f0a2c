/**
 * Pure block-range arithmetic for the stock backend: ordering captured ranges for prewarm and
 * subtracting the blocks that are already cached. No I/O.
 */
import type { BlockRange, ForkNumber } from '../../model/cache-state';

/** Half-open block interval [start, end). */
export interface Span {
  start: number;
  end: number;
}

/** One relation fork, as a map key. */
export function relForkKey(database: number, tablespace: number, relfilenode: number, fork: number): string {
  return `${database}/${tablespace}/${relfilenode}/${fork}`;
}

/** A captured range with its heat: the highest usage count of its blocks. */
export interface HeatedRange extends BlockRange {
  heat: number;
}

function compareKey(a: BlockRange, b: BlockRange): number {
  return a.tablespace - b.tablespace || a.relfilenode - b.relfilenode || a.fork - b.fork || a.firstBlock - b.firstBlock;
}

/**
 * The prewarm order stored in the state: databases by their hottest range (then OID), and in each
 * database the hottest ranges first, ties in physical order so reads stay mostly sequential.
 * Grouping by database lets prewarm finish one database (and close its connection) before the
 * next; hottest-first matters because prewarm stops when the buffers are full.
 */
export function orderForPrewarm(ranges: readonly HeatedRange[]): BlockRange[] {
  const dbHeat = new Map<number, number>();
  for (const r of ranges) dbHeat.set(r.database, Math.max(dbHeat.get(r.database) ?? 0, r.heat));
  return [...ranges]
    .sort((a, b) => dbHeat.get(b.database)! - dbHeat.get(a.database)! || a.database - b.database || b.heat - a.heat || compareKey(a, b))
    .map(({ database, tablespace, relfilenode, fork, firstBlock, blockCount }) => ({ database, tablespace, relfilenode, fork, firstBlock, blockCount }));
}

/** The `max` hottest ranges (ties in physical order), when there are more. */
export function hottest<T extends HeatedRange>(ranges: readonly T[], max: number): readonly T[] {
  if (ranges.length <= max) return ranges;
  return [...ranges].sort((a, b) => b.heat - a.heat || a.database - b.database || compareKey(a, b)).slice(0, max);
}

/** Sorted, merged spans from possibly unsorted, overlapping ones. */
export function normalizeSpans(spans: readonly Span[]): Span[] {
  const sorted = spans.filter((s) => s.end > s.start).sort((a, b) => a.start - b.start);
  const out: Span[] = [];
  for (const s of sorted) {
    const last = out[out.length - 1];
    if (last && s.start <= last.end) last.end = Math.max(last.end, s.end);
    else out.push({ start: s.start, end: s.end });
  }
  return out;
}

/**
 * Splits `want` into the parts not covered by `cached` (sorted, non-overlapping, as
 * normalizeSpans returns) and counts the covered blocks.
 */
export function subtractCached(want: Span, cached: readonly Span[]): { missing: Span[]; cachedBlocks: number } {
  const missing: Span[] = [];
  let cursor = want.start;
  let cachedBlocks = 0;
  // Binary search for the first cached span that ends after want.start.
  let lo = 0;
  let hi = cached.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (cached[mid]!.end <= want.start) lo = mid + 1;
    else hi = mid;
  }
  for (let i = lo; i < cached.length && cursor < want.end; i++) {
    const c = cached[i]!;
    if (c.start >= want.end) break;
    if (c.start > cursor) missing.push({ start: cursor, end: c.start });
    const coveredEnd = Math.min(c.end, want.end);
    cachedBlocks += coveredEnd - Math.max(c.start, cursor);
    cursor = coveredEnd;
  }
  if (cursor < want.end) missing.push({ start: cursor, end: want.end });
  return { missing, cachedBlocks };
}

export function isForkNumber(n: number): n is ForkNumber {
  return n === 0 || n === 1 || n === 2 || n === 3;
}
