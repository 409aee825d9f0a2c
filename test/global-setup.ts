import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { TestProject } from 'vitest/node';
import { freePort, freePortRange } from '../dev/processes';
import { runningStack, stackDown, stackUp, type StackEndpoints } from '../dev/stack';
import { resolveStackSettings, type TemporalServerKind } from '../dev/stack-settings';
import { provisionTemporalCli } from '../dev/temporal-cli';
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
  // Free ports are only free until someone takes them (the Temporal server itself binds random
  // ports for its HTTP API and metrics), so a clash is retried with fresh ports.
  for (let attempt = 1; ; attempt++) {
    const settings = resolveStackSettings(
      {
        dir,
        ports: {
          temporal: await freePort(),
          temporalUi: await freePort(),
          s3: await freePort(),
          pageserverPg: await freePort(),
          pageserverHttp: await freePort(),
          safekeeperPg: await freePortRange(3),
          safekeeperHttp: await freePortRange(3),
          codecServer: await freePort(),
        },
        // `sql`: the Temporal server production runs, on PostgreSQL (npm run test:temporal-server).
        temporalServer: (process.env.DURABLE_COMPUTE_TEMPORAL_SERVER || undefined) as TemporalServerKind | undefined,
      },
      {},
    );
    try {
      const endpoints = await stackUp(settings, {
        resolveTemporalCli: async () => (await provisionTemporalCli({ onProgress: (l) => console.log(l) })).path,
        // Its first start builds the server and sets up PostgreSQL: worth seeing.
        onProgress: settings.temporalServer === 'sql' ? (l) => console.log(`test stack: ${l}`) : undefined,
      });
      project.provide('stack', endpoints);
      break;
    } catch (err) {
      await stackDown(dir);
      if (attempt >= 3 || !/already in use/.test((err as Error).message)) {
        await stopMoto();
        throw err;
      }
      console.log(`test stack: ${(err as Error).message}; retrying with other ports`);
    }
  }
  return async () => {
    await stopMoto();
    await stackDown(dir);
    rmSync(dir, { recursive: true, force: true });
  };
}
