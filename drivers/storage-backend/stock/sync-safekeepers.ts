/**
 * Stock-Postgres replacement for Neon's `postgres --sync-safekeepers`: makes a quorum of
 * safekeepers agree on where the timeline's WAL ends (commit_lsn = flush_lsn = that LSN), copying
 * missing WAL between them, and returns that LSN. A compute (or a basebackup) may then start there
 * knowing it includes every acknowledged commit.
 */
import { formatLsn, type Lsn } from '../../../model/lsn';
import { collectStatuses, copyWalInto, pushStartFor, quorumSize, runElection, target, type ConsensusConfig } from './consensus';
import { PushSession } from './safekeeper-client';
import { compactHistory } from './safekeeper-protocol';

const STEP_TIMEOUT_MS = 30_000;

/** sync-safekeepers-main's exit status for an UnknownTimelineError: a retry cannot help. */
export const UNKNOWN_TIMELINE_EXIT_CODE = 3;

export class UnknownTimelineError extends Error {
  override name = 'UnknownTimelineError';
}

export async function syncSafekeepers(cfg: ConsensusConfig): Promise<Lsn> {
  const n = cfg.safekeepers.length;
  if (n === 0) throw new Error('no safekeepers configured');
  const quorum = quorumSize(n);
  const { statuses } = await collectStatuses(cfg);
  if (statuses.size >= quorum && [...statuses.values()].every((s) => s === null)) {
    throw new UnknownTimelineError(
      `timeline ${cfg.tenantId}/${cfg.timelineId} is unknown to the safekeepers (${[...statuses.keys()].join(', ')}); create it there first`,
    );
  }

  const election = await runElection(cfg);
  if (election.agreedLsn === null || election.donor === null) {
    throw new UnknownTimelineError(`no safekeeper among ${[...election.voters.keys()].join(', ')} holds WAL for timeline ${cfg.tenantId}/${cfg.timelineId}`);
  }
  const agreed = election.agreedLsn;
  const donor = election.donor;
  const history = compactHistory([...election.donorHistory, { term: election.term, lsn: agreed }]);

  // Bring every voter to the donor's log; a quorum must make it.
  const results = await Promise.allSettled(
    [...election.voters].map(async ([sk, status]) => {
      let start = pushStartFor(history, status);
      if (start > agreed) start = agreed;
      const session = await PushSession.open(target(cfg, sk), election.term, start, history);
      try {
        await copyWalInto(cfg, donor, start, agreed, session, election.donorCommitLsn, STEP_TIMEOUT_MS);
        await session.waitUntil((s) => s.flushLsn >= agreed, STEP_TIMEOUT_MS, `flush up to ${formatLsn(agreed)}`);
        if (start < agreed) cfg.log(`safekeeper ${sk}: copied ${formatLsn(start)}..${formatLsn(agreed)} from ${donor}`);
        return session;
      } catch (err) {
        session.abort();
        throw new Error(`safekeeper ${sk}: ${(err as Error).message}`);
      }
    }),
  );
  const ready = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
  const failures = results.flatMap((r) => (r.status === 'rejected' ? [(r.reason as Error).message] : []));
  if (ready.length < quorum) {
    for (const s of ready) s.abort();
    throw new Error(`only ${ready.length} of the ${quorum} safekeepers needed reached ${formatLsn(agreed)}: ${failures.join('; ')}`);
  }
  for (const f of failures) cfg.log(f);

  // The log up to `agreed` is now on a quorum in our term: it is committed. Say so everywhere.
  const committed = await Promise.allSettled(
    ready.map(async (s) => {
      await s.sendCommit(agreed);
      await s.waitUntil((x) => x.commitLsn >= agreed, STEP_TIMEOUT_MS, `commit_lsn ${formatLsn(agreed)}`);
      await s.finish();
    }),
  );
  const committedCount = committed.filter((r) => r.status === 'fulfilled').length;
  if (committedCount < quorum) {
    throw new Error(`commit_lsn ${formatLsn(agreed)} was recorded by only ${committedCount} safekeepers`);
  }
  cfg.log(`synced at ${formatLsn(agreed)} (term ${election.term}, ${committedCount} of ${n} safekeepers)`);
  return agreed;
}
