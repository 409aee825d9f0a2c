import { ActivityCancellationType, proxyActivities, type ActivityOptions } from '@temporalio/workflow';
import type { ComputeNodeActivities, ControlPlaneActivities } from '../../activities/compute/types';

/**
 * Activity options modelled on compute_ctl's numbers. Every compute-node activity heartbeats at
 * least every second, so a killed compute worker is noticed within the heartbeat timeout and the
 * step resumes on the next worker instead of waiting out its start-to-close timeout.
 */
const quickStep: ActivityOptions = {
  startToCloseTimeout: '1 minute',
  heartbeatTimeout: '5 seconds',
  retry: { initialInterval: '200 ms', maximumAttempts: 10 },
};

export function computeNodeActivities(taskQueue: string, startupScheduleToStartSeconds: number) {
  const on = (options: ActivityOptions) => proxyActivities<ComputeNodeActivities>({ ...options, taskQueue });
  return {
    // The whole startup. A killed worker is noticed within the heartbeat timeout and the next
    // attempt resumes after the last finished step; transient storage errors retry with
    // compute_ctl's base backup backoff (500 ms growing x1.5, 11 attempts). A VM that never comes
    // up fails the compute after the schedule-to-start timeout instead of leaving it in init.
    startCompute: on({
      startToCloseTimeout: '15 minutes',
      heartbeatTimeout: '5 seconds',
      scheduleToStartTimeout: `${startupScheduleToStartSeconds} seconds`,
      retry: { initialInterval: '500 ms', backoffCoefficient: 1.5, maximumAttempts: 11 },
      summary: 'start compute (fresh PGDATA, LSN, base backup, Postgres, roles and databases)',
    }).startCompute,
    // Cleanup after a failed startCompute: bounded, since the VM may be the thing that failed.
    stopAfterFailedStart: on({
      startToCloseTimeout: '2 minutes',
      heartbeatTimeout: '5 seconds',
      scheduleToStartTimeout: '30 seconds',
      retry: { initialInterval: '500 ms', maximumAttempts: 3 },
      summary: 'stop Postgres after a failed start',
    }).stopPostgres,
    preparePgdata: on({ ...quickStep, summary: 'fresh PGDATA' }).preparePgdata,
    writePostgresConfig: on({ ...quickStep, summary: 'write postgresql.conf' }).writePostgresConfig,
    // compute_ctl: 6 attempts, exponential backoff from 1.1 s.
    syncSafekeepers: on({
      startToCloseTimeout: '5 minutes',
      heartbeatTimeout: '10 seconds',
      retry: { initialInterval: '1100 ms', backoffCoefficient: 1.1, maximumAttempts: 6 },
      summary: 'sync safekeepers',
    }).syncSafekeepers,
    // compute_ctl: up to 11 attempts, 500 ms growing x1.5 (~57 s in all).
    fetchBasebackup: on({
      startToCloseTimeout: '10 minutes',
      heartbeatTimeout: '10 seconds',
      retry: { initialInterval: '500 ms', backoffCoefficient: 1.5, maximumAttempts: 11 },
      summary: 'base backup',
    }).fetchBasebackup,
    prepareStartupFiles: on({ ...quickStep, summary: 'pg_hba and standby.signal' }).prepareStartupFiles,
    // compute_ctl waits 60 s for readiness; a start that fails for a reason is not retried.
    startPostgres: on({
      startToCloseTimeout: '90 seconds',
      heartbeatTimeout: '5 seconds',
      retry: { initialInterval: '500 ms', maximumAttempts: 5 },
      summary: 'start Postgres',
    }).startPostgres,
    // compute_ctl does not retry spec SQL; we retry only what is not an SQL error (a lost worker).
    applySpec: on({
      startToCloseTimeout: '10 minutes',
      heartbeatTimeout: '10 seconds',
      retry: { initialInterval: '500 ms', maximumAttempts: 10 },
      summary: 'apply roles and databases',
    }).applySpec,
    reconfigurePostgres: on({
      startToCloseTimeout: '5 minutes',
      heartbeatTimeout: '10 seconds',
      retry: { initialInterval: '500 ms', maximumAttempts: 3 },
      summary: 'reconfigure',
    }).reconfigurePostgres,
    stopPostgres: on({
      startToCloseTimeout: '2 minutes',
      heartbeatTimeout: '5 seconds',
      retry: { initialInterval: '500 ms', maximumAttempts: 10 },
      summary: 'stop Postgres',
    }).stopPostgres,
  };
}

export interface WatchTiming {
  reportSeconds: number;
  heartbeatTimeoutSeconds: number;
}

/**
 * The watch of a running compute: one long activity per round. A watch that stops heartbeating
 * means the compute worker is gone. It gets one more attempt, which a restarted worker must pick up
 * within the same timeout; otherwise the VM is lost. This is the backstop for a VM platform that
 * never sends `vmLost`; the signal is what notices a dead VM within seconds.
 */
export function computeWatchActivity(taskQueue: string, timing: WatchTiming) {
  return proxyActivities<ComputeNodeActivities>({
    taskQueue,
    startToCloseTimeout: `${timing.reportSeconds + 120} seconds`,
    heartbeatTimeout: `${timing.heartbeatTimeoutSeconds} seconds`,
    scheduleToStartTimeout: `${timing.heartbeatTimeoutSeconds} seconds`,
    retry: { maximumAttempts: 2, initialInterval: '200 ms' },
    summary: 'watch Postgres',
  }).watchPostgres;
}

export const controlPlaneActivities = proxyActivities<ControlPlaneActivities>({
  startToCloseTimeout: '30 seconds',
  retry: { initialInterval: '200 ms', maximumAttempts: 3 },
  summary: 'safekeeper quorum check',
});

/** Cache offload and prewarm on the compute; a prewarm heartbeats its progress and resumes from it. */
export function computeCacheActivities(taskQueue: string) {
  const on = (options: ActivityOptions) => proxyActivities<ComputeNodeActivities>({ ...options, taskQueue });
  return {
    prewarmCache: on({
      startToCloseTimeout: '30 minutes',
      heartbeatTimeout: '10 seconds',
      // Let the SQL be cancelled before the workflow records the prewarm as cancelled.
      cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
      retry: { initialInterval: '1 second', maximumAttempts: 5 },
      summary: 'prewarm cache',
    }).prewarmCache,
    offloadCacheState: on({
      startToCloseTimeout: '5 minutes',
      heartbeatTimeout: '10 seconds',
      retry: { initialInterval: '1 second', maximumAttempts: 3 },
      summary: 'offload cache state',
    }).offloadCacheState,
  };
}
