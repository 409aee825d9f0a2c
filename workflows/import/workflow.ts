import { setHandler, upsertSearchAttributes } from '@temporalio/workflow';
import type { ImportStatus } from '../../model/import-status';
import { IMPORT_ID, TENANT_ID, TIMELINE_ID } from '../../model/search-attributes';
import { controlPlane, sharedImporterActivities, type ImportTimeouts } from './activity-proxies';
import { failImport } from './failure-cleanup';
import { runLocalSteps } from './local-steps';
import { importCompleteSignal, importStatusQuery } from './messages';
import { waitForPageserver } from './pageserver-wait';
import { ImportRun } from './run';

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
  const run = new ImportRun(input);
  const { status, prefix, timeline, timeouts } = run;
  setHandler(importStatusQuery, () => status);
  setHandler(importCompleteSignal, (notice) => {
    if (notice?.tenant_id === input.tenantId && notice.timeline_id === input.timelineId) run.completion = notice;
  });
  upsertSearchAttributes([
    { key: IMPORT_ID, value: input.importId },
    { key: TENANT_ID, value: input.tenantId },
    { key: TIMELINE_ID, value: input.timelineId },
  ]);

  try {
    run.setPhase('prepare');
    await run.timed('prepare', 'prepareImportPrefix', () => controlPlane.prepareImportPrefix({ prefix, spec: input.spec }));
    run.pageserverMayHaveStarted = true;
    await run.timed('prepare', 'startPageserverImport', () => controlPlane.startPageserverImport({ ...timeline, prefix, idempotencyKey: run.idempotencyKey }), (r) =>
      r.alreadyRunning ? 'already running (429)' : `HTTP ${r.httpStatus}`,
    );

    await runLocalSteps(run);
    // The commit marker, only now that every file is uploaded: the pageserver starts reading.
    await run.timed('upload', 'writePgdataStatus', () => sharedImporterActivities(timeouts).writePgdataStatus({ prefix }));

    run.setPhase('pageserver_import');
    const done = await run.timed('pageserver_import', 'pageserverImport', () => waitForPageserver(run), (r) => `start LSN ${r.lsn}`);
    status.start_lsn = done.lsn;
    await run.timed('pageserver_import', 'activateImportedTimeline', () => controlPlane.activateImportedTimeline({ ...timeline, lsn: done.lsn, pgVersion: done.pgVersion }));
    await run.timed('pageserver_import', 'writeFastImportStatus', () => sharedImporterActivities(timeouts).writeFastImportStatus({ prefix }));
    status.finished_at = new Date().toISOString();
    run.setPhase('done');
    await run.removeWorkdir();
    return status;
  } catch (err) {
    return await failImport(run, err);
  }
}
