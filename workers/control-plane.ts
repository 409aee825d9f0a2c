import { fileURLToPath } from 'node:url';
import { createControlPlaneActivities } from '../activities/compute/control-plane-activities';
import { importControlActivitiesFor } from '../activities/import-control';
import type { AppConfig } from '../common/config';
import { encryptedDataConverter } from '../common/codec/data-converter';
import { createWorker } from './run-worker';

export const WORKFLOWS_PATH = fileURLToPath(new URL('../workflows/index.ts', import.meta.url));

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
    workflowsPath: WORKFLOWS_PATH,
    activities: { ...createControlPlaneActivities(), ...importControlActivitiesFor(config) },
    dataConverter: encryptedDataConverter(config.payloadKeys),
    identity: `control-plane@${process.pid}`,
    maxCachedWorkflows: config.temporal.maxCachedWorkflows ?? CONTROL_PLANE_MAX_CACHED_WORKFLOWS,
  });
}
