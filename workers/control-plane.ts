import { fileURLToPath } from 'node:url';
import { createControlPlaneActivities } from '../activities/compute/control-plane-activities';
import { importControlActivitiesFor } from '../activities/import-control';
import type { AppConfig } from '../common/config';
import { encryptedDataConverter } from '../common/codec/data-converter';
import { createWorker } from './run-worker';

export const WORKFLOWS_PATH = fileURLToPath(new URL('../workflows/index.ts', import.meta.url));
/** Loaded into the workflow sandbox with DURABLE_COMPUTE_SPEC_TRUST=restricted. */
export const RESTRICTED_SPEC_TRUST_INTERCEPTORS = fileURLToPath(new URL('../workflows/restricted-spec-trust.ts', import.meta.url));

/** Runs every workflow plus the control-plane activities, on the control-plane task queue. */
export async function createControlPlaneWorker(config: AppConfig) {
  return createWorker(config, {
    taskQueue: config.temporal.controlPlaneTaskQueue,
    workflowsPath: WORKFLOWS_PATH,
    activities: { ...createControlPlaneActivities(), ...importControlActivitiesFor(config) },
    dataConverter: encryptedDataConverter(config.payloadKeys),
    interceptors: { workflowModules: config.specTrust === 'restricted' ? [RESTRICTED_SPEC_TRUST_INTERCEPTORS] : [] },
    identity: `control-plane@${process.pid}`,
  });
}
