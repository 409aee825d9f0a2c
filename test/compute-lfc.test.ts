import { DeleteObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { Client, Connection } from '@temporalio/client';
import pg from 'pg';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createS3Client } from '../activities/s3/client';
import type { ComputeClient } from '../client/compute-client';
import { cacheStateKey } from '../model/cache-state';
import { computeWorkflowId } from '../model/compute-status';
import { cleanupComputes, createTestTimeline, exampleSpecFor, startComputeWorker, testComputeClient, testPgdata, TEST_WORKFLOW_OPTIONS } from './helpers/compute';
import { uniqueId } from './helpers/ids';
import { killAllProcesses, type WorkerProcess } from './helpers/processes';
import { testConfig } from './helpers/stack';

type Spec = { spec: Record<string, unknown> & { cluster: { settings: { name: string; value: string; vartype: string }[] } } };

async function sql<T extends pg.QueryResultRow>(port: number, text: string): Promise<T[]> {
  const client = new pg.Client({ host: '127.0.0.1', port, user: 'alice', password: 'alice-dev-password', database: 'app' });
  await client.connect();
  try {
    return (await client.query<T>(text)).rows;
  } finally {
    await client.end();
  }
}

/** Shared-block hit ratio of a full read of the hot table, from EXPLAIN (ANALYZE, BUFFERS). */
async function hotHitRatio(port: number): Promise<number> {
  const rows = await sql<{ 'QUERY PLAN': { Plan: { 'Shared Hit Blocks': number; 'Shared Read Blocks': number } }[] }>(
    port,
    'explain (analyze, buffers, format json) select sum(length(payload)) from hot',
  );
  const plan = rows[0]!['QUERY PLAN'][0]!.Plan;
  return plan['Shared Hit Blocks'] / (plan['Shared Hit Blocks'] + plan['Shared Read Blocks']);
}

async function waitForOutput(worker: WorkerProcess, pattern: RegExp, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!pattern.test(worker.output())) {
    if (Date.now() > deadline) throw new Error(`worker never printed ${pattern}:\n${worker.output()}`);
    await sleep(100);
  }
}

describe('cache offload and prewarm in the compute workflow', () => {
  const computeId = uniqueId('lfc');
  const pgdata = testPgdata();
  let computes: ComputeClient;
  let close: () => Promise<void>;
  let spec: Spec;
  let port: number;
  let worker: WorkerProcess;

  const restart = async (autoprewarm: boolean, offloadInterval?: number) => {
    await computes.terminate(computeId, 'fast');
    spec.spec.autoprewarm = autoprewarm;
    if (offloadInterval === undefined) delete spec.spec.offload_lfc_interval_seconds;
    else spec.spec.offload_lfc_interval_seconds = offloadInterval;
    await computes.start(computeId, spec, { ...TEST_WORKFLOW_OPTIONS, maxWatchRoundsPerRun: 5 });
    await computes.waitForRunning(computeId);
  };

  beforeAll(async () => {
    ({ computes, close } = await testComputeClient());
    const example = await exampleSpecFor(await createTestTimeline());
    spec = example.spec as Spec;
    port = example.port;
    // A small shared_buffers (16 MB), so the big table does not fit and the hot one does.
    for (const s of spec.spec.cluster.settings) if (s.name === 'shared_buffers') s.value = '2048';
    spec.spec.autoprewarm = true;
    worker = await startComputeWorker(computeId, pgdata);
  });
  afterAll(async () => {
    await computes.terminate(computeId, 'immediate').catch(() => undefined);
    await close();
    await killAllProcesses();
  });

  it('first start with nothing stored: the prewarm is skipped, not failed', async () => {
    await computes.start(computeId, spec, TEST_WORKFLOW_OPTIONS);
    await computes.waitForRunning(computeId);
    const lfc = await computes.waitForLfc(computeId, (s) => s.prewarm.status !== 'prewarming');
    expect(lfc.prewarm).toEqual({ status: 'skipped' });
    expect(lfc.offload).toEqual({ status: 'not_offloaded' });
  });

  it('offloads the hot set, and a restarted compute serves it from shared_buffers after autoprewarm', async () => {
    await sql(port, "create table big as select g as id, repeat('b', 500) as payload from generate_series(1, 80000) g");
    await sql(port, "create table hot as select g as id, repeat('h', 500) as payload from generate_series(1, 6000) g");
    // Read big, then hot several times: hot ends up the hottest part of shared_buffers.
    await sql(port, 'select count(*) from big');
    for (let i = 0; i < 5; i++) await sql(port, 'select sum(length(payload)) from hot');
    expect(await hotHitRatio(port)).toBeGreaterThan(0.95);

    await computes.offload(computeId);
    const offloaded = await computes.waitForLfc(computeId, (s) => s.offload.status !== 'offloading');
    expect(offloaded.offload).toMatchObject({ status: 'completed' });
    expect(offloaded.metrics.compute_ctl_lfc_offloads_total).toBe(1);

    // A cold compute reads the hot table from disk.
    await restart(false);
    expect(await hotHitRatio(port)).toBeLessThan(0.2);

    await restart(true);
    const warmed = await computes.waitForLfc(computeId, (s) => s.prewarm.status !== 'prewarming');
    expect(warmed.prewarm).toMatchObject({ status: 'completed' });
    if (warmed.prewarm.status !== 'completed') throw new Error('unreachable');
    expect(warmed.prewarm.total).toBeGreaterThan(0);
    expect(warmed.prewarm.prewarmed).toBeGreaterThan(0);
    expect(warmed.prewarm.total).toBe(warmed.prewarm.prewarmed + warmed.prewarm.skipped);
    expect(await hotHitRatio(port)).toBeGreaterThan(0.95);
  });

  it('offloads periodically, never while a prewarm runs, and the prewarm resumes on a new worker', async () => {
    // A worker that stops inside the next prewarm: it stays 'prewarming' as long as we let it.
    const paused = await startComputeWorker(computeId, pgdata, ['prewarmCache']);
    await worker.kill('SIGKILL');
    worker = paused;
    await restart(true, 1);
    await waitForOutput(worker, /failpoint prewarmCache reached/);
    const during = await computes.lfcStatus(computeId);
    expect(during.prewarm).toEqual({ status: 'prewarming' });
    // A second prewarm is refused while one runs.
    await expect(computes.prewarm(computeId)).rejects.toThrow(/a prewarm is already running/);
    await sleep(4000);
    expect((await computes.lfcStatus(computeId)).metrics.compute_ctl_lfc_offloads_total).toBe(during.metrics.compute_ctl_lfc_offloads_total);

    // Kill the worker mid-prewarm: the prewarm continues on the next worker and completes.
    await worker.kill('SIGKILL');
    worker = await startComputeWorker(computeId, pgdata);
    const done = await computes.waitForLfc(computeId, (s) => s.prewarm.status !== 'prewarming', 120_000);
    expect(done.prewarm).toMatchObject({ status: 'completed' });
    // With the prewarm complete, the periodic offloads run.
    const later = await computes.waitForLfc(computeId, (s) => s.metrics.compute_ctl_lfc_offloads_total >= done.metrics.compute_ctl_lfc_offloads_total + 2, 60_000);
    expect(later.offload).toMatchObject({ status: 'completed' });
  });

  it('cancels a running prewarm, and a later prewarm completes', async () => {
    const paused = await startComputeWorker(computeId, pgdata, ['prewarmCache']);
    await worker.kill('SIGKILL');
    worker = paused;
    await restart(false);
    await computes.prewarm(computeId);
    await waitForOutput(worker, /failpoint prewarmCache reached/);
    expect(await computes.cancelPrewarm(computeId)).toEqual({ status: 'cancelled' });
    await computes.prewarm(computeId);
    const again = await computes.waitForLfc(computeId, (s) => s.prewarm.status !== 'prewarming');
    expect(again.prewarm).toMatchObject({ status: 'completed' });
  });

  it('makes no offload after a failed prewarm', async () => {
    const s3 = createS3Client(testConfig().s3);
    const key = cacheStateKey(testConfig().cacheStatePrefix, spec.spec.tenant_id as string, spec.spec.timeline_id as string, spec.spec.endpoint_id as string);
    // A corrupt stored state: the prewarm fails before any SQL runs.
    await s3.send(new PutObjectCommand({ Bucket: testConfig().s3.bucket, Key: key, Body: Buffer.from('not a cache state') }));
    await restart(true, 1);
    const failed = await computes.waitForLfc(computeId, (s) => s.prewarm.status !== 'prewarming');
    expect(failed.prewarm).toMatchObject({ status: 'failed', error: expect.stringMatching(/cache state/i) });
    expect(failed.metrics.compute_ctl_lfc_prewarm_errors_total).toBe(1);
    await sleep(3500);
    expect((await computes.lfcStatus(computeId)).offload).toEqual({ status: 'not_offloaded' });
    await s3.send(new DeleteObjectCommand({ Bucket: testConfig().s3.bucket, Key: key }));
  });

  it('continues as new to keep history bounded, carrying the cache state over', async () => {
    const raw = await Connection.connect({ address: testConfig().temporal.address });
    try {
      const client = new Client({ connection: raw, namespace: testConfig().temporal.namespace });
      const before = await client.workflow.getHandle(computeWorkflowId(computeId)).describe();
      // maxWatchRoundsPerRun 5 with 2 s rounds: a new run within ~10 s.
      const deadline = Date.now() + 60_000;
      let runId = before.runId;
      while (runId === before.runId && Date.now() < deadline) {
        await sleep(1000);
        runId = (await client.workflow.getHandle(computeWorkflowId(computeId)).describe()).runId;
      }
      expect(runId).not.toBe(before.runId);
      const status = await computes.status(computeId);
      expect(status.status).toBe('running');
      expect((await computes.lfcStatus(computeId)).prewarm).toMatchObject({ status: 'failed' });
    } finally {
      await raw.close();
    }
  });
});

// Whatever a failed compute left running dies with this file's tests.
afterAll(async () => {
  await killAllProcesses();
  await cleanupComputes();
});
