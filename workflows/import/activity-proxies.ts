import { proxyActivities, type ActivityOptions } from '@temporalio/workflow';
import type { ImporterActivities } from '../../activities/importer/activities';
import type { ImportControlActivities } from '../../activities/import-control/control-plane';
import type { ImporterClaimActivities, ImporterHostActivities } from '../../activities/import-control/importer-host';

export interface ImportTimeouts {
  /** A host step that sends no heartbeat this long is retried (on the same host). */
  heartbeatTimeoutSeconds: number;
  /** A host step nobody picks up this long means the host is gone: the local steps move elsewhere. */
  hostLostAfterSeconds: number;
  /** How long a new local run may wait for any importer to claim it. */
  claimTimeoutSeconds: number;
  /** The importer pool's shared queue. */
  importerTaskQueue: string;
}

/**
 * Storage and S3 calls from the control plane: short, retried with backoff through brief outages.
 * They heartbeat while they run, so a killed control-plane worker's call is retried after 20 s.
 */
export const controlPlane = proxyActivities<ImportControlActivities>({
  startToCloseTimeout: '2 minutes',
  heartbeatTimeout: '20 seconds',
  retry: { initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '30 seconds', maximumAttempts: 10 },
});

/** The first step of a local run: whichever importer takes it becomes the run's host. */
export function claimActivities(t: ImportTimeouts) {
  return proxyActivities<ImporterClaimActivities>({
    taskQueue: t.importerTaskQueue,
    startToCloseTimeout: '1 minute',
    scheduleToCloseTimeout: `${t.claimTimeoutSeconds} seconds`,
    retry: { initialInterval: '1 second', maximumInterval: '30 seconds' },
    summary: 'claim an importer host',
  });
}

/** Status objects: any importer can write them, so they do not depend on the run's host. */
export function sharedImporterActivities(t: ImportTimeouts) {
  return proxyActivities<Pick<ImporterActivities, 'writePgdataStatus' | 'writeFastImportStatus'>>({
    taskQueue: t.importerTaskQueue,
    startToCloseTimeout: '1 minute',
    scheduleToCloseTimeout: `${t.claimTimeoutSeconds} seconds`,
    retry: { initialInterval: '1 second', maximumInterval: '30 seconds' },
  });
}

/**
 * The steps on the host that holds the import's files. Each heartbeats every few seconds, so a
 * killed worker is noticed within the heartbeat timeout and the step is retried on the restarted
 * worker; a step that waits in the host's queue longer than `hostLostAfterSeconds` fails with a
 * schedule-to-start timeout, which the workflow reads as a lost host.
 */
export function hostActivities(taskQueue: string, t: ImportTimeouts) {
  const step = (startToClose: string, summary: string): ActivityOptions => ({
    taskQueue,
    startToCloseTimeout: startToClose,
    scheduleToStartTimeout: `${t.hostLostAfterSeconds} seconds`,
    heartbeatTimeout: `${t.heartbeatTimeoutSeconds} seconds`,
    retry: { initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '30 seconds', maximumAttempts: 10 },
    summary,
  });
  const on = (options: ActivityOptions) => proxyActivities<ImporterHostActivities>(options);
  return {
    initScratchPostgres: on(step('30 minutes', 'initdb and start the scratch Postgres')).initScratchPostgres,
    dumpSource: on(step('48 hours', 'pg_dump the source')).dumpSource,
    restoreDump: on(step('48 hours', 'pg_restore into the scratch Postgres')).restoreDump,
    stopScratchPostgres: on(step('2 hours', 'clean stop')).stopScratchPostgres,
    uploadPgdata: on(step('48 hours', 'upload the data directory')).uploadPgdata,
    // Cleanup is best effort: a host that is gone keeps its directory, and nobody waits long for it.
    destroyWorkdir: proxyActivities<ImporterHostActivities>({
      taskQueue,
      startToCloseTimeout: '10 minutes',
      scheduleToStartTimeout: '30 seconds',
      heartbeatTimeout: `${t.heartbeatTimeoutSeconds} seconds`,
      retry: { initialInterval: '1 second', maximumAttempts: 3 },
      summary: 'remove the working directory',
    }).destroyWorkdir,
  };
}
