import path from 'node:path';
import v8 from 'node:v8';
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
 * history then, not memory all the time; with thousands of computes almost every idle task is a
 * replay whatever the cache holds. What the cache serves is a compute's burst of tasks while it
 * starts or is configured, and 100 cover the 32 concurrent starts of the fleet bench. A cached
 * compute workflow costs about 1.2 MiB (each one evaluates its own copy of the workflow modules;
 * bench/results/fleet-cache1000.md). The SDK's default (about 600 per GiB of heap limit, 2,300
 * here) sizes for busy workflows.
 */
export const CONTROL_PLANE_MAX_CACHED_WORKFLOWS = 100;

/**
 * Old-generation limit of the workflow thread's V8 heap, in MiB. Without one, V8 sizes it from
 * the machine's memory (4 GiB here) and, while computes start, lets evicted workflows' garbage pile
 * up to gigabytes before collecting it (bench/results/fleet.md: 1.8 GiB RSS starting 1,000
 * computes). The cache's live set is about 120 MiB; this leaves room and keeps the worker under 1 GiB.
 */
export const CONTROL_PLANE_WORKFLOW_HEAP_MIB = 384;

/**
 * Caps the heap of V8 isolates created from now on (the SDK starts its workflow thread in
 * `Worker.create`), unless the operator chose a limit with --max-old-space-size. For the
 * control-plane worker's own process only: the flag is process-wide.
 */
export function limitWorkflowThreadHeap(mib = CONTROL_PLANE_WORKFLOW_HEAP_MIB): void {
  const chosen = [...process.execArgv, ...(process.env.NODE_OPTIONS ?? '').split(/\s+/)].some((a) => a.startsWith('--max-old-space-size'));
  if (!chosen) v8.setFlagsFromString(`--max-old-space-size=${mib}`);
}

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
