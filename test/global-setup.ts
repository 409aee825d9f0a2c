import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { TestProject } from 'vitest/node';
import { startPrivateStack } from '../dev/private-stack';
import { runningStack, stackDown, type StackEndpoints } from '../dev/stack';
import type { TemporalServerKind } from '../dev/stack-settings';
import { startMotoForRun } from './helpers/moto';

declare module 'vitest' {
  export interface ProvidedContext {
    stack: StackEndpoints;
  }
}

/**
 * Starts a private stack on free ports for the whole run, or uses the one whose directory
 * DURABLE_COMPUTE_TEST_STACK_DIR names (left running afterwards).
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  // The second S3 (and KMS) the S3 tests also run against; its own failure fails only those tests.
  const stopMoto = await startMotoForRun(project);
  const existingDir = process.env.DURABLE_COMPUTE_TEST_STACK_DIR;
  if (existingDir) {
    const running = runningStack(existingDir);
    if (!running) throw new Error(`DURABLE_COMPUTE_TEST_STACK_DIR=${existingDir} names no running stack; start it with 'durable-compute dev up --dir ${existingDir}'`);
    project.provide('stack', running.endpoints);
    return stopMoto;
  }
  const dir = mkdtempSync(path.join(os.tmpdir(), 'dc-test-stack-'));
  // The dev storage runs PostgreSQL as an unprivileged user when we are root; it must reach in.
  chmodSync(dir, 0o755);
  const temporalServer = (process.env.DURABLE_COMPUTE_TEMPORAL_SERVER || undefined) as TemporalServerKind | undefined;
  let endpoints: StackEndpoints;
  try {
    endpoints = await startPrivateStack(dir, {
      // `sql`: the Temporal server production runs, on PostgreSQL (npm run test:temporal-server).
      temporalServer,
      // Its first start builds the server and sets up PostgreSQL: worth seeing.
      onProgress: temporalServer === 'sql' ? (l) => console.log(`test stack: ${l}`) : undefined,
    });
  } catch (err) {
    await stopMoto();
    throw err;
  }
  project.provide('stack', endpoints);
  return async () => {
    await stopMoto();
    await stackDown(dir);
    rmSync(dir, { recursive: true, force: true });
  };
}
