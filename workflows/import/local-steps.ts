/**
 * The steps whose files live on one importer host: claim a host, then init → dump → restore → stop
 * → upload there. A host that is gone for good is replaced: the local steps start over on another
 * host from an empty directory, after the prefix's pgdata/ and status/ are cleared.
 */
import { ActivityFailure, ApplicationFailure, log, TimeoutFailure } from '@temporalio/workflow';
import type { ImportHostChange } from '../../model/import-status';
import { claimActivities, controlPlane, hostActivities } from './activity-proxies';
import { isHostLost, StepFailure } from './failures';
import type { ImportRun } from './run';

type HostActivities = ReturnType<typeof hostActivities>;

/** Claims a host and runs every step whose files live on it; moves to another host if it is lost. */
export async function runLocalSteps(run: ImportRun): Promise<void> {
  const { status, o } = run;
  for (;;) {
    status.local_run += 1;
    run.setPhase('init');
    const claim = await claimHost(run);
    status.host = claim.hostId;
    const moved = status.host_changes.at(-1);
    if (moved && moved.to === null) moved.to = claim.hostId;
    run.workdir = { taskQueue: claim.taskQueue, workdir: claim.workdir };
    run.showDetails();
    const host = hostActivities(claim.taskQueue, run.timeouts);
    try {
      await runOnHost(run, host, claim.workdir);
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
      run.workdir = undefined;
      run.showDetails();
      // The next host uploads its own data directory: nothing of this one's may remain.
      await run.timed(status.phase, 'cleanImportData', () => controlPlane.cleanImportData({ prefix: run.prefix }));
    }
  }
}

/** The first step of a local run: whichever importer takes it becomes the run's host. */
function claimHost(run: ImportRun) {
  const { input, status, o } = run;
  return run
    .timed('init', 'claimImportHost', () => claimActivities(run.timeouts).claimImportHost({ importId: input.importId, localRun: status.local_run, runKey: run.runKey }))
    .catch((err: unknown) => {
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
}

/** init → dump → restore → stop → upload, all in the claimed host's working directory. */
async function runOnHost(run: ImportRun, host: HostActivities, workdir: string): Promise<void> {
  const { input, status, prefix } = run;
  const where = { workdir };
  await run.timed('init', 'initScratchPostgres', () => host.initScratchPostgres({ ...where, database: input.database, jobs: input.jobs }));
  run.setPhase('dump');
  const dump = await run.timed(
    'dump',
    'dumpSource',
    () => host.dumpSource({ ...where, prefix, jobs: input.jobs }),
    (r) => `${r.files} files, ${r.bytes} bytes${r.skipped ? ' (kept from before)' : ''}`,
  );
  status.dump = { bytes: dump.bytes, files: dump.files, skipped: dump.skipped };
  run.setPhase('restore');
  await run.timed('restore', 'restoreDump', () => host.restoreDump({ ...where, database: input.database, jobs: input.jobs }));
  await run.timed('restore', 'stopScratchPostgres', () => host.stopScratchPostgres(where), (r) => `checkpoint ${r.checkpointLsn}`);
  run.setPhase('upload');
  const up = await run.timed(
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
}
