import { fileURLToPath } from 'node:url';
import { createControlPlaneActivities } from '../activities/compute/control-plane-activities';
import { importControlActivitiesFor } from '../activities/import-control';
import { Client } from '@temporalio/client';
import { Runtime } from '@temporalio/worker';
import type { AppConfig, WorkerMetricsConfig } from '../common/config';
import { encryptedDataConverter } from '../common/codec/data-converter';
import { connectClient } from '../common/temporal-connection';
import { startFleetMetrics } from './fleet-metrics';
import { createWorker } from './run-worker';

export const WORKFLOWS_PATH = fileURLToPath(new URL('../workflows/index.ts', import.meta.url));

/** Runs every workflow plus the control-plane activities, on the control-plane task queue. */
export async function createControlPlaneWorker(config: AppConfig) {
  return createWorker(config, {
    taskQueue: config.temporal.controlPlaneTaskQueue,
    workflowsPath: WORKFLOWS_PATH,
    activities: { ...createControlPlaneActivities(), ...importControlActivitiesFor(config) },
    dataConverter: encryptedDataConverter(config.payloadKeys),
    identity: `control-plane@${process.pid}`,
  });
}

/** The fleet gauges (computes by status, imports by phase) on the Runtime's metrics port. */
export async function startControlPlaneFleetMetrics(config: AppConfig, metrics: WorkerMetricsConfig): Promise<{ close(): Promise<void> }> {
  const connection = await connectClient(config.temporal);
  const client = new Client({ connection, namespace: config.temporal.namespace, dataConverter: encryptedDataConverter(config.payloadKeys) });
  const fleet = startFleetMetrics(client, Runtime.instance().metricMeter, metrics.fleetRefreshSeconds, (line) => console.log(`${new Date().toISOString()} ${line}`));
  return {
    close: async () => {
      fleet.stop();
      await connection.close();
    },
  };
}
