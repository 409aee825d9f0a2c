/**
 * PostgreSQL 15 WAL on disk: segment file names, writing a byte range into segment files, and a
 * record walker that validates what PostgreSQL's own reader validates (page headers, xl_prev
 * chain, CRC32C) so the pageserver knows exactly where the valid WAL ends before replaying it.
 */
import { constants, promises as fsp } from 'node:fs';
import path from 'node:path';
import { formatLsn } from '../../../model/lsn';
import { crc32cFinish, crc32cInit, crc32cUpdate } from '../pg-control';

/** PG timeline ID: the dev storage never promotes, so every WAL file is on timeline 1. */
export const PG_TIMELINE = 1;
const XLOG_PAGE_MAGIC = 0xd110; // PostgreSQL 15
const XLP_FIRST_IS_CONTRECORD = 0x0001;
const XLP_LONG_HEADER = 0x0002;
const SHORT_PAGE_HEADER = 24;
const LONG_PAGE_HEADER = 40;
const RECORD_HEADER = 24;
const RECORD_CRC_OFFSET = 20;
const RM_XLOG_ID = 0;
const XLOG_SWITCH = 0x40;

export interface WalGeometry {
  segSize: number;
  pageSize: number;
  maxAlign: number;
}

export const DEFAULT_GEOMETRY: WalGeometry = { segSize: 16 * 1024 * 1024, pageSize: 8192, maxAlign: 8 };

export function segmentNo(lsn: bigint, g: WalGeometry): bigint {
  return lsn / BigInt(g.segSize);
}

export function segmentFileName(segNo: bigint, g: WalGeometry): string {
  const perId = 0x100000000n / BigInt(g.segSize);
  const hex = (n: bigint | number) => n.toString(16).toUpperCase().padStart(8, '0');
  return `${hex(PG_TIMELINE)}${hex(segNo / perId)}${hex(segNo % perId)}`;
}

/** The segment number of a WAL file name on timeline 1, or undefined for anything else. */
export function parseSegmentFileName(name: string, g: WalGeometry): bigint | undefined {
  const m = /^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$/.exec(name);
  if (!m || Number.parseInt(m[1]!, 16) !== PG_TIMELINE) return undefined;
  const perId = 0x100000000n / BigInt(g.segSize);
  return BigInt(`0x${m[2]}`) * perId + BigInt(`0x${m[3]}`);
}

function maxAlign(n: bigint, g: WalGeometry): bigint {
  const a = BigInt(g.maxAlign);
  return ((n + a - 1n) / a) * a;
}

/** Reads WAL pages from the segment files of a pg_wal directory; bytes at or after `limit` read as absent. */
export class WalDirReader {
  private cachedPageLsn = -1n;
  private cachedPage: Buffer | null = null;
  private readonly handles = new Map<bigint, fsp.FileHandle | null>();

  constructor(
    private readonly walDir: string,
    private readonly g: WalGeometry,
  ) {}

  private async handle(segNo: bigint): Promise<fsp.FileHandle | null> {
    if (!this.handles.has(segNo)) {
      const file = path.join(this.walDir, segmentFileName(segNo, this.g));
      this.handles.set(segNo, await fsp.open(file, 'r').catch(() => null));
    }
    return this.handles.get(segNo)!;
  }

  /** The page starting at `pageLsn`, or null if its segment file does not exist. */
  async page(pageLsn: bigint): Promise<Buffer | null> {
    if (pageLsn === this.cachedPageLsn) return this.cachedPage;
    const fh = await this.handle(segmentNo(pageLsn, this.g));
    let page: Buffer | null = null;
    if (fh) {
      page = Buffer.alloc(this.g.pageSize);
      const { bytesRead } = await fh.read(page, 0, this.g.pageSize, Number(pageLsn % BigInt(this.g.segSize)));
      if (bytesRead < this.g.pageSize) page = null;
    }
    this.cachedPageLsn = pageLsn;
    this.cachedPage = page;
    return page;
  }

  async close(): Promise<void> {
    for (const fh of this.handles.values()) await fh?.close();
    this.handles.clear();
  }
}

export interface WalkResult {
  /** Start of the last complete, valid record (undefined if none was read). */
  lastRecordStart: bigint | undefined;
  /** End of the last complete record (MAXALIGNed, as PostgreSQL's EndRecPtr) or the start position if none. */
  end: bigint;
  records: number;
  /** Why the walk stopped at `end`. */
  stop: 'reached-limit' | 'incomplete-record' | 'end-of-wal' | 'invalid';
  /** For 'invalid' and 'end-of-wal': what was found at `end`. */
  detail?: string;
}

class StopWalk extends Error {
  constructor(
    public readonly stop: WalkResult['stop'],
    message: string,
  ) {
    super(message);
  }
}

/**
 * Walks WAL records from `start` (a record boundary). Records must end at or before `limit`
 * (exclusive upper bound of the bytes that exist) to count. `expectedPrev` is the start of the
 * record before `start`; each record's xl_prev must point at its predecessor.
 */
export async function walkWal(
  reader: WalDirReader,
  g: WalGeometry,
  opts: { start: bigint; limit?: bigint; expectedPrev?: bigint },
): Promise<WalkResult> {
  const page = BigInt(g.pageSize);
  const seg = BigInt(g.segSize);
  const limit = opts.limit;
  let pos = opts.start;
  let prev = opts.expectedPrev;
  let lastRecordStart: bigint | undefined;
  let records = 0;

  /** Validates the header of the page at `pageLsn` and returns its size and remaining-length field. */
  const pageHeader = async (pageLsn: bigint, continuing: boolean): Promise<{ size: number; remLen: number }> => {
    if (limit !== undefined && pageLsn + BigInt(SHORT_PAGE_HEADER) > limit) {
      throw new StopWalk('incomplete-record', `WAL ends at the page boundary ${formatLsn(pageLsn)}`);
    }
    const buf = await reader.page(pageLsn);
    if (!buf) throw new StopWalk('end-of-wal', `no WAL segment file holds ${formatLsn(pageLsn)}`);
    const magic = buf.readUInt16LE(0);
    if (magic === 0 && buf.readBigUInt64LE(8) === 0n) throw new StopWalk('end-of-wal', `page ${formatLsn(pageLsn)} is empty`);
    if (magic !== XLOG_PAGE_MAGIC) throw new StopWalk('invalid', `bad page magic 0x${magic.toString(16)} at ${formatLsn(pageLsn)}`);
    const info = buf.readUInt16LE(2);
    const tli = buf.readUInt32LE(4);
    const pageAddr = buf.readBigUInt64LE(8);
    if (pageAddr !== pageLsn) throw new StopWalk('invalid', `page at ${formatLsn(pageLsn)} claims address ${formatLsn(pageAddr)} (stale or misplaced WAL)`);
    if (tli !== PG_TIMELINE) throw new StopWalk('invalid', `page at ${formatLsn(pageLsn)} is on PG timeline ${tli}, expected ${PG_TIMELINE}`);
    const long = (info & XLP_LONG_HEADER) !== 0;
    if (long !== (pageLsn % seg === 0n)) throw new StopWalk('invalid', `page at ${formatLsn(pageLsn)} has a wrong header type`);
    if (continuing && (info & XLP_FIRST_IS_CONTRECORD) === 0) {
      throw new StopWalk('invalid', `page at ${formatLsn(pageLsn)} does not continue the record before it`);
    }
    return { size: long ? LONG_PAGE_HEADER : SHORT_PAGE_HEADER, remLen: buf.readUInt32LE(16) };
  };

  /** Reads `n` record bytes starting at `at`, crossing page headers; returns the bytes and the end position. */
  const readRecordBytes = async (at: bigint, n: number, recStart: bigint): Promise<{ bytes: Buffer; end: bigint }> => {
    const out = Buffer.alloc(n);
    let done = 0;
    let p = at;
    while (done < n) {
      if (p % page === 0n) {
        const h = await pageHeader(p, true);
        if (h.remLen !== n - done) {
          throw new StopWalk('invalid', `continuation page at ${formatLsn(p)} has xlp_rem_len ${h.remLen}, expected ${n - done} for the record at ${formatLsn(recStart)}`);
        }
        p += BigInt(h.size);
      }
      const room = Number(page - (p % page));
      const take = Math.min(room, n - done);
      if (limit !== undefined && p + BigInt(take) > limit) {
        throw new StopWalk('incomplete-record', `record at ${formatLsn(recStart)} continues past ${formatLsn(limit)}`);
      }
      const buf = await reader.page(p - (p % page));
      if (!buf) throw new StopWalk('incomplete-record', `record at ${formatLsn(recStart)} continues into a missing segment`);
      const off = Number(p % page);
      buf.copy(out, done, off, off + take);
      done += take;
      p += BigInt(take);
    }
    return { bytes: out, end: p };
  };

  let end = opts.start;
  try {
    for (;;) {
      if (limit !== undefined && pos >= limit) throw new StopWalk('reached-limit', 'reached the limit');
      let recStart = pos;
      if (recStart % page === 0n) recStart += BigInt((await pageHeader(recStart, false)).size);
      if (limit !== undefined && recStart + 4n > limit) throw new StopWalk('incomplete-record', `record header at ${formatLsn(recStart)} is cut off`);
      const first = await reader.page(recStart - (recStart % page));
      if (!first) throw new StopWalk('end-of-wal', `no WAL segment file holds ${formatLsn(recStart)}`);
      const totLen = first.readUInt32LE(Number(recStart % page));
      if (totLen === 0) throw new StopWalk('end-of-wal', `no record at ${formatLsn(recStart)} (zeros)`);
      if (totLen < RECORD_HEADER) throw new StopWalk('invalid', `record at ${formatLsn(recStart)} has invalid length ${totLen}`);
      if (totLen > 1024 * 1024 * 1024) throw new StopWalk('invalid', `record at ${formatLsn(recStart)} claims ${totLen} bytes`);
      const { bytes, end: rawEnd } = await readRecordBytes(recStart, totLen, recStart);
      const xlPrev = bytes.readBigUInt64LE(8);
      if (prev !== undefined && xlPrev !== prev) {
        throw new StopWalk('invalid', `record at ${formatLsn(recStart)} has xl_prev ${formatLsn(xlPrev)}, expected ${formatLsn(prev)} (the WAL does not continue this history)`);
      }
      let crc = crc32cUpdate(crc32cInit, bytes.subarray(RECORD_HEADER));
      crc = crc32cFinish(crc32cUpdate(crc, bytes.subarray(0, RECORD_CRC_OFFSET)));
      if (crc !== bytes.readUInt32LE(RECORD_CRC_OFFSET)) throw new StopWalk('invalid', `record at ${formatLsn(recStart)} fails its CRC check`);
      const rmid = bytes[17]!;
      const info = bytes[16]!;
      let next = maxAlign(rawEnd, g);
      // After a WAL switch the rest of the segment is unused: the next record starts in the next segment.
      if (rmid === RM_XLOG_ID && (info & 0xf0) === XLOG_SWITCH && next % seg !== 0n) next = (next / seg + 1n) * seg;
      records++;
      lastRecordStart = recStart;
      prev = recStart;
      end = next;
      pos = next;
    }
  } catch (err) {
    if (!(err instanceof StopWalk)) throw err;
    return { lastRecordStart, end, records, stop: err.stop, ...(err.stop === 'reached-limit' ? {} : { detail: err.message }) };
  }
}

/** Writes WAL bytes at their LSN into segment files of a pg_wal directory, creating zero-filled segments as needed. */
export class WalSegmentWriter {
  private readonly handles = new Map<bigint, fsp.FileHandle>();

  constructor(
    private readonly walDir: string,
    private readonly g: WalGeometry,
  ) {}

  private async handle(segNo: bigint): Promise<fsp.FileHandle> {
    let fh = this.handles.get(segNo);
    if (!fh) {
      const file = path.join(this.walDir, segmentFileName(segNo, this.g));
      fh = await fsp.open(file, constants.O_RDWR | constants.O_CREAT, 0o600);
      const { size } = await fh.stat();
      if (size !== this.g.segSize) await fh.truncate(this.g.segSize);
      this.handles.set(segNo, fh);
    }
    return fh;
  }

  async write(lsn: bigint, data: Buffer): Promise<void> {
    const seg = BigInt(this.g.segSize);
    let off = 0;
    let at = lsn;
    while (off < data.length) {
      const inSeg = Number(at % seg);
      const take = Math.min(data.length - off, this.g.segSize - inSeg);
      const fh = await this.handle(at / seg);
      await fh.write(data, off, take, inSeg);
      off += take;
      at += BigInt(take);
    }
  }

  /**
   * Makes `end` the end of the WAL: zeros from `end` to the end of its segment and removes every
   * later segment file (recycled segments would otherwise hold stale WAL).
   */
  async truncateAt(end: bigint): Promise<void> {
    const seg = BigInt(this.g.segSize);
    const inSeg = Number(end % seg);
    if (inSeg !== 0) {
      const fh = await this.handle(end / seg);
      const zeros = Buffer.alloc(Math.min(this.g.segSize - inSeg, 1024 * 1024));
      for (let off = inSeg; off < this.g.segSize; off += zeros.length) {
        await fh.write(zeros, 0, Math.min(zeros.length, this.g.segSize - off), off);
      }
    }
    const lastKept = inSeg === 0 ? end / seg - 1n : end / seg;
    for (const name of await fsp.readdir(this.walDir)) {
      const segNo = parseSegmentFileName(name, this.g);
      if (segNo !== undefined && segNo > lastKept) {
        await this.handles.get(segNo)?.close();
        this.handles.delete(segNo);
        await fsp.rm(path.join(this.walDir, name));
      }
    }
  }

  async close(sync = true): Promise<void> {
    for (const fh of this.handles.values()) {
      if (sync) await fh.sync();
      await fh.close();
    }
    this.handles.clear();
  }
}

/** Removes WAL segment files outside [firstSeg, lastSeg] and every other file in pg_wal (but keeps archive_status/, emptied). */
export async function pruneWalDir(walDir: string, g: WalGeometry, firstSeg: bigint, lastSeg: bigint): Promise<void> {
  for (const e of await fsp.readdir(walDir, { withFileTypes: true })) {
    const p = path.join(walDir, e.name);
    if (e.isDirectory()) {
      if (e.name === 'archive_status') {
        for (const f of await fsp.readdir(p)) await fsp.rm(path.join(p, f), { recursive: true, force: true });
      }
      continue;
    }
    const segNo = parseSegmentFileName(e.name, g);
    if (segNo === undefined || segNo < firstSeg || segNo > lastSeg) await fsp.rm(p, { force: true });
  }
}
