import { formatLsn, isLsn, parseLsn } from '../../model/lsn';

/**
 * compute_ctl's fast "already synced?" rule, as a pure function: a Primary may skip
 * `postgres --sync-safekeepers` only when a quorum of safekeepers answered, every answer knows the
 * timeline, all agree on commit_lsn and on flush_lsn, and commit_lsn equals flush_lsn (nothing is
 * flushed that is not committed).
 */

export type SafekeeperAnswer =
  | { safekeeper: string; outcome: 'status'; commitLsn: string; flushLsn: string }
  /** The safekeeper answered but does not know the timeline. */
  | { safekeeper: string; outcome: 'not-found' }
  /** No usable answer: refused, timed out, failed. */
  | { safekeeper: string; outcome: 'error'; error: string };

export type SyncDecision =
  | { synced: true; lsn: string; quorum: number; responded: number }
  | { synced: false; reason: string; quorum: number; responded: number };

/** A majority of `n` safekeepers. */
export function quorumSize(n: number): number {
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`need at least one safekeeper, got ${n}`);
  return Math.floor(n / 2) + 1;
}

export function decideSafekeepersSynced(total: number, answers: readonly SafekeeperAnswer[]): SyncDecision {
  const quorum = quorumSize(total);
  if (answers.length > total) throw new RangeError(`${answers.length} answers from ${total} safekeepers`);
  const responses = answers.filter((a) => a.outcome !== 'error');
  const responded = responses.length;
  const no = (reason: string): SyncDecision => ({ synced: false, reason, quorum, responded });

  if (responded < quorum) {
    const failures = answers.filter((a): a is Extract<SafekeeperAnswer, { outcome: 'error' }> => a.outcome === 'error');
    const detail = failures.length ? `; failures: ${failures.map((f) => `${f.safekeeper}: ${f.error}`).join('; ')}` : '';
    return no(`only ${responded} of ${total} safekeepers answered, a quorum is ${quorum}${detail}`);
  }
  const unknown = responses.filter((a) => a.outcome === 'not-found');
  if (unknown.length) return no(`safekeeper ${unknown.map((a) => a.safekeeper).join(', ')} does not know the timeline`);

  const statuses = responses as Extract<SafekeeperAnswer, { outcome: 'status' }>[];
  const malformed = statuses.find((s) => !isLsn(s.commitLsn) || !isLsn(s.flushLsn));
  if (malformed) return no(`safekeeper ${malformed.safekeeper} answered an invalid LSN (commit ${JSON.stringify(malformed.commitLsn)}, flush ${JSON.stringify(malformed.flushLsn)})`);

  const commits = new Set(statuses.map((s) => parseLsn(s.commitLsn)));
  const flushes = new Set(statuses.map((s) => parseLsn(s.flushLsn)));
  const show = (values: Set<bigint>) => [...values].map(formatLsn).join(' vs ');
  if (commits.size > 1) return no(`safekeepers disagree on commit_lsn: ${show(commits)}`);
  if (flushes.size > 1) return no(`safekeepers disagree on flush_lsn: ${show(flushes)}`);
  const [commit] = commits;
  const [flush] = flushes;
  if (commit !== flush) return no(`commit_lsn ${formatLsn(commit!)} differs from flush_lsn ${formatLsn(flush!)}`);
  return { synced: true, lsn: formatLsn(commit!), quorum, responded };
}
