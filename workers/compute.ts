import path from 'node:path';
import { Client } from '@temporalio/client';
import type { NativeConnection } from '@temporalio/worker';
import { createComputeNodeActivities } from '../activities/compute/node-activities';
import type { ComputeNodeActivities } from '../activities/compute/types';
import { createFailpoints } from '../activities/failpoints';
import { computeStorageBackend } from '../drivers/storage-backend';
import { prepareSidecars } from '../drivers/storage-backend/stock/sidecars';
import type { AppConfig } from '../common/config';
import { encryptedDataConverter } from '../common/codec/data-converter';
import { UserFacingError } from '../common/errors';
import { findPostgres } from '../common/pg-binaries';
import { log } from '../common/logger';
import { takeOverAbandonedSteps } from '../common/step-leases';
import { computeTaskQueue, isValidComputeId } from '../model/compute-status';
import { createWorker, createWorkerOn, type WorkerSpec } from './run-worker';

/** What the compute worker needs before it knows its compute (a pool VM's worker starts so). */
export interface ComputeNodeOptions {
  pgdata: string;
  pgBinDir?: string;
  storageBackend?: 'stock' | 'neon';
  /** argv of the safekeeper sync command; default: the storage backend's. */
  syncSafekeepersCommand?: string[];
  failpoints?: string[];
}

export interface ComputeWorkerOptions extends ComputeNodeOptions {
  computeId: string;
}

/** Validates the VM's settings and builds its activities; nothing here depends on the compute ID. */
export function computeNodeActivitiesFor(config: AppConfig, opts: ComputeNodeOptions): ComputeNodeActivities {
  if (!path.isAbsolute(opts.pgdata)) throw new UserFacingError(`--pgdata must be an absolute path, got ${opts.pgdata}`);
  const pg = findPostgres({ pgBinDir: opts.pgBinDir ?? config.pgBinDir });
  return createComputeNodeActivities({
    pgBinDir: pg.binDir,
    pgdata: opts.pgdata,
    backend: computeStorageBackend(opts.storageBackend ?? 'stock'),
    syncSafekeepersCommand: opts.syncSafekeepersCommand,
    failpoint: createFailpoints(new Set(opts.failpoints ?? [])),
    cacheStorage: { s3: config.s3, prefix: config.cacheStatePrefix },
  });
}

/** The VM's activities, with what they start on every compute start (the stock backend's sidecars) made ready. */
export async function prepareComputeNodeActivities(config: AppConfig, opts: ComputeNodeOptions): Promise<ComputeNodeActivities> {
  const activities = computeNodeActivitiesFor(config, opts);
  if ((opts.storageBackend ?? 'stock') === 'stock') await prepareSidecars();
  return activities;
}

/** The compute worker's options for one compute: its own task queue, activities only (no workflow bundle). */
export function computeWorkerSpec(config: AppConfig, computeId: string, activities: ComputeNodeActivities): WorkerSpec & { taskQueue: string; identity: string } {
  if (!isValidComputeId(computeId)) throw new UserFacingError(`invalid compute ID ${JSON.stringify(computeId)}`);
  return {
    taskQueue: computeTaskQueue(computeId),
    activities,
    dataConverter: encryptedDataConverter(config.payloadKeys),
    identity: `compute-${computeId}@${process.pid}`,
    // One compute's steps run one at a time; the watch, a reconfigure and a cache offload can
    // overlap. Few slots and pollers keep the VM agent small.
    maxConcurrentActivityTaskExecutions: 8,
    maxConcurrentActivityTaskPolls: 2,
  };
}

/**
 * Before polling: a watch round that a killed predecessor on this PGDATA held (its lease beside
 * PGDATA names the attempt) is reported ended, neither exited nor with a newer last_active, so the
 * workflow's next round runs on this worker now. Postgres outlives a restart of the worker, and
 * left alone the old round would end only at its heartbeat timeout, 10 minutes without a watch.
 */
export async function handOverAbandonedWatch(connection: NativeConnection, config: AppConfig, pgdata: string): Promise<void> {
  const client = new Client({ connection, namespace: config.temporal.namespace, dataConverter: encryptedDataConverter(config.payloadKeys) });
  await takeOverAbandonedSteps(
    path.dirname(pgdata),
    async (taskToken, lease) => {
      if (lease.activityType !== 'watchPostgres') throw new Error(`a ${lease.activityType} attempt is not handed over`);
      await client.activity.complete(taskToken, { exited: false, lastActive: null });
    },
    (line) => log().info(line),
    pgdata,
  );
}

/** The compute worker on an open connection (a pool VM's agent creates it once it is assigned). */
export async function createComputeWorkerOn(connection: NativeConnection, config: AppConfig, computeId: string, activities: ComputeNodeActivities, pgdata: string) {
  const spec = computeWorkerSpec(config, computeId, activities);
  const worker = await createWorkerOn(connection, config, spec);
  await handOverAbandonedWatch(connection, config, pgdata);
  return { worker, taskQueue: spec.taskQueue, identity: spec.identity };
}

/**
 * The worker inside a compute VM: only the activities that touch this compute's PGDATA and
 * Postgres, on the compute's own task queue. Activities only; the workflow runs elsewhere.
 */
export async function createComputeWorker(config: AppConfig, opts: ComputeWorkerOptions) {
  if (!isValidComputeId(opts.computeId)) throw new UserFacingError(`invalid compute ID ${JSON.stringify(opts.computeId)}`);
  const spec = computeWorkerSpec(config, opts.computeId, await prepareComputeNodeActivities(config, opts));
  const handle = await createWorker(config, spec);
  try {
    await handOverAbandonedWatch(handle.connection, config, opts.pgdata);
  } catch (err) {
    await handle.connection.close();
    throw err;
  }
  return { ...handle, taskQueue: spec.taskQueue, identity: spec.identity };
}
