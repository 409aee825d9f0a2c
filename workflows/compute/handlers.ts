/**
 * compute_ctl's control API as workflow messages: status, configure, terminate, the compute's API
 * keys, and the VM platform's vmLost. (The cache's lfc* handlers are in cache.ts.)
 */
import { ApplicationFailure, condition, patched, setHandler } from '@temporalio/workflow';
import { parseComputeConfig } from '../../model/compute-spec';
import { SETTING_REJECTED, type TerminateMode } from '../../model/compute-status';
import type { computeNodeActivities } from './activity-proxies';
import { describeFailure, isSettingRejected } from './failures';
import { apiKeysQuery, awaitStartupUpdate, configureUpdate, statusQuery, terminateUpdate, vmLostSignal } from './messages';
import type { ComputeState } from './state';
import type { VmLink } from './vm';
import { TERMINATE_ENDS_WATCH_PATCH } from './watch';

type NodeActivities = ReturnType<typeof computeNodeActivities>;

export function registerComputeHandlers(compute: ComputeState, vm: VmLink, node: NodeActivities): void {
  setHandler(statusQuery, () => compute.response());
  setHandler(awaitStartupUpdate, async () => {
    await condition(() => compute.settled);
    return compute.response();
  });
  setHandler(apiKeysQuery, () => compute.config?.compute_ctl_config.jwks ?? { keys: [] });

  // The VM platform's word that the VM is gone. Work waiting on the VM's task queue (which no one
  // will ever poll again) is abandoned at once; the compute then fails with the platform's reason.
  setHandler(vmLostSignal, (arg) => vm.markLost(arg));

  registerConfigure(compute, vm, node);
  registerTerminate(compute, vm, node);
}

/** compute_ctl's POST /configure: the first spec of an empty compute, or a reconfiguration of a running one. */
function registerConfigure(compute: ComputeState, vm: VmLink, node: NodeActivities): void {
  setHandler(
    configureUpdate,
    async (raw) => {
      const parsed = parseComputeConfig(raw);
      if (!parsed.ok) throw ApplicationFailure.nonRetryable(parsed.errors.join('; '), 'InvalidSpec');
      if (compute.status === 'empty') {
        // empty → configuration_pending; the main loop picks the spec up and runs the startup.
        compute.adoptConfig(parsed.config);
        compute.setStatus('configuration_pending');
        await condition(() => compute.settled);
        return compute.response();
      }
      // running → configuration_pending → configuration → running | failed (Postgres keeps running).
      // A setting Postgres rejects: the update fails, the previous configuration stays (running).
      compute.reconfiguring = true;
      const previous = compute.config;
      let pendingRestart: string[] = [];
      compute.setStatus('configuration_pending');
      try {
        compute.adoptConfig(parsed.config);
        compute.setStatus('configuration');
        pendingRestart = (await vm.run(() => node.reconfigurePostgres({ spec: parsed.config.spec }))).pendingRestart ?? [];
        compute.setStatus('running');
      } catch (err) {
        // Same commands as the failed path (one status upsert): no patch needed for replay.
        if (!vm.lost && isSettingRejected(err) && previous) {
          compute.config = previous;
          compute.setStatus('running');
          throw ApplicationFailure.nonRetryable(`reconfiguration refused: ${describeFailure(err)}`, SETTING_REJECTED);
        }
        compute.setStatus('failed', vm.lost ? vm.lostError() : `reconfiguration failed: ${describeFailure(err)}`);
      } finally {
        compute.reconfiguring = false;
      }
      return { ...compute.response(), pending_restart: pendingRestart };
    },
    {
      validator: (raw) => {
        const { status, config } = compute;
        if (status !== 'empty' && status !== 'running') {
          throw new Error(`compute ${compute.computeId} is ${status}; configure needs empty or running`);
        }
        const parsed = parseComputeConfig(raw);
        if (!parsed.ok) throw new Error(`invalid compute spec: ${parsed.errors.join('; ')}`);
        if (config && status === 'running' && (parsed.config.spec.tenant_id !== config.spec.tenant_id || parsed.config.spec.timeline_id !== config.spec.timeline_id)) {
          throw new Error('a running compute cannot switch tenant or timeline; terminate it and start another');
        }
      },
    },
  );
}

/** compute_ctl's POST /terminate?mode=: stops Postgres; the main loop then syncs the safekeepers once more. */
function registerTerminate(compute: ComputeState, vm: VmLink, node: NodeActivities): void {
  setHandler(
    terminateUpdate,
    async (arg) => {
      const mode: TerminateMode = arg?.mode ?? 'fast';
      compute.terminationMode = mode;
      const wasRunning = compute.postgresRunning;
      compute.setStatus(mode === 'fast' ? 'termination_pending_fast' : 'termination_pending_immediate');
      if (wasRunning) {
        try {
          await vm.run(() => node.stopPostgres({ mode }));
          // Stopped: the watch's round ends now, not when (or if) its activity reports the exit.
          if (patched(TERMINATE_ENDS_WATCH_PATCH)) compute.postgresRunning = false;
        } catch (err) {
          // A lost VM stopped its Postgres for good; the compute fails with the reason below.
          if (!vm.lost) throw err;
        }
      }
      await condition(() => compute.status === 'terminated' || compute.status === 'failed');
      return { lsn: compute.terminateLsn };
    },
    {
      validator: (arg) => {
        if (arg?.mode !== undefined && arg.mode !== 'fast' && arg.mode !== 'immediate') {
          throw new Error(`terminate mode must be fast or immediate, got ${JSON.stringify(arg.mode)}`);
        }
        const { status } = compute;
        const failedButUp = status === 'failed' && compute.postgresRunning;
        if (status !== 'empty' && status !== 'running' && !failedButUp) {
          throw new Error(`compute ${compute.computeId} is ${status}; terminate needs empty or running`);
        }
        if (compute.reconfiguring) throw new Error('a reconfiguration is in progress; retry when it finishes');
        if (compute.promotion.promoting()) throw new Error('a promote is in progress; retry when it finishes');
      },
    },
  );
}
