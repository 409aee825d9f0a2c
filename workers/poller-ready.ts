import { setTimeout as sleep } from 'node:timers/promises';
import proto from '@temporalio/proto';

type WorkflowService = proto.temporal.api.workflowservice.v1.WorkflowService;

/**
 * Resolves once the server lists `identity` among the activity pollers of `taskQueue`, that is
 * once one of this worker's polls has reached the server's matching service. That, not the SDK's
 * RUNNING state (set before any poll goes out), is what "the worker is polling" means here.
 */
export async function waitForActivityPoller(
  service: WorkflowService,
  where: { namespace: string; taskQueue: string; identity: string },
  opts: { timeoutMs?: number; intervalMs?: number; signal?: AbortSignal } = {},
): Promise<void> {
  const deadline = Date.now() + (opts.timeoutMs ?? 30_000);
  for (;;) {
    opts.signal?.throwIfAborted();
    const queue = await service.describeTaskQueue({
      namespace: where.namespace,
      taskQueue: { name: where.taskQueue },
      taskQueueType: proto.temporal.api.enums.v1.TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
    });
    if (queue.pollers?.some((p) => p.identity === where.identity)) return;
    if (Date.now() > deadline) {
      throw new Error(`no poll of ${where.identity} reached the server on ${where.taskQueue} within ${opts.timeoutMs ?? 30_000} ms`);
    }
    await sleep(opts.intervalMs ?? 10);
  }
}
