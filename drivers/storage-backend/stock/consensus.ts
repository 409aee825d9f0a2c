/**
 * The proposer's half of the safekeeper consensus, shared by the WAL pusher and the sync command:
 * learn where the safekeepers stand, get a new term promised by a quorum, pick the log every later
 * write must extend, and bring a safekeeper in line with it.
 *
 * Why this is safe: a COMMIT is acknowledged only once a quorum flushed it in the writer's term.
 * Any later quorum of voters overlaps that one, and the donor is the voter with the newest last
 * term (then the longest WAL), so the donor's log contains every acknowledged commit. Safekeepers
 * refuse writes from a term lower than one they promised, so an old writer cannot slip anything in
 * after a newer proposer was elected.
 */
import { formatLsn, type Lsn } from '../../../model/lsn';
import { PgClientError } from './pg-client';
import { elect, fetchStatus, PushSession, readWal, type SafekeeperTarget } from './safekeeper-client';
import { agreementPoint, effectiveHistory, lastLogTerm, type AcceptorStatus, type TermHistory } from './safekeeper-protocol';

export interface ConsensusConfig {
  safekeepers: string[];
  tenantId: string;
  timelineId: string;
  authToken?: string;
  applicationName?: string;
  connectTimeoutMs?: number;
  /** The proposing compute's system identifier, passed on with every push (see SafekeeperTarget). */
  systemId?: string;
  log: (line: string) => void;
}

export function quorumSize(n: number): number {
  return Math.floor(n / 2) + 1;
}

export function target(cfg: ConsensusConfig, address: string): SafekeeperTarget {
  return {
    address,
    tenantId: cfg.tenantId,
    timelineId: cfg.timelineId,
    ...(cfg.authToken !== undefined ? { authToken: cfg.authToken } : {}),
    ...(cfg.applicationName !== undefined ? { applicationName: cfg.applicationName } : {}),
    ...(cfg.systemId !== undefined ? { systemId: cfg.systemId } : {}),
    connectTimeoutMs: cfg.connectTimeoutMs ?? 5000,
  };
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Status of every safekeeper that answered (null = it does not know the timeline), and why the others did not. */
export async function collectStatuses(cfg: ConsensusConfig): Promise<{ statuses: Map<string, AcceptorStatus | null>; errors: Map<string, string> }> {
  const statuses = new Map<string, AcceptorStatus | null>();
  const errors = new Map<string, string>();
  await Promise.all(
    cfg.safekeepers.map(async (sk) => {
      try {
        statuses.set(sk, await fetchStatus(target(cfg, sk)));
      } catch (err) {
        errors.set(sk, describe(err));
      }
    }),
  );
  return { statuses, errors };
}

export interface Election {
  term: bigint;
  /** Voters (a quorum) and their state when they voted. */
  voters: Map<string, AcceptorStatus>;
  /** The voter whose log wins, or null when no voter holds any WAL (a fresh timeline). */
  donor: string | null;
  /** The donor's flush LSN: where the agreed log ends (null on a fresh timeline). */
  agreedLsn: Lsn | null;
  /** The donor's commit LSN: known to be committed. */
  donorCommitLsn: Lsn;
  /** The donor's history up to agreedLsn (without our own term). */
  donorHistory: TermHistory;
}

/**
 * Gets a fresh term promised by a quorum. Competing proposers make ELECT fail; we retry with a
 * higher term a few times, then give up with the reasons.
 */
export async function runElection(cfg: ConsensusConfig, opts: { attempts?: number; minTerm?: bigint } = {}): Promise<Election> {
  const n = cfg.safekeepers.length;
  const quorum = quorumSize(n);
  let highest = opts.minTerm ?? 0n;
  const problems: string[] = [];
  const attempts = opts.attempts ?? 6;
  for (let attempt = 0; attempt < attempts; attempt++) {
    if (attempt > 0) await new Promise((r) => setTimeout(r, 100 * 2 ** attempt));
    const { statuses, errors } = await collectStatuses(cfg);
    if (statuses.size < quorum) {
      problems.push(`only ${statuses.size} of ${n} safekeepers reachable (${[...errors].map(([k, v]) => `${k}: ${v}`).join('; ')})`);
      continue;
    }
    for (const s of statuses.values()) if (s && s.term > highest) highest = s.term;
    const term = highest + 1n;
    const voters = new Map<string, AcceptorStatus>();
    await Promise.all(
      [...statuses.keys()].map(async (sk) => {
        try {
          const r = await elect(target(cfg, sk), term);
          if (r.accepted) voters.set(sk, r.status);
          else if (r.status.term > highest) highest = r.status.term;
        } catch (err) {
          errors.set(sk, describe(err));
        }
      }),
    );
    if (voters.size < quorum) {
      problems.push(`term ${term} got ${voters.size} of the ${quorum} votes needed`);
      if (highest < term) highest = term;
      continue;
    }
    let donor: string | null = null;
    let best: AcceptorStatus | undefined;
    for (const [sk, s] of voters) {
      if (s.flushLsn === 0n || s.termHistory.length === 0) continue;
      if (!best || isMoreAdvanced(s, best)) {
        best = s;
        donor = sk;
      }
    }
    cfg.log(
      `elected term ${term} by ${[...voters.keys()].join(', ')}; ` +
        (best ? `donor ${donor} at ${formatLsn(best.flushLsn)} (last log term ${lastLogTerm(best.termHistory, best.flushLsn)})` : 'no safekeeper holds WAL yet'),
    );
    return {
      term,
      voters,
      donor,
      agreedLsn: best ? best.flushLsn : null,
      donorCommitLsn: best ? best.commitLsn : 0n,
      donorHistory: best ? effectiveHistory(best.termHistory, best.flushLsn) : [],
    };
  }
  throw new PgClientError(`could not get a term promised by a quorum of safekeepers after ${attempts} attempts: ${[...new Set(problems)].join('; ')}`);
}

/** Raft's "at least as up to date": newer last term wins, then the longer log. */
function isMoreAdvanced(a: AcceptorStatus, b: AcceptorStatus): boolean {
  const ta = lastLogTerm(a.termHistory, a.flushLsn);
  const tb = lastLogTerm(b.termHistory, b.flushLsn);
  return ta !== tb ? ta > tb : a.flushLsn > b.flushLsn;
}

/** Where a push session to this safekeeper must start so its WAL ends up identical to the proposer's log. */
export function pushStartFor(history: TermHistory, status: AcceptorStatus | null): Lsn {
  if (history.length === 0) throw new Error('the proposer history is empty');
  if (!status) return history[0]!.lsn;
  return agreementPoint(history, status.termHistory, status.flushLsn) ?? history[0]!.lsn;
}

/**
 * Copies WAL [start, end) from a safekeeper that has it into an open push session, frame by frame,
 * waiting for each acknowledgement so the receiver never queues more than one frame.
 */
export async function copyWalInto(
  cfg: ConsensusConfig,
  from: string,
  start: Lsn,
  end: Lsn,
  session: PushSession,
  commitLsn: Lsn,
  timeoutMs: number,
): Promise<void> {
  if (end <= start) return;
  let pos = start;
  for await (const chunk of readWal(target(cfg, from), start, end)) {
    await session.sendWal(pos, chunk, commitLsn);
    pos += BigInt(chunk.length);
    const want = pos;
    await session.waitUntil((s) => s.flushLsn >= want, timeoutMs, `the safekeeper to flush up to ${formatLsn(want)}`);
  }
  if (pos !== end) throw new PgClientError(`safekeeper ${from} returned WAL up to ${formatLsn(pos)} instead of ${formatLsn(end)}`);
}
