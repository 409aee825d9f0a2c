/**
 * The WAL-push protocol between a proposer (the stock WAL pusher or the sync command) and the dev
 * safekeepers, shared by both sides so they cannot drift apart. See
 * dev/storage/safekeeper/PROTOCOL.md for the prose version.
 *
 * Consensus is Paxos-like, as in Neon: a proposer gets a term promised by a quorum (ELECT), picks
 * the most advanced log among the voters (highest last term, then highest flush LSN), and every
 * safekeeper it writes to first truncates its WAL to the point where it agrees with that log. The
 * term history — which term wrote WAL from which LSN on — is what tells where two logs agree.
 */
import { formatLsn, parseLsn, type Lsn } from '../../../model/lsn';

/** One switch of the writing term: from `lsn` on, WAL was written by the proposer of `term`. */
export interface TermEntry {
  term: bigint;
  lsn: Lsn;
}
export type TermHistory = TermEntry[];

export const MAX_U64 = 0xffffffffffffffffn;
/** WAL payload per push frame; well below the 1 MiB message cap of the dev servers. */
export const MAX_WAL_FRAME_PAYLOAD = 128 * 1024;
export const WAL_SEGMENT_SIZE = 16 * 1024 * 1024;

// ---- term histories -------------------------------------------------------------------------

/** `term@X/Y,term@X/Y` (empty string for an empty history): compact enough for a command argument. */
export function formatTermHistory(h: TermHistory): string {
  return h.map((e) => `${e.term}@${formatLsn(e.lsn)}`).join(',');
}

export function parseTermHistory(text: string): TermHistory {
  if (text === '' || text === '-') return [];
  const out: TermHistory = [];
  for (const part of text.split(',')) {
    const m = /^(\d{1,20})@([0-9A-Fa-f]{1,8}\/[0-9A-Fa-f]{1,8})$/.exec(part);
    if (!m) throw new RangeError(`bad term history entry ${JSON.stringify(part)} (expected term@X/Y)`);
    const term = BigInt(m[1]!);
    if (term > MAX_U64) throw new RangeError(`term out of range in ${JSON.stringify(part)}`);
    out.push({ term, lsn: parseLsn(m[2]!) });
  }
  validateTermHistory(out);
  return out;
}

/** Terms strictly increase and LSNs never go back: anything else is not a history a proposer wrote. */
export function validateTermHistory(h: TermHistory): void {
  for (let i = 1; i < h.length; i++) {
    if (h[i]!.term <= h[i - 1]!.term) throw new RangeError(`term history terms must increase (${formatTermHistory(h)})`);
    if (h[i]!.lsn < h[i - 1]!.lsn) throw new RangeError(`term history LSNs must not decrease (${formatTermHistory(h)})`);
  }
}

/** The entries that actually cover WAL the holder has: those starting at or before its flush LSN. */
export function effectiveHistory(h: TermHistory, flushLsn: Lsn): TermHistory {
  return h.filter((e) => e.lsn <= flushLsn);
}

/** The term that wrote the last WAL the holder has; -1 when it holds none. */
export function lastLogTerm(h: TermHistory, flushLsn: Lsn): bigint {
  const eff = effectiveHistory(h, flushLsn);
  return eff.length === 0 ? -1n : eff[eff.length - 1]!.term;
}

/**
 * Drops entries of terms that wrote no WAL (the next entry starts at the same LSN). Every sync and
 * every pusher start adds a term; without this a timeline's history would grow with each compute
 * start even when nothing was written.
 */
export function compactHistory(h: TermHistory): TermHistory {
  return h.filter((e, i) => i + 1 >= h.length || h[i + 1]!.lsn !== e.lsn);
}

/**
 * How far an acceptor's WAL agrees with the proposer's log: find the highest term both histories
 * contain (a term's proposer extended one log, so everything before that term's start is the same
 * on both sides, and its own WAL is the same as far as both have it); they agree up to where that
 * term ends on either side, capped by the acceptor's flush LSN. `null` when they share no term (the
 * acceptor must start over from the beginning of the proposer's log).
 */
export function agreementPoint(proposer: TermHistory, acceptor: TermHistory, acceptorFlush: Lsn): Lsn | null {
  const theirs = new Map(acceptor.map((e, j) => [e.term, j]));
  for (let i = proposer.length - 1; i >= 0; i--) {
    const j = theirs.get(proposer[i]!.term);
    if (j === undefined || acceptor[j]!.lsn !== proposer[i]!.lsn) continue;
    let point = acceptorFlush;
    const nextMine = proposer[i + 1];
    const nextTheirs = acceptor[j + 1];
    if (nextMine && nextMine.lsn < point) point = nextMine.lsn;
    if (nextTheirs && nextTheirs.lsn < point) point = nextTheirs.lsn;
    return point;
  }
  return null;
}

// ---- copy-both frames -----------------------------------------------------------------------

/** WAL frames carry the proposer's commit LSN too, so one fsync'd state update covers both. */
export type PusherFrame = { kind: 'wal'; startLsn: Lsn; commitLsn: Lsn; data: Buffer } | { kind: 'commit'; commitLsn: Lsn };
export interface FeedbackFrame {
  kind: 'feedback';
  flushLsn: Lsn;
  commitLsn: Lsn;
  term: bigint;
}

const TAG_WAL = 0x77; // 'w'
const TAG_COMMIT = 0x63; // 'c'
const TAG_FEEDBACK = 0x66; // 'f'

/** A frame that breaks the protocol; the receiving side ends that session with this message. */
export class ProtocolFrameError extends Error {
  override name = 'ProtocolFrameError';
}

const WAL_HEADER = 17;

export function encodeWalFrame(startLsn: Lsn, commitLsn: Lsn, data: Buffer): Buffer {
  const out = Buffer.allocUnsafe(WAL_HEADER + data.length);
  out[0] = TAG_WAL;
  out.writeBigUInt64BE(startLsn, 1);
  out.writeBigUInt64BE(commitLsn, 9);
  data.copy(out, WAL_HEADER);
  return out;
}

export function encodeCommitFrame(commitLsn: Lsn): Buffer {
  const out = Buffer.allocUnsafe(9);
  out[0] = TAG_COMMIT;
  out.writeBigUInt64BE(commitLsn, 1);
  return out;
}

export function encodeFeedbackFrame(f: Omit<FeedbackFrame, 'kind'>): Buffer {
  const out = Buffer.allocUnsafe(25);
  out[0] = TAG_FEEDBACK;
  out.writeBigUInt64BE(f.flushLsn, 1);
  out.writeBigUInt64BE(f.commitLsn, 9);
  out.writeBigUInt64BE(f.term, 17);
  return out;
}

export function decodePusherFrame(frame: Buffer): PusherFrame {
  if (frame.length === 0) throw new ProtocolFrameError('empty push frame');
  switch (frame[0]) {
    case TAG_WAL: {
      if (frame.length <= WAL_HEADER) {
        throw new ProtocolFrameError(`WAL frame of ${frame.length} bytes: needs start and commit LSNs and at least one byte of WAL`);
      }
      if (frame.length - WAL_HEADER > MAX_WAL_FRAME_PAYLOAD) {
        throw new ProtocolFrameError(`WAL frame carries ${frame.length - WAL_HEADER} bytes, more than the limit of ${MAX_WAL_FRAME_PAYLOAD}`);
      }
      const startLsn = frame.readBigUInt64BE(1);
      if (startLsn + BigInt(frame.length - WAL_HEADER) > MAX_U64) throw new ProtocolFrameError('WAL frame runs past the end of the LSN space');
      return { kind: 'wal', startLsn, commitLsn: frame.readBigUInt64BE(9), data: frame.subarray(WAL_HEADER) };
    }
    case TAG_COMMIT:
      if (frame.length !== 9) throw new ProtocolFrameError(`commit frame must be 9 bytes, got ${frame.length}`);
      return { kind: 'commit', commitLsn: frame.readBigUInt64BE(1) };
    default:
      throw new ProtocolFrameError(`unknown push frame tag 0x${frame[0]!.toString(16).padStart(2, '0')}`);
  }
}

export function decodeFeedbackFrame(frame: Buffer): FeedbackFrame {
  if (frame.length !== 25 || frame[0] !== TAG_FEEDBACK) {
    throw new ProtocolFrameError(`unexpected safekeeper frame (${frame.length} bytes, tag 0x${(frame[0] ?? 0).toString(16)})`);
  }
  return { kind: 'feedback', flushLsn: frame.readBigUInt64BE(1), commitLsn: frame.readBigUInt64BE(9), term: frame.readBigUInt64BE(17) };
}

// ---- commands -------------------------------------------------------------------------------

export function timelineStatusCommand(tenantId: string, timelineId: string): string {
  return `TIMELINE_STATUS ${tenantId} ${timelineId}`;
}

export function electCommand(tenantId: string, timelineId: string, term: bigint): string {
  return `ELECT ${tenantId} ${timelineId} ${term}`;
}

/** `systemId`: the compute's system identifier, which safekeepers hand to standbys (IDENTIFY_SYSTEM). */
export function startWalPushCommand(tenantId: string, timelineId: string, term: bigint, startLsn: Lsn, history: TermHistory, systemId?: string): string {
  const base = `START_WAL_PUSH ${tenantId} ${timelineId} ${term} ${formatLsn(startLsn)} ${formatTermHistory(history) || '-'}`;
  return systemId !== undefined && /^\d{1,20}$/.test(systemId) ? `${base} ${systemId}` : base;
}

export function readWalCommand(tenantId: string, timelineId: string, startLsn: Lsn, endLsn: Lsn): string {
  return `READ_WAL ${tenantId} ${timelineId} ${formatLsn(startLsn)} ${formatLsn(endLsn)}`;
}

/** Columns of the TIMELINE_STATUS and ELECT rows (ELECT adds `accepted` first). */
export const STATUS_COLUMNS = [
  'tenant_id',
  'timeline_id',
  'term',
  'last_log_term',
  'term_history',
  'flush_lsn',
  'commit_lsn',
  'timeline_start_lsn',
  'local_start_lsn',
  'backup_lsn',
  'remote_consistent_lsn',
  'peer_horizon_lsn',
] as const;

/** What a proposer needs to know about one safekeeper's copy of a timeline. */
export interface AcceptorStatus {
  term: bigint;
  termHistory: TermHistory;
  flushLsn: Lsn;
  commitLsn: Lsn;
  timelineStartLsn: Lsn;
}

export function parseStatusRow(columns: string[], row: (string | null)[]): AcceptorStatus {
  const get = (name: string): string => {
    const i = columns.indexOf(name);
    const v = i < 0 ? null : row[i];
    if (v === null || v === undefined) throw new RangeError(`safekeeper status lacks ${name}`);
    return v;
  };
  return {
    term: BigInt(get('term')),
    termHistory: parseTermHistory(get('term_history')),
    flushLsn: parseLsn(get('flush_lsn')),
    commitLsn: parseLsn(get('commit_lsn')),
    timelineStartLsn: parseLsn(get('timeline_start_lsn')),
  };
}
