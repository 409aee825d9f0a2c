import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createControlPlaneActivities } from '../activities/compute/control-plane-activities';
import { importControlActivitiesFor } from '../activities/import-control';
import { Client } from '@temporalio/client';
import { Runtime } from '@temporalio/worker';
import type { AppConfig, WorkerMetricsConfig } from '../common/config';
import { encryptedDataConverter } from '../common/codec/data-converter';
import { connectClient } from '../common/temporal-connection';
import { startFleetMetrics } from './fleet-metrics';
import { isBundled } from '../common/node-entry';
import { createWorker } from './run-worker';
import { log } from '../common/logger';

export const WORKFLOWS_PATH = fileURLToPath(new URL('../workflows/index.ts', import.meta.url));
/** Loaded into the workflow sandbox with DURABLE_COMPUTE_SPEC_TRUST=restricted. */
export const RESTRICTED_SPEC_TRUST_INTERCEPTORS = fileURLToPath(new URL('../workflows/restricted-spec-trust.ts', import.meta.url));

/** The workflow code: a bundle prepared by `npm run build` beside the CLI bundle, else the sources, bundled when the worker starts. */
function workflowCode(): { workflowBundle: { codePath: string } } | { workflowsPath: string } {
  if (isBundled) return { workflowBundle: { codePath: path.join(path.dirname(fileURLToPath(import.meta.url)), 'workflow-bundle.js') } };
  return { workflowsPath: WORKFLOWS_PATH };
}

/**
 * Workflows kept in memory between their tasks. An idle compute's workflow has a task once per
 * watch round (30 minutes), so a compute out of the cache costs one replay of its short, bounded
 * history then, not memory all the time. A cached compute workflow costs about 1.2 MiB of RSS
 * (bench/results/fleet-cache1000.md: 1,777 MiB with 1,000 cached over a base of about 540), so 300
 * keep the worker under 1 GiB however many computes it holds. The SDK's default (about 600 per
 * GiB of heap limit, 2,300 here) sizes for busy workflows.
 */
export const CONTROL_PLANE_MAX_CACHED_WORKFLOWS = 300;

/** Runs every workflow plus the control-plane activities, on the control-plane task queue. */
export async function createControlPlaneWorker(config: AppConfig) {
  return createWorker(config, {
    taskQueue: config.temporal.controlPlaneTaskQueue,
    ...workflowCode(),
    activities: { ...createControlPlaneActivities(), ...importControlActivitiesFor(config) },
    dataConverter: encryptedDataConverter(config.payloadKeys),
    interceptors: { workflowModules: config.specTrust === 'restricted' ? [RESTRICTED_SPEC_TRUST_INTERCEPTORS] : [] },
    identity: `control-plane@${process.pid}`,
    maxCachedWorkflows: config.temporal.maxCachedWorkflows ?? CONTROL_PLANE_MAX_CACHED_WORKFLOWS,
  });
}

/** The fleet gauges (computes by status, imports by phase) on the Runtime's metrics port. */
export async function startControlPlaneFleetMetrics(config: AppConfig, metrics: WorkerMetricsConfig): Promise<{ close(): Promise<void> }> {
  const connection = await connectClient(config.temporal);
  const client = new Client({ connection, namespace: config.temporal.namespace, dataConverter: encryptedDataConverter(config.payloadKeys) });
  const fleet = startFleetMetrics(client, Runtime.instance().metricMeter, metrics.fleetRefreshSeconds, (line) => log().info(line));
  return {
    close: async () => {
      fleet.stop();
      await connection.close();
    },
  };
}
