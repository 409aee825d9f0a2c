import { setTimeout as sleep } from 'node:timers/promises';
import {
  WithStartWorkflowOperation,
  WorkflowExecutionAlreadyStartedError,
  WorkflowNotFoundError,
  WorkflowUpdateFailedError,
  type Client,
  type WorkflowHandle,
} from '@temporalio/client';
import { UserFacingError } from '../common/errors';
import { parseComputeConfig, type ComputeConfig } from '../model/compute-spec';
import { specTrustProblem, type SpecTrust } from '../model/spec-trust';
import {
  computeWorkflowId,
  isValidComputeId,
  type ComputeStatusResponse,
  type TerminateMode,
} from '../model/compute-status';
import type { OffloadState, PrewarmState } from '../model/cache-state';
import {
  awaitStartupUpdate,
  cancelPrewarmUpdate,
  configureUpdate,
  lfcStatusQuery,
  offloadUpdate,
  prewarmUpdate,
  statusQuery,
  terminateUpdate,
  vmLostSignal,
  type LfcStatus,
} from '../workflows/compute/messages';
import { COMPUTE_ID, COMPUTE_STATUS, TENANT_ID, TIMELINE_ID } from '../model/search-attributes';
import { promoteUpdate, type PromoteRequest, type PromoteState } from '../workflows/compute/promote-messages';
import type { computeWorkflow, ComputeWorkflowOptions } from '../workflows/compute/workflow';

export interface ComputeListEntry {
  computeId: string;
  workflowId: string;
  status: string;
  tenant: string | null;
  timeline: string | null;
  startTime: string;
}

function requireComputeId(computeId: string): void {
  if (!isValidComputeId(computeId)) {
    throw new UserFacingError(`invalid compute ID ${JSON.stringify(computeId)}: use 1-63 letters, digits, '.', '_' or '-'`);
  }
}

/** The cause an update or query failure carries, as one line. */
function rootMessage(err: unknown): string {
  let e: unknown = err;
  while (e instanceof Error && 'cause' in e && e.cause instanceof Error) e = e.cause;
  return e instanceof Error ? e.message : String(e);
}

function requireRunning(computeId: string, s: ComputeStatusResponse): ComputeStatusResponse {
  if (s.status !== 'running') throw new UserFacingError(`compute ${computeId} is ${s.status}${s.error ? `: ${s.error}` : ''}`);
  return s;
}

/** The control plane's typed API over compute workflows. */
export class ComputeClient {
  constructor(
    private readonly client: Client,
    private readonly controlPlaneTaskQueue: string,
    /** `restricted`: refuse specs with fields that give superuser-level power (DURABLE_COMPUTE_SPEC_TRUST). */
    private readonly specTrust: SpecTrust = 'full',
  ) {}

  private checkTrust(config: ComputeConfig): void {
    const problem = specTrustProblem(config.spec, this.specTrust);
    if (problem) throw new UserFacingError(problem);
  }

  private handle(computeId: string): WorkflowHandle<typeof computeWorkflow> {
    requireComputeId(computeId);
    return this.client.workflow.getHandle<typeof computeWorkflow>(computeWorkflowId(computeId));
  }

  /**
   * Starts the compute's workflow. The spec is validated here first so a bad one is refused with
   * every problem named and no workflow is left behind. A compute whose workflow is still open is
   * neither duplicated nor replaced.
   */
  async start(computeId: string, config: unknown | undefined, options: ComputeWorkflowOptions = {}): Promise<void> {
    const startOptions = this.startOptions(computeId, config, options);
    await this.refusingDuplicates(computeId, () => this.client.workflow.start('computeWorkflow', startOptions));
  }

  /**
   * Starts the compute and returns once it is running, in one call (update-with-start): the
   * control plane learns the outcome the moment the workflow records it, with no status polling.
   */
  async startAndAwaitRunning(computeId: string, config: unknown, options: ComputeWorkflowOptions = {}): Promise<ComputeStatusResponse> {
    const startWorkflowOperation = new WithStartWorkflowOperation<typeof computeWorkflow>('computeWorkflow', {
      ...this.startOptions(computeId, config, options),
      workflowIdConflictPolicy: 'FAIL',
    });
    const status = await this.refusingDuplicates(computeId, () => this.client.workflow.executeUpdateWithStart(awaitStartupUpdate, { startWorkflowOperation }));
    return requireRunning(computeId, status);
  }

  /** The spec is validated here first so a bad one is refused with every problem named and no workflow is left behind. */
  private startOptions(computeId: string, config: unknown | undefined, options: ComputeWorkflowOptions) {
    requireComputeId(computeId);
    let tenant: string | undefined;
    let timeline: string | undefined;
    if (config !== undefined) {
      const parsed = parseComputeConfig(config);
      if (!parsed.ok) throw new UserFacingError(`invalid compute spec:\n  ${parsed.errors.join('\n  ')}`);
      this.checkTrust(parsed.config);
      tenant = parsed.config.spec.tenant_id;
      timeline = parsed.config.spec.timeline_id;
    }
    return {
      taskQueue: this.controlPlaneTaskQueue,
      workflowId: computeWorkflowId(computeId),
      args: [{ computeId, config, options }] as [Parameters<typeof computeWorkflow>[0]],
      typedSearchAttributes: [
        { key: COMPUTE_ID, value: computeId },
        { key: COMPUTE_STATUS, value: config === undefined ? 'empty' : 'init' },
        ...(tenant ? [{ key: TENANT_ID, value: tenant }] : []),
        ...(timeline ? [{ key: TIMELINE_ID, value: timeline }] : []),
      ],
      staticSummary: `compute ${computeId}${tenant ? ` on ${tenant}/${timeline}` : ''}`,
    };
  }

  /** A compute whose workflow is still open is neither duplicated nor replaced. */
  private async refusingDuplicates<R>(computeId: string, run: () => Promise<R>): Promise<R> {
    try {
      return await run();
    } catch (err) {
      if (err instanceof WorkflowExecutionAlreadyStartedError) {
        const current = await this.status(computeId).catch(() => undefined);
        throw new UserFacingError(
          `compute ${computeId} already has a running workflow${current ? ` (status ${current.status})` : ''}; terminate it before starting it again`,
        );
      }
      throw err;
    }
  }

  async status(computeId: string): Promise<ComputeStatusResponse> {
    try {
      return await this.handle(computeId).query(statusQuery);
    } catch (err) {
      if (err instanceof WorkflowNotFoundError) throw new UserFacingError(`no compute with ID ${computeId}`);
      throw err;
    }
  }

  /** Polls the status until `done` holds, for at most `timeoutMs`. */
  async waitFor(computeId: string, done: (s: ComputeStatusResponse) => boolean, timeoutMs = 300_000): Promise<ComputeStatusResponse> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const s = await this.status(computeId);
      if (done(s)) return s;
      if (Date.now() > deadline) throw new UserFacingError(`compute ${computeId} is still ${s.status} after ${timeoutMs / 1000} s`);
      await sleep(250);
    }
  }

  /** Waits (an update that returns when the startup ends, no polling) until the compute is running; its error otherwise. */
  async waitForRunning(computeId: string, timeoutMs = 300_000): Promise<ComputeStatusResponse> {
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new UserFacingError(`compute ${computeId} is not running after ${timeoutMs / 1000} s`)), timeoutMs);
    });
    try {
      const status = await Promise.race([this.update(computeId, 'wait', () => this.handle(computeId).executeUpdate(awaitStartupUpdate)), timedOut]);
      return requireRunning(computeId, status);
    } finally {
      clearTimeout(timer);
    }
  }

  /** compute_ctl's /configure: blocks until running (or failed) and returns the final status. */
  async configure(computeId: string, config: unknown): Promise<ComputeStatusResponse> {
    const parsed = parseComputeConfig(config);
    if (!parsed.ok) throw new UserFacingError(`invalid compute spec:\n  ${parsed.errors.join('\n  ')}`);
    this.checkTrust(parsed.config);
    try {
      return await this.handle(computeId).executeUpdate(configureUpdate, { args: [config] });
    } catch (err) {
      if (err instanceof WorkflowNotFoundError) throw new UserFacingError(`no compute with ID ${computeId}`);
      if (err instanceof WorkflowUpdateFailedError) throw new UserFacingError(`configure refused: ${rootMessage(err)}`);
      throw err;
    }
  }

  /** compute_ctl's /terminate: returns the LSN the safekeepers were synced at after Postgres stopped. */
  async terminate(computeId: string, mode: TerminateMode = 'fast'): Promise<{ lsn: string | null }> {
    try {
      return await this.handle(computeId).executeUpdate(terminateUpdate, { args: [{ mode }] });
    } catch (err) {
      if (err instanceof WorkflowNotFoundError) throw new UserFacingError(`no compute with ID ${computeId}`);
      if (err instanceof WorkflowUpdateFailedError) throw new UserFacingError(`terminate refused: ${rootMessage(err)}`);
      throw err;
    }
  }

  /**
   * For the VM platform: the compute's VM is gone. The compute fails at once with the reason
   * (a signal: it returns as soon as the server has it, whatever the compute is doing).
   */
  async vmLost(computeId: string, reason: string): Promise<void> {
    if (!reason.trim()) throw new UserFacingError('a VM-lost report needs a reason');
    try {
      await this.handle(computeId).signal(vmLostSignal, { reason });
    } catch (err) {
      if (err instanceof WorkflowNotFoundError) throw new UserFacingError(`no running compute with ID ${computeId}`);
      throw err;
    }
  }

  /** Runs an update, turning "not found" and refusals into messages a user can act on. */
  private async update<R>(computeId: string, what: string, run: () => Promise<R>): Promise<R> {
    try {
      return await run();
    } catch (err) {
      if (err instanceof WorkflowNotFoundError) throw new UserFacingError(`no compute with ID ${computeId}`);
      if (err instanceof WorkflowUpdateFailedError) throw new UserFacingError(`${what} refused: ${rootMessage(err)}`);
      throw err;
    }
  }

  /**
   * compute_ctl's /promote: the Replica becomes the primary of its timeline once it has replayed up
   * to `safekeepersLsn` (the old primary's terminate LSN). Refused while another primary runs.
   */
  async promote(computeId: string, request: PromoteRequest = {}): Promise<PromoteState> {
    if (request.spec !== undefined) {
      const parsed = parseComputeConfig(request.spec);
      if (!parsed.ok) throw new UserFacingError(`invalid compute spec:\n  ${parsed.errors.join('\n  ')}`);
      this.checkTrust(parsed.config);
    }
    return this.update(computeId, 'promote', () => this.handle(computeId).executeUpdate(promoteUpdate, { args: [request] }));
  }

  async lfcStatus(computeId: string): Promise<LfcStatus> {
    try {
      return await this.handle(computeId).query(lfcStatusQuery);
    } catch (err) {
      if (err instanceof WorkflowNotFoundError) throw new UserFacingError(`no compute with ID ${computeId}`);
      throw err;
    }
  }

  /** compute_ctl's POST /lfc/prewarm: starts a prewarm (refused while one runs). */
  prewarm(computeId: string, fromEndpoint?: string): Promise<PrewarmState> {
    return this.update(computeId, 'prewarm', () => this.handle(computeId).executeUpdate(prewarmUpdate, { args: [{ fromEndpoint }] }));
  }

  cancelPrewarm(computeId: string): Promise<PrewarmState> {
    return this.update(computeId, 'cancel', () => this.handle(computeId).executeUpdate(cancelPrewarmUpdate, { args: [] }));
  }

  /** compute_ctl's POST /lfc/offload: starts an offload (refused while one runs). */
  offload(computeId: string): Promise<OffloadState> {
    return this.update(computeId, 'offload', () => this.handle(computeId).executeUpdate(offloadUpdate, { args: [] }));
  }

  /** Polls the cache state until `done` holds. */
  async waitForLfc(computeId: string, done: (s: LfcStatus) => boolean, timeoutMs = 600_000): Promise<LfcStatus> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const s = await this.lfcStatus(computeId);
      if (done(s)) return s;
      if (Date.now() > deadline) throw new UserFacingError(`compute ${computeId}: cache operation still running after ${timeoutMs / 1000} s`);
      await sleep(250);
    }
  }

  async list(): Promise<ComputeListEntry[]> {
    const entries: ComputeListEntry[] = [];
    for await (const wf of this.client.workflow.list({ query: `WorkflowType = 'computeWorkflow'` })) {
      const attrs = wf.typedSearchAttributes;
      entries.push({
        computeId: attrs.get(COMPUTE_ID) ?? wf.workflowId,
        workflowId: wf.workflowId,
        status: wf.status.name === 'RUNNING' ? (attrs.get(COMPUTE_STATUS) ?? 'unknown') : (attrs.get(COMPUTE_STATUS) ?? wf.status.name.toLowerCase()),
        tenant: attrs.get(TENANT_ID) ?? null,
        timeline: attrs.get(TIMELINE_ID) ?? null,
        startTime: wf.startTime.toISOString(),
      });
    }
    return entries;
  }
}
