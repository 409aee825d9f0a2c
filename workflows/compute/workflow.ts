import { allHandlersFinished, condition, continueAsNew, upsertSearchAttributes } from '@temporalio/workflow';
import { computeTaskQueue, type ComputeStatusResponse } from '../../model/compute-status';
import { COMPUTE_ID } from '../../model/search-attributes';
import { computeCacheActivities, computeNodeActivities } from './activity-proxies';
import { ComputeCache } from './cache';
import { carryOver, type CarriedComputeState } from './carry-over';
import { describeFailure } from './failures';
import { registerComputeHandlers } from './handlers';
import { acceptInitialSpec, startCompute, waitForSpec } from './startup';
import { ComputeState } from './state';
import { installPromote } from './promote';
import { failed, finishTermination, terminated } from './termination';
import { VmLink } from './vm';
import { staticLeaseArgs } from './lsn-lease';
import { startWatch } from './watch';

export type { CarriedComputeState } from './carry-over';

export interface ComputeWorkflowOptions {
  /** How long the startup waits for the compute worker to take it before the compute fails (default 120 s). */
  startupScheduleToStartSeconds?: number;
  /** How often the watch step reports last_active (and so how often history grows while idle). Default 1800. */
  watchReportSeconds?: number;
  /**
   * How long a silent compute worker is tolerated before the compute is declared failed: the
   * backstop for a VM platform that never sends `vmLost`. Default 600. The watch heartbeats every
   * half of it, and each heartbeat is a billed Temporal action.
   */
  watchHeartbeatTimeoutSeconds?: number;
  /** Continue-as-new after this many watch rounds, to keep a weeks-long history bounded. Default 48 (a day at the default rounds). */
  maxWatchRoundsPerRun?: number;
  /**
   * SIMULATION ONLY (bench/fleet.ts): the task queue of the compute-node activities instead of the
   * compute's own `compute-node-<id>`, so one simulator process can answer thousands of simulated
   * computes from a few queues. Never set for a real compute.
   */
  simulatedNodeTaskQueue?: string;
}

export interface ComputeWorkflowInput {
  computeId: string;
  /** A ComputeConfig or bare ComputeSpec; absent = start empty and wait for `configure`. */
  config?: unknown;
  options?: ComputeWorkflowOptions;
  carried?: CarriedComputeState;
}

/**
 * One long-lived workflow per compute: compute_ctl's startup, watch, reconfigure and termination,
 * each step an activity on the compute's own task queue so a crashed worker resumes in that step.
 *
 *   empty ─configure→ init ─startup→ running ─postmaster exits / VM lost→ failed
 *                                     running ─terminate→ Postgres stopped → final sync → terminated
 *                                     running ─history long→ continue-as-new (still running)
 *
 * The steps are written so each run issues the same commands in the same order as before they
 * were split into modules: test/workflow-replay.test.ts replays a recorded history.
 */
export async function computeWorkflow(input: ComputeWorkflowInput): Promise<ComputeStatusResponse> {
  const nodeTaskQueue = input.options?.simulatedNodeTaskQueue ?? computeTaskQueue(input.computeId);
  const startupScheduleToStartSeconds = input.options?.startupScheduleToStartSeconds ?? 120;
  const node = computeNodeActivities(nodeTaskQueue, startupScheduleToStartSeconds);
  const compute = new ComputeState(input.computeId, input.carried);
  const vm = new VmLink();
  const cache = new ComputeCache(compute, computeCacheActivities(nodeTaskQueue), input.carried);

  registerComputeHandlers(compute, vm, node);
  cache.registerHandlers();
  const promote = installPromote({
    computeId: input.computeId,
    nodeTaskQueue,
    config: () => compute.config,
    adoptConfig: (next) => compute.adoptConfig(next),
    status: () => compute.status,
    postgresRunning: () => compute.postgresRunning,
    incarnation: () => compute.incarnation,
    busy: () => (compute.reconfiguring ? 'a reconfiguration is in progress' : compute.terminationMode !== undefined ? 'the compute is terminating' : undefined),
    onVm: (work) => vm.run(work),
  });
  compute.promotion = promote;
  upsertSearchAttributes([{ key: COMPUTE_ID, value: input.computeId }]);

  if (!input.carried) {
    // init with the spec given at start, or empty until configure brings one.
    acceptInitialSpec(compute, input.config);
    if (!compute.config && !(await waitForSpec(compute))) return terminated(compute);
    // init → running (or the compute fails).
    await startCompute(compute, vm, node, startupScheduleToStartSeconds);
    compute.setStatus('running');
    // The prewarm starts first, so it is 'prewarming' before any periodic offload can look at it.
    if (compute.config!.spec.autoprewarm) cache.startPrewarm();
  }
  cache.startPeriodicOffload(compute.config!.spec.offload_lfc_interval_seconds);

  // running: watch until the postmaster exits or the VM is lost. Each round reports last_active.
  const watch = startWatch(compute, vm, nodeTaskQueue, input.options, (reportSeconds) => ({ ...promote.watchArgs(reportSeconds), ...staticLeaseArgs(compute.config?.spec) }));
  let exitReason: string | undefined;
  for (let round = 0; ; round++) {
    if (vm.lost) {
      exitReason = vm.lostError();
      break;
    }
    if (watch.historyLong(round) && !compute.reconfiguring && compute.terminationMode === undefined && cache.idle && !promote.promoting()) {
      await cache.stop();
      await condition(allHandlersFinished);
      return continueAsNew<typeof computeWorkflow>({ ...input, config: undefined, carried: carryOver(compute, cache) });
    }
    try {
      const report = await watch.round();
      if (report.lastActive && (!compute.lastActive || report.lastActive > compute.lastActive)) compute.lastActive = report.lastActive;
      promote.recordLag(report.replication);
      if (report.exited) {
        // A promote stops the standby's postmaster and starts the primary's: keep watching.
        if (await promote.exitBelongsToPromote()) continue;
        exitReason = report.exitReason ?? 'postmaster exited';
        break;
      }
    } catch (err) {
      exitReason = vm.lost ? vm.lostError() : `compute worker lost: ${describeFailure(err)}`;
      break;
    }
  }

  // Postgres is down: the cache's background work stops with it (no final offload).
  compute.postgresRunning = false;
  await cache.stop();
  // A lost VM took Postgres with it: no final sync is possible, termination or not.
  if (compute.terminationMode !== undefined && !vm.lost) return finishTermination(compute, node);
  return failed(compute, exitReason);
}
