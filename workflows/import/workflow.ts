import {
  ActivityFailure,
  ApplicationFailure,
  CancellationScope,
  condition,
  isCancellation,
  log,
  patched,
  setCurrentDetails,
  setHandler,
  TimeoutFailure,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import {
  IMPORTER_SHARED_TASK_QUEUE,
  importIdempotencyKey,
  importPrefix,
  type ImportHostChange,
  type ImportPhase,
  type ImportStatus,
} from '../../model/import-status';
import { claimActivities, controlPlane, hostActivities, sharedImporterActivities, type ImportTimeouts } from './activity-proxies';
import { importCompleteSignal, importStatusQuery, type ImportCompleteNotice } from './messages';
import { IMPORT_ID, TENANT_ID, TIMELINE_ID } from './search-attributes';

export interface ImportWorkflowOptions extends Partial<ImportTimeouts> {
  /** Local runs after the first one, each on another host, before the import gives up. */
  maxHostChanges?: number;
  /** How often the pageserver is asked whether the import finished (a completion signal ends the wait early). */
  pageserverPollSeconds?: number;
  /** How long the pageserver may take once the data directory is uploaded. */
  pageserverTimeoutSeconds?: number;
}

export interface ImportWorkflowInput {
  importId: string;
  tenantId: string;
  timelineId: string;
  /** The database the source is restored into (the imported timeline's database). */
  database: string;
  /** Parallel jobs for pg_dump and pg_restore; the importer host's CPU count by default. */
  jobs?: number;
  /** spec.json: the source connection string only as ciphertext (never in clear text in history). */
  spec: unknown;
  /** Where spec.json, pgdata/ and status/ live (fast_import's --s3-prefix); imports/<id> by default. */
  s3Prefix?: string;
  options?: ImportWorkflowOptions;
}

const DEFAULTS = {
  importerTaskQueue: IMPORTER_SHARED_TASK_QUEUE,
  heartbeatTimeoutSeconds: 30,
  hostLostAfterSeconds: 300,
  claimTimeoutSeconds: 3600,
  maxHostChanges: 3,
  pageserverPollSeconds: 10,
  pageserverTimeoutSeconds: 24 * 3600,
};

/**
 * Patches (running workflows replay the old path): the completion signal only wakes the wait, the
 * pageserver's state decides; the cleanup deletes the timeline only if the pageserver's record of
 * the import carries this import's idempotency key.
 */
const COMPLETION_SIGNAL_ONLY_WAKES = 'import-completion-signal-only-wakes';
const DELETE_ONLY_OWN_TIMELINE = 'import-delete-only-own-timeline';

/** The innermost message of a failure chain: what actually went wrong. */
function describeFailure(err: unknown): string {
  let cause: unknown = err;
  while (cause instanceof ActivityFailure && cause.cause) cause = cause.cause;
  if (cause instanceof TimeoutFailure) return `${cause.timeoutType?.toLowerCase().replaceAll('_', '-') ?? 'activity'} timeout`;
  return cause instanceof Error ? cause.message : String(cause);
}

function failureType(err: unknown): string | undefined {
  return err instanceof ActivityFailure && err.cause instanceof ApplicationFailure ? err.cause.type ?? undefined : undefined;
}

/** A host step nobody picked up in time: its host (the only one with the files) is gone. */
function isHostLost(err: unknown): boolean {
  return err instanceof ActivityFailure && err.cause instanceof TimeoutFailure && err.cause.timeoutType === 'SCHEDULE_TO_START';
}

/** A step's failure, tagged with the phase it happened in. */
class StepFailure extends Error {
  constructor(
    readonly phase: ImportPhase,
    readonly failure: unknown,
  ) {
    super(describeFailure(failure));
  }
}

/**
 * A fast import as a durable workflow, keyed by the import ID.
 *
 *   prepare (clean prefix, spec.json) -> pageserver import_pgdata (waits for the commit marker)
 *   -> [claim a host] init -> dump -> restore -> stop -> upload (all on that host)
 *   -> status/pgdata (commit marker) -> wait for the pageserver -> safekeepers -> done
 *
 * A killed importer worker resumes in the step it was in: the dump is never redone once complete,
 * an interrupted restore starts over in a clean database, an interrupted upload skips what is
 * already uploaded intact. A host that is gone for good is replaced: the local steps start over on
 * another host from an empty directory, after the prefix's pgdata/ and status/ are cleared so
 * nothing of the lost host's upload mixes in. On failure or cancellation the timeline is deleted
 * if the pageserver records it as this import's (it would wait for the commit marker forever; any
 * other timeline is never touched) and status/fast_import says why.
 */
export async function importWorkflow(input: ImportWorkflowInput): Promise<ImportStatus> {
  const o = { ...DEFAULTS, ...input.options };
  const timeouts: ImportTimeouts = {
    heartbeatTimeoutSeconds: o.heartbeatTimeoutSeconds,
    hostLostAfterSeconds: o.hostLostAfterSeconds,
    claimTimeoutSeconds: o.claimTimeoutSeconds,
    importerTaskQueue: o.importerTaskQueue,
  };
  const prefix = input.s3Prefix ?? importPrefix(input.importId);
  const idempotencyKey = importIdempotencyKey(input.importId);
  const timeline = { tenantId: input.tenantId, timelineId: input.timelineId };
  const runKey = workflowInfo().firstExecutionRunId.slice(0, 8);

  const status: ImportStatus = {
    import_id: input.importId,
    tenant_id: input.tenantId,
    timeline_id: input.timelineId,
    database: input.database,
    phase: 'prepare',
    host: null,
    host_changes: [],
    local_run: 0,
    started_at: new Date(workflowInfo().startTime).toISOString(),
    finished_at: null,
    error: null,
    steps: [],
    progress: null,
    dump: null,
    upload: null,
    start_lsn: null,
    mode: 'pgdata',
    s3_prefix: prefix,
  };
  let completion: ImportCompleteNotice | undefined;
  setHandler(importStatusQuery, () => status);
  setHandler(importCompleteSignal, (notice) => {
    if (notice?.tenant_id === input.tenantId && notice.timeline_id === input.timelineId) completion = notice;
  });
  upsertSearchAttributes([
    { key: IMPORT_ID, value: input.importId },
    { key: TENANT_ID, value: input.tenantId },
    { key: TIMELINE_ID, value: input.timelineId },
  ]);

  const showDetails = () =>
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
  const setPhase = (phase: ImportPhase) => {
    status.phase = phase;
    showDetails();
    log.info('import phase', { importId: input.importId, phase });
  };
  const timed = async <T>(phase: ImportPhase, name: string, fn: () => Promise<T>, note?: (r: T) => string | undefined): Promise<T> => {
    const started = Date.now();
    let result: T;
    try {
      result = await fn();
    } catch (err) {
      throw err instanceof StepFailure || isCancellation(err) ? err : new StepFailure(phase, err);
    }
    const text = note?.(result);
    status.steps.push({ name, ms: Date.now() - started, ...(text ? { note: text } : {}) });
    return result;
  };

  let pageserverMayHaveStarted = false;
  let workdir: { taskQueue: string; workdir: string } | undefined;

  /** Claims a host and runs every step whose files live on it; moves to another host if it is lost. */
  const runLocalSteps = async (): Promise<void> => {
    for (;;) {
      status.local_run += 1;
      setPhase('init');
      const claim = await timed('init', 'claimImportHost', () =>
        claimActivities(timeouts).claimImportHost({ importId: input.importId, localRun: status.local_run, runKey }),
      ).catch((err: unknown) => {
        const failure = err instanceof StepFailure ? err.failure : undefined;
        if (failure instanceof ActivityFailure && failure.cause instanceof TimeoutFailure) {
          throw new StepFailure(
            'init',
            ApplicationFailure.nonRetryable(
              `no importer host claimed the import within ${o.claimTimeoutSeconds} s: is an importer worker (durable-compute worker importer) polling task queue ${o.importerTaskQueue}?`,
              'NoImporterHost',
            ),
          );
        }
        throw err;
      });
      status.host = claim.hostId;
      const moved = status.host_changes.at(-1);
      if (moved && moved.to === null) moved.to = claim.hostId;
      workdir = { taskQueue: claim.taskQueue, workdir: claim.workdir };
      showDetails();
      const host = hostActivities(claim.taskQueue, timeouts);
      const where = { workdir: claim.workdir };
      try {
        await timed('init', 'initScratchPostgres', () => host.initScratchPostgres({ ...where, database: input.database, jobs: input.jobs }));
        setPhase('dump');
        const dump = await timed(
          'dump',
          'dumpSource',
          () => host.dumpSource({ ...where, prefix, jobs: input.jobs }),
          (r) => `${r.files} files, ${r.bytes} bytes${r.skipped ? ' (kept from before)' : ''}`,
        );
        status.dump = { bytes: dump.bytes, files: dump.files, skipped: dump.skipped };
        setPhase('restore');
        await timed('restore', 'restoreDump', () => host.restoreDump({ ...where, database: input.database, jobs: input.jobs }));
        await timed('restore', 'stopScratchPostgres', () => host.stopScratchPostgres(where), (r) => `checkpoint ${r.checkpointLsn}`);
        setPhase('upload');
        const up = await timed(
          'upload',
          'uploadPgdata',
          () => host.uploadPgdata({ ...where, prefix }),
          (r) => `uploaded ${r.uploadedFiles} files (${r.uploadedBytes} bytes), kept ${r.skippedFiles} already there (${r.skippedBytes} bytes)`,
        );
        status.upload = {
          files_total: up.filesTotal,
          bytes_total: up.bytesTotal,
          uploaded_files: up.uploadedFiles,
          uploaded_bytes: up.uploadedBytes,
          skipped_files: up.skippedFiles,
          skipped_bytes: up.skippedBytes,
          resumed_parts: up.resumedParts,
          restarted_files: up.restartedFiles ?? 0,
          resumed_from: up.resumedFrom ? { files_done: up.resumedFrom.filesDone, bytes_done: up.resumedFrom.bytesDone } : null,
        };
        status.progress = { bytesDone: up.bytesTotal, bytesTotal: up.bytesTotal, filesDone: up.filesTotal, filesTotal: up.filesTotal };
        return;
      } catch (err) {
        const cause = err instanceof StepFailure ? err.failure : err;
        if (!isHostLost(cause)) throw err;
        const change: ImportHostChange = {
          from: claim.hostId,
          to: null,
          reason: `no answer from host ${claim.hostId} for ${o.hostLostAfterSeconds} s during ${status.phase}`,
          at: new Date().toISOString(),
        };
        if (status.host_changes.length >= o.maxHostChanges) {
          throw new StepFailure(status.phase, ApplicationFailure.nonRetryable(`${change.reason}, and the import already moved ${status.host_changes.length} times`, 'HostLost'));
        }
        status.host_changes.push(change);
        log.warn(`host lost, restarting local steps on another host: ${change.reason}`);
        workdir = undefined;
        showDetails();
        // The next host uploads its own data directory: nothing of this one's may remain.
        await timed(status.phase, 'cleanImportData', () => controlPlane.cleanImportData({ prefix }));
      }
    }
  };

  const waitForPageserver = async (): Promise<{ lsn: string; pgVersion: number }> => {
    const deadline = Date.now() + o.pageserverTimeoutSeconds * 1000;
    for (;;) {
      const s = await controlPlane.getPageserverImport(timeline);
      if (s.state === 'done') return { lsn: s.lastRecordLsn, pgVersion: s.pgVersion };
      if (s.state === 'failed') throw ApplicationFailure.nonRetryable(`the pageserver's import failed: ${s.error}`, 'PageserverImportFailed');
      if (s.state === 'missing') throw ApplicationFailure.nonRetryable(`timeline ${input.tenantId}/${input.timelineId} disappeared from the pageserver during the import`, 'TimelineMissing');
      // The callback's word alone (it may be forged) never fails the import: the poll above, right
      // after the signal woke the wait, is what decides.
      if (completion?.error && !patched(COMPLETION_SIGNAL_ONLY_WAKES)) {
        throw ApplicationFailure.nonRetryable(`the pageserver's import failed: ${completion.error}`, 'PageserverImportFailed');
      }
      if (Date.now() >= deadline) throw ApplicationFailure.nonRetryable(`the pageserver did not finish the import within ${o.pageserverTimeoutSeconds} s`, 'PageserverImportTimeout');
      // A durable timer; the completion signal cuts it short.
      const seen = completion;
      await condition(() => completion !== seen, `${o.pageserverPollSeconds} seconds`);
    }
  };

  try {
    setPhase('prepare');
    await timed('prepare', 'prepareImportPrefix', () => controlPlane.prepareImportPrefix({ prefix, spec: input.spec }));
    pageserverMayHaveStarted = true;
    await timed('prepare', 'startPageserverImport', () => controlPlane.startPageserverImport({ ...timeline, prefix, idempotencyKey }), (r) =>
      r.alreadyRunning ? 'already running (429)' : `HTTP ${r.httpStatus}`,
    );

    await runLocalSteps();
    // The commit marker, only now that every file is uploaded: the pageserver starts reading.
    await timed('upload', 'writePgdataStatus', () => sharedImporterActivities(timeouts).writePgdataStatus({ prefix }));

    setPhase('pageserver_import');
    const done = await timed('pageserver_import', 'pageserverImport', waitForPageserver, (r) => `start LSN ${r.lsn}`);
    status.start_lsn = done.lsn;
    await timed('pageserver_import', 'activateImportedTimeline', () => controlPlane.activateImportedTimeline({ ...timeline, lsn: done.lsn, pgVersion: done.pgVersion }));
    await timed('pageserver_import', 'writeFastImportStatus', () => sharedImporterActivities(timeouts).writeFastImportStatus({ prefix }));
    status.finished_at = new Date().toISOString();
    setPhase('done');
    await removeWorkdir();
    return status;
  } catch (err) {
    const cancelled = isCancellation(err);
    const phase = err instanceof StepFailure ? err.phase : status.phase;
    const cause = err instanceof StepFailure ? err.failure : err;
    const type = failureType(cause);
    // A timeline that exists for another reason was never ours: leave it alone.
    if (type === 'TimelineConflict' || type === 'PageserverRejected') pageserverMayHaveStarted = false;
    status.error = cancelled ? `cancelled during ${phase}` : `${phase} failed: ${describeFailure(cause)}`;
    status.finished_at = new Date().toISOString();
    await CancellationScope.nonCancellable(async () => {
      if (pageserverMayHaveStarted) {
        // Only a timeline the pageserver records as this import's is deleted: a start request
        // that failed transiently proves nothing about whose the timeline is.
        const which = patched(DELETE_ONLY_OWN_TIMELINE) ? { ...timeline, idempotencyKey } : timeline;
        await controlPlane
          .deleteImportTimeline(which)
          .then((r) => r.kept && log.warn('timeline kept', { reason: r.kept }))
          .catch((e: unknown) => log.warn('could not delete the timeline', { error: describeFailure(e) }));
      }
      await controlPlane.recordImportOutcome({ prefix, error: status.error! }).catch((e: unknown) => log.warn('could not write status/fast_import', { error: describeFailure(e) }));
      await removeWorkdir();
    });
    setPhase(cancelled ? 'cancelled' : 'failed');
    if (cancelled) throw err;
    throw ApplicationFailure.nonRetryable(status.error, 'ImportFailed', { phase, type: type ?? null });
  }

  /** Best effort: the host may be gone, and the import's outcome does not depend on it. */
  async function removeWorkdir(): Promise<void> {
    if (!workdir) return;
    const { taskQueue, workdir: dir } = workdir;
    workdir = undefined;
    await hostActivities(taskQueue, timeouts)
      .destroyWorkdir({ workdir: dir })
      .catch((e: unknown) => log.warn('could not remove the working directory', { error: describeFailure(e) }));
  }
}
