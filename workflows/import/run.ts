/** One import's workflow state: its inputs and settings, the status the query returns, and how steps are timed. */
import { isCancellation, log, setCurrentDetails, workflowInfo } from '@temporalio/workflow';
import { IMPORTER_SHARED_TASK_QUEUE, importIdempotencyKey, importPrefix, initialImportStatus, type ImportPhase, type ImportStatus } from '../../model/import-status';
import { hostActivities, type ImportTimeouts } from './activity-proxies';
import { describeFailure, StepFailure } from './failures';
import type { ImportCompleteNotice } from './messages';
import type { ImportWorkflowInput } from './workflow';

const DEFAULTS = {
  importerTaskQueue: IMPORTER_SHARED_TASK_QUEUE,
  heartbeatTimeoutSeconds: 30,
  hostLostAfterSeconds: 300,
  claimTimeoutSeconds: 3600,
  maxHostChanges: 3,
  pageserverPollSeconds: 10,
  pageserverTimeoutSeconds: 24 * 3600,
};

export class ImportRun {
  readonly o: typeof DEFAULTS;
  readonly timeouts: ImportTimeouts;
  readonly prefix: string;
  readonly idempotencyKey: string;
  readonly timeline: { tenantId: string; timelineId: string };
  /** Tells this workflow's claims apart from another import's with the same ID. */
  readonly runKey: string;
  readonly status: ImportStatus;
  /** The storage controller's latest completion notice for this timeline. */
  completion: ImportCompleteNotice | undefined;
  /** Set once the pageserver may have started importing: a failure then deletes the timeline (if ours). */
  pageserverMayHaveStarted = false;
  /** The current host's working directory, removed at the end. */
  workdir: { taskQueue: string; workdir: string } | undefined;

  constructor(readonly input: ImportWorkflowInput) {
    const o = { ...DEFAULTS, ...input.options };
    this.o = o;
    this.timeouts = {
      heartbeatTimeoutSeconds: o.heartbeatTimeoutSeconds,
      hostLostAfterSeconds: o.hostLostAfterSeconds,
      claimTimeoutSeconds: o.claimTimeoutSeconds,
      importerTaskQueue: o.importerTaskQueue,
    };
    this.prefix = input.s3Prefix ?? importPrefix(input.importId);
    this.idempotencyKey = importIdempotencyKey(input.importId);
    this.timeline = { tenantId: input.tenantId, timelineId: input.timelineId };
    this.runKey = workflowInfo().firstExecutionRunId.slice(0, 8);
    this.status = initialImportStatus({
      import_id: input.importId,
      tenant_id: input.tenantId,
      timeline_id: input.timelineId,
      database: input.database,
      started_at: new Date(workflowInfo().startTime).toISOString(),
      mode: 'pgdata',
      s3_prefix: this.prefix,
    });
  }

  showDetails(): void {
    const { status, input } = this;
    setCurrentDetails(
      [
        `**phase:** ${status.phase}`,
        `**timeline:** ${input.tenantId}/${input.timelineId}`,
        status.host ? `**host:** ${status.host} (local run ${status.local_run})` : '',
        ...status.host_changes.map((c) => `**host lost:** ${c.from}, restarting local steps on another host (${c.reason})`),
        status.error ? `**error:** ${status.error}` : '',
      ]
        .filter(Boolean)
        .join('\n'),
    );
  }

  setPhase(phase: ImportPhase): void {
    this.status.phase = phase;
    this.showDetails();
    log.info('import phase', { importId: this.input.importId, phase });
  }

  /** Runs one step, records its duration (and a note on its result) in the status, tags a failure with the phase. */
  async timed<T>(phase: ImportPhase, name: string, fn: () => Promise<T>, note?: (r: T) => string | undefined): Promise<T> {
    const started = Date.now();
    let result: T;
    try {
      result = await fn();
    } catch (err) {
      throw err instanceof StepFailure || isCancellation(err) ? err : new StepFailure(phase, err);
    }
    const text = note?.(result);
    this.status.steps.push({ name, ms: Date.now() - started, ...(text ? { note: text } : {}) });
    return result;
  }

  /** Best effort: the host may be gone, and the import's outcome does not depend on it. */
  async removeWorkdir(): Promise<void> {
    if (!this.workdir) return;
    const { taskQueue, workdir: dir } = this.workdir;
    this.workdir = undefined;
    await hostActivities(taskQueue, this.timeouts)
      .destroyWorkdir({ workdir: dir })
      .catch((e: unknown) => log.warn('could not remove the working directory', { error: describeFailure(e) }));
  }
}
