import path from 'node:path';
import { createComputeNodeActivities } from '../activities/compute/node-activities';
import { createFailpoints } from '../activities/failpoints';
import { computeStorageBackend } from '../activities/storage-backend';
import { prepareSidecars } from '../activities/storage-backend/stock/sidecars';
import type { AppConfig } from '../common/config';
import { encryptedDataConverter } from '../common/codec/data-converter';
import { UserFacingError } from '../common/errors';
import { findPostgres } from '../common/pg-binaries';
import { computeTaskQueue, isValidComputeId } from '../model/compute-status';
import { createWorker } from './run-worker';

export interface ComputeWorkerOptions {
  computeId: string;
  pgdata: string;
  pgBinDir?: string;
  storageBackend?: 'stock' | 'neon';
  /** argv of the safekeeper sync command; default: the storage backend's. */
  syncSafekeepersCommand?: string[];
  failpoints?: string[];
}

/**
 * The worker inside a compute VM: only the activities that touch this compute's PGDATA and
 * Postgres, on the compute's own task queue. Activities only; the workflow runs elsewhere.
 */
export async function createComputeWorker(config: AppConfig, opts: ComputeWorkerOptions) {
  if (!isValidComputeId(opts.computeId)) throw new UserFacingError(`invalid compute ID ${JSON.stringify(opts.computeId)}`);
  if (!path.isAbsolute(opts.pgdata)) throw new UserFacingError(`--pgdata must be an absolute path, got ${opts.pgdata}`);
  const pg = findPostgres({ pgBinDir: opts.pgBinDir ?? config.pgBinDir });
  // The stock backend's sidecars start on every compute start: ready them before polling.
  if ((opts.storageBackend ?? 'stock') === 'stock') await prepareSidecars();
  const activities = createComputeNodeActivities({
    pgBinDir: pg.binDir,
    pgdata: opts.pgdata,
    backend: computeStorageBackend(opts.storageBackend ?? 'stock'),
    syncSafekeepersCommand: opts.syncSafekeepersCommand,
    failpoint: createFailpoints(new Set(opts.failpoints ?? [])),
    cacheStorage: { s3: config.s3, prefix: config.cacheStatePrefix },
  });
  const taskQueue = computeTaskQueue(opts.computeId);
  const handle = await createWorker(config, {
    taskQueue,
    activities,
    dataConverter: encryptedDataConverter(config.payloadKeys),
    identity: `compute-${opts.computeId}@${process.pid}`,
  });
  return { ...handle, taskQueue };
}
