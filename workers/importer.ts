import { Client } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import type { NativeConnection, Worker } from '@temporalio/worker';
import { createImporterActivities } from '../activities/importer/activities';
import { createDumpRestoreActivities, createDumpRestoreHostActivities } from '../activities/importer/restore-activities';
import { detectHostResources } from '../drivers/importer/bulk-load-settings';
import { createImporterClaimActivities, createImporterHostActivities, resolveImporterHost, type ImporterHost } from '../activities/import-control/importer-host';
import { importKeyProviders } from '../drivers/secrets/import-keys';
import { takeOverAbandonedSteps } from '../common/step-leases';
import { createS3Client } from '../drivers/s3/client';
import type { AppConfig } from '../common/config';
import { encryptedDataConverter } from '../common/codec/data-converter';
import { findPostgres } from '../common/pg-binaries';
import { connectClient } from '../common/temporal-connection';
import { createWorker } from './run-worker';
import { log } from '../common/logger';

const MiB = 1024 * 1024;

export interface ImporterWorkerHandle {
  host: ImporterHost;
  /** Claims local runs and writes the status objects: any importer may do that. */
  shared: { worker: Worker; connection: NativeConnection };
  /** The steps whose files live on this host. */
  local: { worker: Worker; connection: NativeConnection };
}

/**
 * The worker on an importer machine: the importer steps on this host's own task queue, and the
 * claim of new local runs on the queue all importers share. Activities only; the import
 * workflow runs on the control-plane worker.
 */
export async function createImporterWorker(config: AppConfig, opts: { pgBinDir?: string; log?: (line: string) => void } = {}): Promise<ImporterWorkerHandle> {
  const install = findPostgres({ pgBinDir: opts.pgBinDir ?? config.pgBinDir });
  const settings = config.imports.importer;
  const host = resolveImporterHost(settings.workdirRoot, settings.sharedTaskQueue, settings.hostId);
  const detected = detectHostResources();
  const base = {
    s3: createS3Client(config.s3),
    bucket: config.s3.bucket,
    install,
    keyProviders: importKeyProviders(config.imports),
    resources: {
      totalMemoryBytes: settings.memoryMb ? settings.memoryMb * MiB : detected.totalMemoryBytes,
      cpus: settings.cpus ?? detected.cpus,
    },
  };
  const dumpRestore = createDumpRestoreActivities(base);
  const importer = createImporterActivities({
    ...base,
    upload: {
      ...(settings.uploadConcurrency ? { concurrency: settings.uploadConcurrency } : {}),
      ...(settings.multipartThresholdMb ? { multipartThreshold: settings.multipartThresholdMb * MiB } : {}),
      ...(settings.uploadPartSizeMb ? { partSize: settings.uploadPartSizeMb * MiB } : {}),
    },
  });
  const dataConverter = encryptedDataConverter(config.payloadKeys);
  const identity = `importer-${host.hostId}@${process.pid}`;
  const local = await createWorker(config, {
    taskQueue: host.taskQueue,
    activities: { ...createImporterHostActivities(host, importer), ...createDumpRestoreHostActivities(host, dumpRestore, install) },
    dataConverter,
    identity,
    // Progress reaches `import status` (and a resumed attempt) within seconds, not every 0.8 x the heartbeat timeout.
    maxHeartbeatThrottleInterval: '5 seconds',
  });
  try {
    const shared = await createWorker(config, {
      taskQueue: host.sharedTaskQueue,
      activities: {
        ...createImporterClaimActivities(host),
        writePgdataStatus: importer.writePgdataStatus,
        writeFastImportStatus: importer.writeFastImportStatus,
        writeDumpRestoreStatus: dumpRestore.writeDumpRestoreStatus,
      },
      dataConverter,
      identity,
    });
    try {
      // Before polling: the steps a killed predecessor on this disk left running are retried now,
      // not after their heartbeat timeout.
      await handBackAbandonedSteps(config, host, dataConverter, opts.log ?? ((line) => log().info(line)));
    } catch (err) {
      await shared.connection.close();
      throw err;
    }
    return { host, shared, local };
  } catch (err) {
    await local.connection.close();
    throw err;
  }
}

async function handBackAbandonedSteps(config: AppConfig, host: ImporterHost, dataConverter: ReturnType<typeof encryptedDataConverter>, log?: (line: string) => void): Promise<void> {
  const connection = await connectClient(config.temporal);
  try {
    const client = new Client({ connection, namespace: config.temporal.namespace, dataConverter });
    await takeOverAbandonedSteps(
      host.workdirRoot,
      (taskToken, lease) =>
        client.activity.fail(
          taskToken,
          ApplicationFailure.create({
            type: 'ImporterRestarted',
            message: `the importer worker running this step (process ${lease.pid} on host ${host.hostId}) stopped; retrying on its successor`,
            nonRetryable: false,
            // The successor is here and ready: no backoff before the retry.
            nextRetryDelay: '10 ms',
          }),
        ),
      log,
    );
  } finally {
    await connection.close();
  }
}

/** Runs both workers until a shutdown signal, then closes their connections. */
export async function runImporterUntilShutdown(handle: ImporterWorkerHandle, onReady?: () => void): Promise<void> {
  const workers = [handle.local.worker, handle.shared.worker];
  try {
    // If one stops (fatal error), the other is drained too: half an importer is no importer.
    const stopOthers = () => {
      for (const w of workers) if (w.getState() === 'RUNNING') w.shutdown();
    };
    const running = Promise.all(workers.map((w) => w.run().finally(stopOthers)));
    onReady?.();
    await running;
  } finally {
    await Promise.all([handle.local.connection.close(), handle.shared.connection.close()]);
  }
}
