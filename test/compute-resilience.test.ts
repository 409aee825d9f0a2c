import { readFileSync, readdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Client, Connection, WorkflowNotFoundError } from '@temporalio/client';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { ComputeClient } from '../client/compute-client';
import { computeWorkflowId } from '../model/compute-status';
import { cleanupComputes, createTestTimeline, exampleSpecFor, startComputeWorker, testComputeClient, testPgdata, TEST_WORKFLOW_OPTIONS } from './helpers/compute';
import { uniqueId } from './helpers/ids';
import { killAllProcesses, type WorkerProcess } from './helpers/processes';
import { testConfig } from './helpers/stack';

let computes: ComputeClient;
let close: () => Promise<void>;
let raw: Client;
let rawConnection: Connection;

beforeAll(async () => {
  ({ computes, close } = await testComputeClient());
  rawConnection = await Connection.connect({ address: testConfig().temporal.address });
  raw = new Client({ connection: rawConnection, namespace: testConfig().temporal.namespace });
});
afterAll(async () => {
  await close();
  await rawConnection.close();
});
afterEach(killAllProcesses);

async function waitForOutput(worker: WorkerProcess, pattern: RegExp, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!pattern.test(worker.output())) {
    if (Date.now() > deadline) throw new Error(`worker never printed ${pattern}:\n${worker.output()}`);
    await sleep(100);
  }
}

/** Per activity type: how often it was scheduled and how often it completed, from history. */
async function activityCounts(computeId: string): Promise<Record<string, { scheduled: number; completed: number }>> {
  const history = await raw.workflow.getHandle(computeWorkflowId(computeId)).fetchHistory();
  const byId = new Map<string, string>();
  const counts: Record<string, { scheduled: number; completed: number }> = {};
  for (const e of history.events ?? []) {
    const s = e.activityTaskScheduledEventAttributes;
    if (s) {
      const type = s.activityType?.name ?? '?';
      byId.set(String(e.eventId), type);
      (counts[type] ??= { scheduled: 0, completed: 0 }).scheduled += 1;
    }
    const c = e.activityTaskCompletedEventAttributes;
    if (c) counts[byId.get(String(c.scheduledEventId))!]!.completed += 1;
  }
  return counts;
}

async function postmasterPid(pgdata: string): Promise<number> {
  return Number(readFileSync(path.join(pgdata, 'postmaster.pid'), 'utf8').split('\n')[0]);
}

describe('a compute worker killed with SIGKILL inside each startup step', () => {
  it('resumes each step on a new worker; no completed step is repeated', async () => {
    const computeId = uniqueId('kill');
    const pgdata = testPgdata();
    const { spec } = await exampleSpecFor(await createTestTimeline());
    const steps = ['preparePgdata', 'writePostgresConfig', 'fetchBasebackup', 'prepareStartupFiles', 'startPostgres', 'applySpec'];
    let worker = await startComputeWorker(computeId, pgdata, steps);
    await computes.start(computeId, spec, TEST_WORKFLOW_OPTIONS);
    for (const step of steps) {
      // Each new worker passes the retried step (its second attempt) and stops at the next one.
      await waitForOutput(worker, new RegExp(`failpoint ${step} reached`));
      await worker.kill('SIGKILL');
      worker = await startComputeWorker(computeId, pgdata, steps);
    }
    const status = await computes.waitForRunning(computeId, 180_000);
    expect(status.status).toBe('running');

    const counts = await activityCounts(computeId);
    for (const step of steps) expect(counts[step], step).toEqual({ scheduled: 1, completed: 1 });
    // The quorum check found the fresh timeline's safekeepers in agreement: no sync needed.
    expect(counts.checkSafekeepersSynced).toEqual({ scheduled: 1, completed: 1 });

    // Termination syncs the safekeepers on the compute; kill the worker inside that step too.
    const killedInSync = await startComputeWorker(computeId, pgdata, ['syncSafekeepers']);
    await worker.kill('SIGKILL');
    const terminating = computes.terminate(computeId, 'fast');
    await waitForOutput(killedInSync, /failpoint syncSafekeepers reached/);
    await killedInSync.kill('SIGKILL');
    await startComputeWorker(computeId, pgdata);
    const { lsn } = await terminating;
    expect(lsn).toMatch(/^[0-9A-F]+\/[0-9A-F]+$/);
    const after = await activityCounts(computeId);
    expect(after.syncSafekeepers).toEqual({ scheduled: 1, completed: 1 });
    expect(after.stopPostgres).toEqual({ scheduled: 1, completed: 1 });
  });

  it('redoes the fresh start when PGDATA is wiped between two steps, never starting Postgres on it', async () => {
    const computeId = uniqueId('wipe');
    const pgdata = testPgdata();
    const { spec } = await exampleSpecFor(await createTestTimeline());
    const worker = await startComputeWorker(computeId, pgdata, ['startPostgres']);
    await computes.start(computeId, spec, TEST_WORKFLOW_OPTIONS);
    await waitForOutput(worker, /failpoint startPostgres reached/);
    // A replaced VM: the disk comes back empty.
    for (const entry of readdirSync(pgdata)) rmSync(path.join(pgdata, entry), { recursive: true, force: true });
    await worker.kill('SIGKILL');
    await startComputeWorker(computeId, pgdata);
    const status = await computes.waitForRunning(computeId, 180_000);
    expect(status.status).toBe('running');
    const counts = await activityCounts(computeId);
    expect(counts.preparePgdata).toEqual({ scheduled: 2, completed: 2 });
    expect(counts.fetchBasebackup).toEqual({ scheduled: 2, completed: 2 });
    // The first startPostgres failed with PgdataLost instead of starting on the wiped directory.
    expect(counts.startPostgres).toEqual({ scheduled: 2, completed: 1 });
    await computes.terminate(computeId, 'immediate');
  });
});

describe('failures while running', () => {
  it('Postgres killed: the compute is failed with the reason', async () => {
    const computeId = uniqueId('pgkill');
    const pgdata = testPgdata();
    const { spec } = await exampleSpecFor(await createTestTimeline());
    await startComputeWorker(computeId, pgdata);
    await computes.start(computeId, spec, TEST_WORKFLOW_OPTIONS);
    await computes.waitForRunning(computeId);
    process.kill(await postmasterPid(pgdata), 'SIGKILL');
    const status = await computes.waitFor(computeId, (s) => s.status === 'failed', 60_000);
    expect(status.error).toMatch(/postmaster exited unexpectedly/);
    await expect(raw.workflow.getHandle(computeWorkflowId(computeId)).result()).rejects.toThrow();
  });

  it('compute worker gone: failed after the heartbeat timeout, and the status stays queryable', async () => {
    const computeId = uniqueId('vmgone');
    const pgdata = testPgdata();
    const { spec } = await exampleSpecFor(await createTestTimeline());
    const worker = await startComputeWorker(computeId, pgdata);
    await computes.start(computeId, spec, TEST_WORKFLOW_OPTIONS);
    await computes.waitForRunning(computeId);
    const killedAt = Date.now();
    await worker.kill('SIGKILL');
    const status = await computes.waitFor(computeId, (s) => s.status === 'failed', 60_000);
    const noticedAfterMs = Date.now() - killedAt;
    expect(status.error).toMatch(/compute worker lost/);
    expect(noticedAfterMs).toBeGreaterThanOrEqual(TEST_WORKFLOW_OPTIONS.watchHeartbeatTimeoutSeconds * 1000 - 1000);
    // The workflow has ended, and the control plane can still read the status.
    expect((await computes.status(computeId)).status).toBe('failed');
    // Clean up the Postgres the lost worker left running.
    process.kill(await postmasterPid(pgdata), 'SIGQUIT');
  });
});

describe('spec validation', () => {
  const cases: [string, (spec: Record<string, unknown>) => void, RegExp][] = [
    ['no pageserver information', (s) => { delete s.pageserver_connstring; }, /pageserver/],
    ['an empty pageserver connection string', (s) => { s.pageserver_connstring = ''; }, /pageserver_connstring/],
    ['a non-libpq pageserver connection string', (s) => { s.pageserver_connstring = 'http://127.0.0.1:9898'; }, /pageserver_connstring/],
    ['several pageservers without a stripe size', (s) => { s.pageserver_connstring = 'postgresql://a:1,postgresql://b:2'; }, /stripe/],
    ['Primary without safekeepers', (s) => { s.safekeeper_connstrings = []; }, /safekeeper_connstrings/],
    ['duplicate safekeepers', (s) => { s.safekeeper_connstrings = ['127.0.0.1:1', '127.0.0.1:1']; }, /safekeeper_connstrings/],
    ['a missing tenant id', (s) => { delete s.tenant_id; }, /tenant_id/],
    ['a malformed timeline id', (s) => { s.timeline_id = 'xyz'; }, /timeline_id/],
  ];

  it.each(cases)('rejects %s with the field named, leaving no workflow behind', async (_name, mutate, field) => {
    const computeId = uniqueId('invalid');
    const { spec } = await exampleSpecFor({ tenantId: '0'.repeat(32), timelineId: '1'.repeat(32) });
    mutate((spec as { spec: Record<string, unknown> }).spec);
    await expect(computes.start(computeId, spec)).rejects.toThrow(field);
    await expect(raw.workflow.getHandle(computeWorkflowId(computeId)).describe()).rejects.toBeInstanceOf(WorkflowNotFoundError);
  });
});

// Whatever a failed compute left running dies with this file's tests.
afterAll(async () => {
  await killAllProcesses();
  await cleanupComputes();
});
