/**
 * The steps the chaos table crosses with faults, enumerated from the code rather than kept by hand.
 *
 * - Compute startup: the real `createStartCompute` (activities/compute/startup.ts) is driven once
 *   in a Temporal mock activity context with recording step functions and a recording failpoint,
 *   down the path that visits every step (no quorum in agreement, so the safekeeper sync runs too).
 *   What it records, in order, is each pause point the startup passes and the journal step it
 *   belongs to. The recording steps are a labelled stand-in used only for this enumeration.
 * - Cache path: the keys of the compute cache activity factory (createComputeCacheActivities).
 * - Import: the activity types a clean run of the import workflow scheduled, in order, taken
 *   from its history (test/chaos/import-row.ts), each checked against the activity factories.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { MockActivityEnvironment } from '@temporalio/testing';
import { createComputeCacheActivities } from '../../activities/compute/cache-node-activities';
import { createStartCompute } from '../../activities/compute/startup';
import type { StartupSteps } from '../../drivers/compute-startup/steps';
import type { ComputeSpec } from '../../model/compute-spec';

export interface StartupPoint {
  /** The failpoint the startup pauses at before the step's work. */
  failpoint: string;
  /** The journal step (compute_ctl's metric name) the point belongs to. */
  journalStep: string;
}

/** Every pause point of the one-activity startup, in the order a cold start passes them. */
export async function computeStartupPoints(): Promise<StartupPoint[]> {
  const pgdata = mkdtempSync(path.join(os.tmpdir(), 'dc-chaos-enum-'));
  const points: StartupPoint[] = [];
  let journalStep = '';
  // Recording stand-ins: each returns the shape startup.ts reads, and nothing else happens.
  const steps = {
    preparePgdata: async () => {},
    writePostgresConfig: async () => ({ ms: 0 }),
    checkSafekeepersSynced: async () => ({ synced: false, lsn: null, reason: 'enumeration', ms: 0 }),
    syncSafekeepers: async () => ({ lsn: '0/0', ms: 0 }),
    fetchBasebackup: async () => ({ bytes: 0, ms: 0, connectMicros: 0 }),
    hasCompleteBasebackup: async () => true,
    prepareStartupFiles: async () => {},
    startPostgres: async () => ({ pid: 0, ms: 0 }),
    applySpec: async () => ({ changes: [], ms: 0 }),
  } as unknown as StartupSteps;
  const env = new MockActivityEnvironment();
  env.on('heartbeat', (d: unknown) => {
    const step = (d as { step?: string } | undefined)?.step;
    if (step) journalStep = step;
  });
  const startCompute = createStartCompute({
    pgdata,
    steps,
    log: () => {},
    failpoint: async (name: string) => {
      points.push({ failpoint: name, journalStep });
    },
  });
  const spec = { mode: { kind: 'Primary' }, tenant_id: '0'.repeat(32), timeline_id: '1'.repeat(32), safekeeper_connstrings: [] } as unknown as ComputeSpec;
  try {
    await env.run(startCompute, { incarnation: 'enumeration', spec });
  } finally {
    rmSync(pgdata, { recursive: true, force: true });
  }
  if (points.length < 5) throw new Error(`the startup enumeration found only ${points.length} pause points: ${JSON.stringify(points)}`);
  return points;
}

/** The cache offload/prewarm activities a running compute serves (the factory's keys). */
export function cacheSteps(): string[] {
  const activities = createComputeCacheActivities({
    pgdata: '/nonexistent',
    backend: 'stock',
    s3: { bucket: 'enumeration', region: 'us-east-1', forcePathStyle: true } as never,
    prefix: '',
    failpoint: async () => {},
  });
  return Object.keys(activities);
}
