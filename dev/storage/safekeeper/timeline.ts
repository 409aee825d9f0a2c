/**
 * One timeline's WAL and consensus state on a dev safekeeper.
 *
 * Layout under the timeline directory: `control` (the state, see control-file.ts) and WAL in
 * 16 MiB segment files named like PostgreSQL's (timeline 1). Bytes in [timeline_start_lsn,
 * flush_lsn) are valid; anything past flush_lsn in a segment is leftover from a truncation and is
 * never served. WAL is fdatasync'd before flush_lsn moves, and flush_lsn is persisted before the
 * pusher hears about it.
 */
import { constants, promises as fsp } from 'node:fs';
import path from 'node:path';
import { formatLsn, type Lsn } from '../../../model/lsn';
import {
  lastLogTerm,
  ProtocolFrameError,
  validateTermHistory,
  WAL_SEGMENT_SIZE,
  type TermHistory,
} from '../../../drivers';
import { PgWireError } from '../pgwire/server';
import { ControlFile } from './control-file';
import { Mutex } from './mutex';
import { fromDocument, toDocument, type StateDocument, type TimelineState } from './timeline-state';
import { fsyncDir, segmentFileName } from './wal-files';

export type { TimelineState } from './timeline-state';

const SEG = BigInt(WAL_SEGMENT_SIZE);
const READ_CHUNK = 256 * 1024;

/** SQLSTATE for "a proposer with a higher term took over": the pusher stops on it. */
export const TERM_SUPERSEDED = 'SK001';

/** Identifies the one push session allowed to write; a newer session or a higher term revokes it. */
export interface PushToken {
  term: bigint;
  /** Tells the session's pusher about a newer term right away, rather than on its next write. */
  onRevoked?: (state: TimelineState) => void;
}

export interface WalWrite {
  startLsn: Lsn;
  data: Buffer;
}

export class Timeline {
  private readonly lock = new Mutex();
  private readonly segments = new Map<bigint, fsp.FileHandle>();
  private activePush: PushToken | undefined;
  private proposerCommit = 0n;
  /** Bumped on every truncation so a concurrent reader can tell its bytes may have changed. */
  private truncations = 0;
  private lowestTruncation: Lsn = 0n;
  private closed = false;

  private constructor(
    readonly dir: string,
    private state: TimelineState,
    private readonly control: ControlFile,
  ) {}

  static async load(dir: string): Promise<Timeline | null> {
    try {
      await fsp.access(path.join(dir, 'control'));
    } catch {
      return null;
    }
    const { control, document } = await ControlFile.open(path.join(dir, 'control'));
    if (document === null) {
      await control.close();
      return null;
    }
    return new Timeline(dir, fromDocument(document as StateDocument), control);
  }

  /** A new timeline: empty (no WAL, learns its start from the first push) or starting at `startLsn`. */
  static async create(
    dir: string,
    ids: { tenantId: string; timelineId: string },
    init: { startLsn?: Lsn; commitLsn?: Lsn; pgVersion?: number } = {},
  ): Promise<Timeline> {
    await fsp.mkdir(dir, { recursive: true });
    const start = init.startLsn ?? 0n;
    const state: TimelineState = {
      ...ids,
      term: 0n,
      termHistory: start > 0n ? [{ term: 0n, lsn: start }] : [],
      timelineStartLsn: start,
      flushLsn: start,
      commitLsn: init.commitLsn ?? start,
      backupLsn: start,
      remoteConsistentLsn: 0n,
      peerHorizonLsn: start,
      pgVersion: init.pgVersion ?? 150000,
    };
    const { control } = await ControlFile.open(path.join(dir, 'control'));
    const t = new Timeline(dir, state, control);
    await control.save(toDocument(state));
    await fsyncDir(dir);
    await fsyncDir(path.dirname(dir));
    return t;
  }

  snapshot(): TimelineState {
    return { ...this.state, termHistory: this.state.termHistory.map((e) => ({ ...e })) };
  }

  /** Whether a proposer (a compute's WAL pusher) is connected and may still write. */
  get pushing(): boolean {
    return this.activePush !== undefined;
  }

  get lastLogTerm(): bigint {
    return lastLogTerm(this.state.termHistory, this.state.flushLsn);
  }

  private async persist(): Promise<void> {
    await this.control.save(toDocument(this.state));
  }

  /** Promises `term` if it is higher than any promised so far. */
  async elect(term: bigint): Promise<boolean> {
    return this.lock.run(async () => {
      if (term <= this.state.term) return false;
      this.state.term = term;
      await this.persist();
      this.activePush?.onRevoked?.(this.snapshot());
      return true;
    });
  }

  /**
   * Starts a push session for a proposer of `term` whose log is `history`: the WAL is cut back to
   * `startLsn` (the point where this safekeeper's log agrees with the proposer's) and the
   * proposer's history is adopted. Any earlier push session loses its right to write.
   */
  async beginPush(term: bigint, startLsn: Lsn, history: TermHistory): Promise<PushToken> {
    return this.lock.run(async () => {
      const s = this.state;
      if (term < s.term) throw new PgWireError(`term ${term} is older than term ${s.term} promised by this safekeeper`, TERM_SUPERSEDED);
      validateTermHistory(history);
      const last = history[history.length - 1];
      if (!last || last.term !== term) throw new PgWireError(`the pushed term history must end with the pusher's term ${term}`, '22023');
      if (startLsn < history[0]!.lsn) {
        throw new PgWireError(`push start ${formatLsn(startLsn)} precedes the pushed history's start ${formatLsn(history[0]!.lsn)}`, '22023');
      }
      const empty = s.flushLsn === 0n && s.termHistory.length === 0;
      if (empty) {
        if (startLsn === 0n) throw new PgWireError('a push to an empty timeline must start at a non-zero LSN', '22023');
        s.timelineStartLsn = startLsn;
        s.flushLsn = startLsn;
        s.commitLsn = startLsn;
        s.backupLsn = startLsn;
        s.peerHorizonLsn = startLsn;
      } else {
        if (startLsn < s.timelineStartLsn) {
          throw new PgWireError(`push start ${formatLsn(startLsn)} precedes the timeline start ${formatLsn(s.timelineStartLsn)}`, '22023');
        }
        if (startLsn > s.flushLsn) {
          throw new PgWireError(`push start ${formatLsn(startLsn)} leaves a gap: this safekeeper has WAL only up to ${formatLsn(s.flushLsn)}`, '22023');
        }
        if (startLsn < s.commitLsn) {
          throw new PgWireError(`refusing to truncate committed WAL: push start ${formatLsn(startLsn)} is below commit_lsn ${formatLsn(s.commitLsn)}`, '22023');
        }
      }
      const truncating = startLsn < s.flushLsn;
      s.flushLsn = startLsn;
      s.term = term;
      s.termHistory = history.map((e) => ({ ...e }));
      this.proposerCommit = 0n;
      if (truncating) {
        this.truncations++;
        this.lowestTruncation = startLsn;
      }
      await this.persist();
      if (truncating) await this.removeSegmentsFrom(startLsn);
      const token: PushToken = { term };
      const previous = this.activePush;
      this.activePush = token;
      previous?.onRevoked?.(this.snapshot());
      return token;
    });
  }

  /** Appends contiguous WAL, records the proposer's commit LSN, makes both durable; returns the state. */
  async append(token: PushToken, writes: WalWrite[], commitLsn: Lsn | undefined): Promise<TimelineState> {
    return this.lock.run(async () => {
      if (this.closed) throw new PgWireError('safekeeper is shutting down', '57P01');
      if (this.activePush !== token) throw new PgWireError('this push session was superseded by a newer one', TERM_SUPERSEDED);
      if (token.term !== this.state.term) {
        throw new PgWireError(`term ${token.term} was superseded by term ${this.state.term}`, TERM_SUPERSEDED);
      }
      let end = this.state.flushLsn;
      const touched = new Set<fsp.FileHandle>();
      for (const w of writes) {
        if (w.startLsn !== end) {
          throw new ProtocolFrameError(`WAL frame starts at ${formatLsn(w.startLsn)} but this safekeeper's WAL ends at ${formatLsn(end)}`);
        }
        for (const fh of await this.writeAt(end, w.data)) touched.add(fh);
        end += BigInt(w.data.length);
      }
      for (const fh of touched) await fh.datasync();
      const changed = end !== this.state.flushLsn || commitLsn !== undefined;
      this.state.flushLsn = end;
      if (commitLsn !== undefined && commitLsn > this.proposerCommit) this.proposerCommit = commitLsn;
      const commit = this.proposerCommit < end ? this.proposerCommit : end;
      if (commit > this.state.commitLsn) this.state.commitLsn = commit;
      if (changed) await this.persist();
      return this.snapshot();
    });
  }

  /** The session ended: it may no longer write. */
  async endPush(token: PushToken): Promise<void> {
    await this.lock.run(async () => {
      if (this.activePush === token) this.activePush = undefined;
    });
  }

  private async segment(segno: bigint): Promise<fsp.FileHandle> {
    let fh = this.segments.get(segno);
    if (fh) return fh;
    // Keep only a couple of segments open: writes move forward.
    for (const [n, h] of this.segments) {
      if (n < segno - 1n) {
        await h.close();
        this.segments.delete(n);
      }
    }
    const file = path.join(this.dir, segmentFileName(segno));
    let created = false;
    try {
      fh = await fsp.open(file, constants.O_RDWR);
    } catch {
      fh = await fsp.open(file, constants.O_RDWR | constants.O_CREAT, 0o600);
      await fh.truncate(WAL_SEGMENT_SIZE);
      created = true;
    }
    if (created) {
      await fh.sync();
      await fsyncDir(this.dir);
    }
    this.segments.set(segno, fh);
    return fh;
  }

  private async writeAt(lsn: Lsn, data: Buffer): Promise<fsp.FileHandle[]> {
    const used: fsp.FileHandle[] = [];
    let off = 0;
    while (off < data.length) {
      const pos = lsn + BigInt(off);
      const segno = pos / SEG;
      const inSeg = Number(pos % SEG);
      const n = Math.min(data.length - off, WAL_SEGMENT_SIZE - inSeg);
      const fh = await this.segment(segno);
      let written = 0;
      while (written < n) {
        const r = await fh.write(data, off + written, n - written, inSeg + written);
        written += r.bytesWritten;
      }
      used.push(fh);
      off += n;
    }
    return used;
  }

  private async removeSegmentsFrom(lsn: Lsn): Promise<void> {
    const first = (lsn + SEG - 1n) / SEG; // segments starting at or after lsn hold nothing valid
    for (const [n, h] of [...this.segments]) {
      if (n >= first) {
        await h.close();
        this.segments.delete(n);
      }
    }
    for (const name of await fsp.readdir(this.dir)) {
      if (!/^[0-9A-F]{24}$/.test(name)) continue;
      const segno = BigInt(`0x${name.slice(8, 16)}`) * 0x100n + BigInt(`0x${name.slice(16, 24)}`);
      if (segno >= first) await fsp.rm(path.join(this.dir, name), { force: true });
    }
  }

  /** Whether [start, end) can be served right now. */
  checkRange(start: Lsn, end: Lsn): string | undefined {
    const s = this.state;
    if (end < start) return `end ${formatLsn(end)} precedes start ${formatLsn(start)}`;
    if (start < s.timelineStartLsn) return `WAL before ${formatLsn(s.timelineStartLsn)} is not on this safekeeper (requested from ${formatLsn(start)})`;
    if (end > s.flushLsn) return `WAL is available only up to ${formatLsn(s.flushLsn)} (requested up to ${formatLsn(end)})`;
    return undefined;
  }

  /** The stored bytes of [start, end), in chunks; fails if a truncation rewrites them meanwhile. */
  async *readWal(start: Lsn, end: Lsn): AsyncGenerator<Buffer> {
    const problem = this.checkRange(start, end);
    if (problem) throw new RangeError(problem);
    const truncationsAtStart = this.truncations;
    let pos = start;
    while (pos < end) {
      const segno = pos / SEG;
      const inSeg = Number(pos % SEG);
      const remaining = end - pos;
      const n = Math.min(READ_CHUNK, WAL_SEGMENT_SIZE - inSeg, remaining < BigInt(READ_CHUNK) ? Number(remaining) : READ_CHUNK);
      const buf = Buffer.alloc(n);
      const fh = await fsp.open(path.join(this.dir, segmentFileName(segno)), 'r');
      try {
        let got = 0;
        while (got < n) {
          const r = await fh.read(buf, got, n - got, inSeg + got);
          if (r.bytesRead === 0) throw new Error(`segment ${segmentFileName(segno)} is shorter than expected`);
          got += r.bytesRead;
        }
      } finally {
        await fh.close();
      }
      if (this.truncations !== truncationsAtStart && this.lowestTruncation < end) {
        throw new Error(`WAL from ${formatLsn(this.lowestTruncation)} was truncated while being read`);
      }
      yield buf;
      pos += BigInt(n);
    }
  }

  async close(): Promise<void> {
    await this.lock.run(async () => {
      this.closed = true;
      this.activePush = undefined;
      for (const h of this.segments.values()) await h.close();
      this.segments.clear();
      await this.control.close();
    });
  }
}
