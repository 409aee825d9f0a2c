/** How a compute's workflow ends once Postgres is down: terminated (as asked) or failed. */
import { allHandlersFinished, ApplicationFailure, condition } from '@temporalio/workflow';
import type { ComputeStatusResponse } from '../../model/compute-status';
import type { computeNodeActivities } from './activity-proxies';
import { describeFailure } from './failures';
import type { ComputeState } from './state';

type NodeActivities = ReturnType<typeof computeNodeActivities>;

/** A terminate stopped Postgres: a Primary syncs the safekeepers once more, and that LSN is the answer. */
export async function finishTermination(compute: ComputeState, node: NodeActivities): Promise<ComputeStatusResponse> {
  const spec = compute.config!.spec;
  if (spec.mode.kind === 'Primary') {
    try {
      compute.terminateLsn = (await node.syncSafekeepers({ incarnation: compute.incarnation, storageAuthToken: spec.storage_auth_token })).lsn;
    } catch (err) {
      compute.setStatus('failed', `terminated, but the final safekeeper sync failed: ${describeFailure(err)}`);
      await condition(allHandlersFinished);
      throw ApplicationFailure.nonRetryable(compute.error!, 'ComputeFailed');
    }
  }
  return terminated(compute);
}

/** terminated: the status is final once every handler (the terminate update among them) has answered. */
export async function terminated(compute: ComputeState): Promise<ComputeStatusResponse> {
  compute.setStatus('terminated');
  await condition(allHandlersFinished);
  return compute.response();
}

/** Postgres exited unasked, or the VM or its worker was lost. */
export async function failed(compute: ComputeState, reason: string | undefined): Promise<never> {
  compute.setStatus('failed', reason);
  await condition(allHandlersFinished);
  throw ApplicationFailure.nonRetryable(reason ?? 'postmaster exited', 'ComputeFailed');
}
