import { loadDataConverter } from '@temporalio/common/lib/internal-non-workflow';
import proto from '@temporalio/proto';
import type { NativeConnection, Worker } from '@temporalio/worker';
import { encryptedDataConverter } from '../common/codec/data-converter';
import type { ComputeNodeActivities } from '../activities/compute/types';
import type { AppConfig } from '../common/config';
import { maskSecrets, UserFacingError } from '../common/errors';
import { computeTaskQueue, isValidComputeId } from '../model/compute-status';
import { prepareComputeNodeActivities, createComputeWorkerOn, type ComputeNodeOptions } from './compute';
import { waitForActivityPoller } from './poller-ready';
import { connectWorkerConnection } from './run-worker';
import { log as logger } from '../common/logger';

/** What `GET /assignment` reports. */
export type AgentState =
  | { state: 'waiting' }
  | { state: 'assigning' | 'polling' | 'stopping' | 'stopped'; compute_id: string; task_queue: string }
  | { state: 'failed'; compute_id: string; task_queue: string; error: string };

export type AssignResult =
  | { outcome: 'assigned'; compute_id: string; task_queue: string; state: 'polling' }
  | { outcome: 'conflict'; compute_id: string }
  | { outcome: 'invalid'; error: string }
  | { outcome: 'unavailable'; error: string };

interface Assignment {
  computeId: string;
  taskQueue: string;
  worker?: Worker;
  /** Settles once the worker polls (or could not be created or polled). */
  polling: Promise<void>;
  state: 'assigning' | 'polling' | 'stopping' | 'stopped' | 'failed';
  error?: string;
}

/**
 * The compute worker as a VM agent. `prepare` does everything that does not need the compute ID
 * (loads the code, validates the VM's settings, builds the activities, connects to Temporal); an
 * assignment then only creates the worker on `compute-node-<id>` and waits until it polls. A VM
 * that knows its compute at boot assigns at once; a pool VM waits for the control plane.
 *
 * One agent serves one compute for its whole life: a second assignment with another ID is refused
 * (the VM would otherwise mix two computes' PGDATA), the same ID again is a no-op.
 */
export class ComputeAgent {
  private assignment: Assignment | undefined;
  private shuttingDown = false;
  private failure: unknown;
  private readonly done: Promise<void>;
  private finish!: () => void;
  /** Resolves with the compute ID once a worker for it polls (a pool VM learns it on POST /assign). */
  readonly assigned: Promise<string>;
  private markAssigned!: (computeId: string) => void;

  private constructor(
    private readonly config: AppConfig,
    private readonly connection: NativeConnection,
    private readonly activities: ComputeNodeActivities,
    private readonly pgdata: string,
    private readonly log: (line: string) => void,
  ) {
    this.done = new Promise((resolve) => (this.finish = resolve));
    this.assigned = new Promise((resolve) => (this.markAssigned = resolve));
  }

  static async prepare(config: AppConfig, opts: ComputeNodeOptions, log: (line: string) => void = (line) => logger().info(line)): Promise<ComputeAgent> {
    const activities = await prepareComputeNodeActivities(config, opts);
    // Loaded now, as the worker will (the failure converter is a file the SDK require()s), so a
    // missing key fails at boot and the assignment does not pay for it.
    loadDataConverter(encryptedDataConverter(config.payloadKeys));
    const connection = await connectWorkerConnection(config);
    try {
      // The first DescribeTaskQueue builds its protobuf codecs (a few hundred ms); pay that before
      // an assignment waits on one.
      await connection.workflowService.describeTaskQueue({
        namespace: config.temporal.namespace,
        taskQueue: { name: computeTaskQueue('pool-warmup') },
        taskQueueType: proto.temporal.api.enums.v1.TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
      });
    } catch (err) {
      await connection.close();
      throw err;
    }
    return new ComputeAgent(config, connection, activities, opts.pgdata, log);
  }

  get status(): AgentState {
    const a = this.assignment;
    if (!a) return { state: 'waiting' };
    if (a.state === 'failed') return { state: 'failed', compute_id: a.computeId, task_queue: a.taskQueue, error: a.error ?? 'unknown error' };
    return { state: a.state, compute_id: a.computeId, task_queue: a.taskQueue };
  }

  /** Creates the worker for `computeId` and resolves once it polls; idempotent for the same ID. */
  async assign(computeId: unknown): Promise<AssignResult> {
    if (typeof computeId !== 'string' || !isValidComputeId(computeId)) {
      return { outcome: 'invalid', error: `compute_id must be 1-63 letters, digits, '.', '_' or '-' starting with a letter or digit, got ${JSON.stringify(computeId) ?? 'nothing'}` };
    }
    if (this.shuttingDown) return { outcome: 'unavailable', error: 'the compute worker is shutting down' };
    let a = this.assignment;
    if (a && a.computeId !== computeId) return { outcome: 'conflict', compute_id: a.computeId };
    if (!a || (a.state === 'failed' && !a.worker)) a = this.startAssignment(computeId);
    else if (a.state !== 'assigning' && a.state !== 'polling') return { outcome: 'unavailable', error: `the worker for ${computeId} has ${a.state}` };
    try {
      await a.polling;
    } catch {
      return { outcome: 'unavailable', error: a.error ?? 'the worker could not start' };
    }
    return { outcome: 'assigned', compute_id: a.computeId, task_queue: a.taskQueue, state: 'polling' };
  }

  private startAssignment(computeId: string): Assignment {
    const assignment: Assignment = { computeId, taskQueue: computeTaskQueue(computeId), state: 'assigning', polling: Promise.resolve() };
    this.assignment = assignment;
    assignment.polling = (async () => {
      try {
        const started = performance.now();
        const { worker, taskQueue, identity } = await createComputeWorkerOn(this.connection, this.config, computeId, this.activities, this.pgdata);
        const created = performance.now();
        assignment.worker = worker;
        const running = worker.run();
        // A shutdown signal that came while the worker was being created stops it at once.
        if (this.shuttingDown && worker.getState() === 'RUNNING') worker.shutdown();
        void running.then(
          () => this.workerEnded(assignment),
          (err: unknown) => this.workerEnded(assignment, err),
        );
        await Promise.race([
          waitForActivityPoller(this.connection.workflowService, { namespace: this.config.temporal.namespace, taskQueue, identity }),
          running.then(() => Promise.reject(new Error('the worker stopped before it polled'))),
        ]);
        if (assignment.state === 'assigning') assignment.state = 'polling';
        this.markAssigned(computeId);
        this.log(`compute worker ready on ${taskQueue} (polling; worker created in ${Math.round(created - started)} ms, its poll seen by the server ${Math.round(performance.now() - created)} ms later)`);
      } catch (err) {
        assignment.error = maskSecrets(err instanceof Error ? err.message : String(err));
        // A worker that never ran can be assigned again; one that ran ends the agent (workerEnded).
        if (!assignment.worker) assignment.state = 'failed';
        throw err;
      }
    })();
    assignment.polling.catch(() => undefined);
    return assignment;
  }

  private workerEnded(assignment: Assignment, err?: unknown): void {
    if (err) {
      assignment.state = 'failed';
      assignment.error = maskSecrets(err instanceof Error ? err.message : String(err));
      this.log(`compute worker on ${assignment.taskQueue} failed: ${assignment.error}`);
    } else {
      assignment.state = 'stopped';
    }
    this.failure = err;
    this.finish();
  }

  /**
   * Called on SIGINT/SIGTERM. The SDK's runtime drains a running worker by itself (activities get
   * the grace time); an agent still waiting for its assignment has nothing to drain and ends now.
   */
  shutdown(): void {
    if (this.shuttingDown) return;
    this.shuttingDown = true;
    const a = this.assignment;
    if (a?.worker && (a.state === 'assigning' || a.state === 'polling')) {
      a.state = 'stopping';
      if (a.worker.getState() === 'RUNNING') a.worker.shutdown();
    } else if (!a?.worker) {
      this.finish();
    }
  }

  /** Resolves when the agent is done (its worker drained and stopped, or it was stopped unassigned); closes the connection. */
  async closed(): Promise<void> {
    await this.done;
    // An assignment still creating its worker settles before the connection goes.
    await this.assignment?.polling.catch(() => undefined);
    await this.connection.close();
    if (this.failure) throw this.failure;
  }
}

/** The error a VM's agent raises when it is given neither or both of a compute ID and pool mode. */
export function assignmentModeError(opts: { computeId?: string; pool?: boolean }): UserFacingError | undefined {
  if (opts.computeId && opts.pool) return new UserFacingError('give either --compute-id (a VM for one compute) or --pool (assigned later over the internal HTTP port), not both');
  if (!opts.computeId && !opts.pool) return new UserFacingError('give --compute-id, or --pool to wait for an assignment on the internal HTTP port');
  return undefined;
}
