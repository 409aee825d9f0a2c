/**
 * The running compute's watch: rounds of one long activity on the VM that returns when the
 * postmaster exits or after reporting last_active, and the rule for when the run's history is long
 * enough to continue as new.
 */
import { CancellationScope, condition, patched, workflowInfo } from '@temporalio/workflow';
import { computeWatchActivity } from './activity-proxies';
import type { StaticLease } from '../../model/static-lease';
import type { ComputeState } from './state';
import type { VmLink } from './vm';
import type { ComputeWorkflowOptions } from './workflow';

/**
 * The long, quiet watch (30-minute rounds, 10-minute heartbeat timeout, a dead VM reported by the
 * platform's `vmLost` signal) replaced one-minute rounds with a 15 s heartbeat timeout: about 10
 * instead of 360 actions per idle compute-hour. Computes already watching keep the old defaults
 * until their next continue-as-new, so their recorded histories replay.
 */
const QUIET_WATCH_PATCH = 'quiet-watch-and-vm-lost';
const WATCH_DEFAULTS = { reportSeconds: 1800, heartbeatTimeoutSeconds: 600, maxRoundsPerRun: 48 };
const LEGACY_WATCH_DEFAULTS = { reportSeconds: 60, heartbeatTimeoutSeconds: 15, maxRoundsPerRun: 1000 };

/**
 * A terminate that has stopped Postgres ends the watch's round at once (its activity cancelled)
 * instead of waiting for the watch to report the exit. The watch may sit on a worker that was
 * lost (a restarted agent: Postgres outlives it), and then it would report only after its
 * heartbeat timeout, 10 minutes later. Before this patch the terminate waited for the report.
 */
export const TERMINATE_ENDS_WATCH_PATCH = 'terminate-ends-watch-round';

export interface Watch {
  /** One round: resolves when the postmaster exits or when it is time to report last_active. */
  round(): ReturnType<ReturnType<typeof computeWatchActivity>>;
  /** Whether the run should continue as new before its next round. */
  historyLong(round: number): boolean;
}

/** The watch input for a round of `reportSeconds` (a replica's rounds are shorter and measure its lag). */
export type WatchArgs = (reportSeconds: number) => {
  reportAfterSeconds: number;
  replica?: { tenantId: string; timelineId: string; safekeepers: string[]; token?: string };
  lease?: StaticLease;
};

export function startWatch(
  compute: ComputeState,
  vm: VmLink,
  nodeTaskQueue: string,
  options: ComputeWorkflowOptions | undefined,
  watchArgs: WatchArgs = (reportSeconds) => ({ reportAfterSeconds: reportSeconds }),
): Watch {
  const defaults = patched(QUIET_WATCH_PATCH) ? WATCH_DEFAULTS : LEGACY_WATCH_DEFAULTS;
  const reportSeconds = options?.watchReportSeconds ?? defaults.reportSeconds;
  const maxRounds = options?.maxWatchRoundsPerRun ?? defaults.maxRoundsPerRun;
  const watchPostgres = computeWatchActivity(nodeTaskQueue, {
    reportSeconds,
    heartbeatTimeoutSeconds: options?.watchHeartbeatTimeoutSeconds ?? defaults.heartbeatTimeoutSeconds,
  });
  const watchRound = () => vm.run(() => watchPostgres({ ...watchArgs(reportSeconds), lastActive: compute.lastActive }));
  return {
    round: () => (patched(TERMINATE_ENDS_WATCH_PATCH) ? untilPostgresStopped(compute, watchRound) : watchRound()),
    historyLong: (round) => round >= maxRounds || workflowInfo().continueAsNewSuggested,
  };
}

type WatchReport = Awaited<ReturnType<ReturnType<typeof computeWatchActivity>>>;

/** The round's report, or, once a terminate has stopped Postgres, an exit of its own making. */
async function untilPostgresStopped(compute: ComputeState, watchRound: () => Promise<WatchReport>): Promise<WatchReport> {
  const scope = new CancellationScope();
  let settled = false;
  const round = scope.run(watchRound).finally(() => {
    settled = true;
  });
  await condition(() => settled || !compute.postgresRunning);
  if (settled) return round;
  scope.cancel();
  round.catch(() => undefined);
  return { exited: true, lastActive: compute.lastActive, exitReason: 'Postgres stopped by terminate' };
}

