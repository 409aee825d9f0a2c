import {
  ActivityFailure,
  ApplicationFailure,
  CancellationScope,
  isCancellation,
  log,
  patched,
  proxyActivities,
  setCurrentDetails,
  setHandler,
  TimeoutFailure,
  upsertSearchAttributes,
  workflowInfo,
  type ActivityOptions,
} from '@temporalio/workflow';
import type { DumpRestoreActivities, DumpRestoreHostActivities } from '../../activities/importer/restore-activities';
import { IMPORTER_SHARED_TASK_QUEUE, importPrefix, initialImportStatus, type ImportHostChange, type ImportPhase, type ImportStatus } from '../../model/import-status';
import { claimActivities, controlPlane, hostActivities, type ImportTimeouts } from './activity-proxies';
import { importStatusQuery } from './messages';
import { isHostLost } from './failures';
import { IMPORT_ID } from '../../model/search-attributes';

export interface DumpRestoreImportInput {
  importId: string;
  /** spec.json: both connection strings only as ciphertext (never in clear text in history). */
  spec: unknown;
  /** The destination without its password, for the status. */
  destination: string;
  /** The destination's database name, for the status. */
  database: string;
  /** Parallel jobs for pg_dump and the restore; the importer host's CPU count by default. */
  jobs?: number;
  /** Drop and replace the dump's objects the destination already holds; otherwise such a destination is refused. */
  clean?: boolean;
  /** Where spec.json and status/ live (fast_import's --s3-prefix); imports/<id> by default. */
  s3Prefix?: string;
  /** Tables whose dump data file has this many bytes or more are copied in resumable batches of `batchBytes` of COPY data. */
  splitTablesLargerThan?: number;
  batchBytes?: number;
  /** Lost importer hosts replaced before the import fails (3 by default, as a pgdata import). */
  maxHostChanges?: number;
  options?: Partial<ImportTimeouts>;
}

/** Histories from before host replacement failed the import when its host was lost; they replay that way. */
const HOST_REPLACEMENT_PATCH = 'dump-restore-replaces-lost-host';

const DEFAULTS: ImportTimeouts = {
  importerTaskQueue: IMPORTER_SHARED_TASK_QUEUE,
  heartbeatTimeoutSeconds: 30,
  hostLostAfterSeconds: 300,
  claimTimeoutSeconds: 3600,
};

function describeFailure(err: unknown): string {
  let cause: unknown = err;
  while (cause instanceof ActivityFailure && cause.cause) cause = cause.cause;
  if (cause instanceof TimeoutFailure) return `${cause.timeoutType?.toLowerCase().replaceAll('_', '-') ?? 'activity'} timeout`;
  return cause instanceof Error ? cause.message : String(cause);
}

function failureType(err: unknown): string | undefined {
  return err instanceof ActivityFailure && err.cause instanceof ApplicationFailure ? err.cause.type ?? undefined : undefined;
}

/** The dump-restore steps on the claimed host's queue. */
function dumpRestoreHostActivities(taskQueue: string, t: ImportTimeouts) {
  const step = (startToClose: string, summary: string, maximumAttempts = 10): ActivityOptions => ({
    taskQueue,
    startToCloseTimeout: startToClose,
    scheduleToStartTimeout: `${t.hostLostAfterSeconds} seconds`,
    heartbeatTimeout: `${t.heartbeatTimeoutSeconds} seconds`,
    retry: { initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '30 seconds', maximumAttempts },
    summary,
  });
  return {
    checkDumpRestoreEndpoints: proxyActivities<DumpRestoreHostActivities>(step('5 minutes', 'check the source and the destination', 3)).checkDumpRestoreEndpoints,
    restoreIntoDestination: proxyActivities<DumpRestoreHostActivities>(step('48 hours', 'restore into the destination, table by table')).restoreIntoDestination,
    destroyDumpRestoreWorkdir: proxyActivities<DumpRestoreHostActivities>({
      taskQueue,
      startToCloseTimeout: '10 minutes',
      scheduleToStartTimeout: '30 seconds',
      heartbeatTimeout: `${t.heartbeatTimeoutSeconds} seconds`,
      retry: { initialInterval: '1 second', maximumAttempts: 3 },
      summary: 'remove the working directory',
    }).destroyDumpRestoreWorkdir,
  };
}

/**
 * Neon fast_import's dump-restore command as a durable workflow, keyed by the import ID (the same
 * workflow ID as a pgdata import: one import per ID, whatever its mode):
 *
 *   prepare (clean prefix, spec.json) -> [claim a host] check source and destination
 *   -> pg_dump -Fd -j -> restore into the destination (pre-data, data table by table, post-data)
 *   -> status/fast_import
 *
 * A killed importer worker resumes in the step it was in: a completed dump is kept, and the
 * restore skips every table already restored and truncates and redoes the one it was copying
 * (restore-destination.ts). A host lost for good (no importer polled its queue for
 * hostLostAfterSeconds) is replaced as in a pgdata import: another host claims the import and runs
 * check, dump and restore again from an empty directory. Its dump is a new snapshot, so it restores
 * with --clean: the dump's objects the lost host created in the destination are dropped and
 * created again (the first check refused a destination holding any of them unless --clean was given).
 */
export async function dumpRestoreImportWorkflow(input: DumpRestoreImportInput): Promise<ImportStatus> {
  const t: ImportTimeouts = { ...DEFAULTS, ...input.options };
  const prefix = input.s3Prefix ?? importPrefix(input.importId);
  const runKey = workflowInfo().firstExecutionRunId.slice(0, 8);
  const status: ImportStatus = initialImportStatus({
    import_id: input.importId,
    tenant_id: '',
    timeline_id: '',
    database: input.database,
    started_at: new Date(workflowInfo().startTime).toISOString(),
    mode: 'dump-restore',
    s3_prefix: prefix,
    destination: input.destination,
    restore: null,
  });
  setHandler(importStatusQuery, () => status);
  upsertSearchAttributes([{ key: IMPORT_ID, value: input.importId }]);

  const setPhase = (phase: ImportPhase) => {
    status.phase = phase;
    setCurrentDetails([`**phase:** ${phase}`, `**destination:** ${input.destination}`, status.host ? `**host:** ${status.host}` : '', status.error ? `**error:** ${status.error}` : ''].filter(Boolean).join('\n'));
    log.info('import phase', { importId: input.importId, phase });
  };
  const timed = async <T>(name: string, fn: () => Promise<T>, note?: (r: T) => string | undefined): Promise<T> => {
    const started = Date.now();
    const result = await fn();
    const text = note?.(result);
    status.steps.push({ name, ms: Date.now() - started, ...(text ? { note: text } : {}) });
    return result;
  };

  let host: { taskQueue: string; workdir: string } | undefined;
  const shared = proxyActivities<Pick<DumpRestoreActivities, 'writeDumpRestoreStatus'>>({
    taskQueue: t.importerTaskQueue,
    startToCloseTimeout: '1 minute',
    scheduleToCloseTimeout: `${t.claimTimeoutSeconds} seconds`,
    retry: { initialInterval: '1 second', maximumInterval: '30 seconds' },
  });

  try {
    setPhase('prepare');
    await timed('prepareImportPrefix', () => controlPlane.prepareImportPrefix({ prefix, spec: input.spec }));

    let replacing = false;
    let restored;
    for (;;) {
      setPhase('init');
      status.local_run += 1;
      const claim = await timed('claimImportHost', () => claimActivities(t).claimImportHost({ importId: input.importId, localRun: status.local_run, runKey })).catch((err: unknown) => {
        if (err instanceof ActivityFailure && err.cause instanceof TimeoutFailure) {
          throw ApplicationFailure.nonRetryable(
            `no importer host claimed the import within ${t.claimTimeoutSeconds} s: is an importer worker (durable-compute worker importer) polling task queue ${t.importerTaskQueue}?`,
            'NoImporterHost',
          );
        }
        throw err;
      });
      status.host = claim.hostId;
      const moved = status.host_changes.at(-1);
      if (moved && moved.to === null) moved.to = claim.hostId;
      host = { taskQueue: claim.taskQueue, workdir: claim.workdir };
      setPhase('init');
      try {
        restored = await runOnHost(claim, replacing);
        break;
      } catch (err) {
        if (!isHostLost(err) || !patched(HOST_REPLACEMENT_PATCH)) throw err;
        const change: ImportHostChange = {
          from: claim.hostId,
          to: null,
          reason: `no answer from host ${claim.hostId} for ${t.hostLostAfterSeconds} s during ${status.phase}`,
          at: new Date().toISOString(),
        };
        const maxHostChanges = input.maxHostChanges ?? 3;
        if (status.host_changes.length >= maxHostChanges) {
          throw ApplicationFailure.nonRetryable(`${change.reason}, and the import already moved ${status.host_changes.length} times; the destination may hold part of the data: start the import again with --clean`, 'HostLost');
        }
        status.host_changes.push(change);
        log.warn(`host lost, restarting the import on another host: ${change.reason}`);
        host = undefined;
        replacing = true;
      }
    }
    status.restore = restored;
    status.progress = { bytesDone: restored.bytes_done, bytesTotal: restored.bytes_total, filesDone: null, filesTotal: null, tablesDone: restored.tables_done, tablesTotal: restored.tables_total, section: 'done' };
    await timed('writeDumpRestoreStatus', () => shared.writeDumpRestoreStatus({ prefix }));
    status.finished_at = new Date().toISOString();
    setPhase('done');
    await removeWorkdir();
    return status;
  } catch (err) {
    const cancelled = isCancellation(err);
    const lost = err instanceof ActivityFailure && err.cause instanceof TimeoutFailure && err.cause.timeoutType === 'SCHEDULE_TO_START';
    status.error = cancelled
      ? `cancelled during ${status.phase}`
      : lost
        ? `${status.phase} failed: importer host ${status.host} did not answer for ${t.hostLostAfterSeconds} s; its dump and restore journal are gone and the destination may hold part of the data: start the import again with --clean`
        : `${status.phase} failed: ${describeFailure(err)}`;
    status.finished_at = new Date().toISOString();
    const phase = status.phase;
    await CancellationScope.nonCancellable(async () => {
      await shared.writeDumpRestoreStatus({ prefix, error: status.error! }).catch((e: unknown) => log.warn('could not write status/fast_import', { error: describeFailure(e) }));
      await removeWorkdir();
    });
    setPhase(cancelled ? 'cancelled' : 'failed');
    if (cancelled) throw err;
    throw ApplicationFailure.nonRetryable(status.error, 'ImportFailed', { phase, type: failureType(err) ?? null });
  }

  /** check -> dump -> restore on the claimed host; a replacing run cleans what the lost host restored. */
  async function runOnHost(claim: { taskQueue: string; workdir: string }, replacing: boolean) {
    const steps = dumpRestoreHostActivities(claim.taskQueue, t);
    const where = {
      workdir: claim.workdir,
      prefix,
      clean: input.clean || replacing,
      jobs: input.jobs,
      splitTablesLargerThan: input.splitTablesLargerThan,
      batchBytes: input.batchBytes,
    };
    await timed('checkDumpRestoreEndpoints', () => steps.checkDumpRestoreEndpoints(where), (r) =>
      `${r.sourceRelations} source relations${r.conflicts.length ? `, ${r.conflicts.length} replaced in the destination (--clean${replacing && !input.clean ? ', after a lost host' : ''})` : ''}`,
    );

    setPhase('dump');
    const dump = await timed('dumpSource', () => hostActivities(claim.taskQueue, t).dumpSource({ workdir: claim.workdir, prefix, jobs: input.jobs }), (r) =>
      `${r.files} files, ${r.bytes} bytes${r.skipped ? ' (kept from before)' : ''}`,
    );
    status.dump = { bytes: dump.bytes, files: dump.files, skipped: dump.skipped };

    setPhase('restore');
    return timed('restoreIntoDestination', () => steps.restoreIntoDestination(where), (r) =>
      `${r.tables_done}/${r.tables_total} tables, ${r.entries_done}/${r.entries_total} entries${r.tables_kept ? `, ${r.tables_kept} tables kept from an interrupted attempt` : ''}${r.tables_resumed ? `, ${r.tables_resumed} resumed after their committed batches` : ''}${r.tables_redone ? `, ${r.tables_redone} redone` : ''}`,
    );
  }

  /** Best effort: the host may be gone, and the import's outcome does not depend on it. */
  async function removeWorkdir(): Promise<void> {
    if (!host) return;
    const { taskQueue, workdir } = host;
    host = undefined;
    await dumpRestoreHostActivities(taskQueue, t)
      .destroyDumpRestoreWorkdir({ workdir })
      .catch((e: unknown) => log.warn('could not remove the working directory', { error: describeFailure(e) }));
  }
}
