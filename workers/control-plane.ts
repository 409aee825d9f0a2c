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
 * history then, not memory all the time: 1,000 cached keep the worker well under 1 GiB while it
 * holds 10,000 computes (bench/results/fleet.md). The SDK's default (about 600 per GiB of heap
 * limit, 2,300 here) sizes for busy workflows.
 */
export const CONTROL_PLANE_MAX_CACHED_WORKFLOWS = 1000;

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
