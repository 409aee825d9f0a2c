import { readFileSync, readdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Client, Connection, WorkflowNotFoundError } from '@temporalio/client';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { ComputeClient } from '../client/compute-client';
import { computeWorkflowId } from '../model/compute-status';
import { cleanupComputes, createTestTimeline, exampleSpecFor, startComputeWorker, testComputeClient, testPgdata, TEST_WORKFLOW_OPTIONS } from './helpers/compute';
import { uniqueId } from './helpers/ids';
import { killAllProcesses, type WorkerProcess } from '../dev/child-processes';
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

/** How often each startup step finished, across the logs of every worker that served the compute. */
function stepsDone(workers: WorkerProcess[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const w of workers) {
    for (const m of w.output().matchAll(/startup step (\w+) done/g)) counts[m[1]!] = (counts[m[1]!] ?? 0) + 1;
  }
  return counts;
}

describe('a compute worker killed with SIGKILL inside each startup step', () => {
  it('resumes each step on a new worker; no completed step is repeated', async () => {
    const computeId = uniqueId('kill');
    const pgdata = testPgdata();
    const { spec } = await exampleSpecFor(await createTestTimeline());
    // The startup is one activity; each worker stops at its own step, the next one resumes there.
    const points = ['preparePgdata', 'writePostgresConfig', 'fetchBasebackup', 'prepareStartupFiles', 'startPostgres', 'applySpec'];
    const workers: WorkerProcess[] = [];
    workers.push(await startComputeWorker(computeId, pgdata, [points[0]!]));
    await computes.start(computeId, spec, TEST_WORKFLOW_OPTIONS);
    for (const [i, point] of points.entries()) {
      await waitForOutput(workers[i]!, new RegExp(`failpoint ${point} reached`));
      await workers[i]!.kill('SIGKILL');
      workers.push(await startComputeWorker(computeId, pgdata, points[i + 1] ? [points[i + 1]!] : []));
    }
    const status = await computes.waitForRunning(computeId, 180_000);
    expect(status.status).toBe('running');

    // Every step ran to completion exactly once, each time on the worker that reached it (a
    // safekeeper sync only where the quick check found no quorum in agreement within its 100 ms).
    const done = stepsDone(workers);
    expect(done.sync_safekeepers ?? 0).toBeLessThanOrEqual(1);
    expect({ ...done, sync_safekeepers: undefined }).toEqual({ prepare_pgdata: 1, sync_sk_check: 1, basebackup: 1, start_postgres: 1, config: 1, sync_safekeepers: undefined });
    const counts = await activityCounts(computeId);
    expect(counts.startCompute).toEqual({ scheduled: 1, completed: 1 });
    // No per-step activity: the startup is the one activity, resumed attempt after attempt.
    expect(counts.preparePgdata).toBeUndefined();

    // Termination syncs the safekeepers on the compute; kill the worker inside that step too.
    const killedInSync = await startComputeWorker(computeId, pgdata, ['syncSafekeepers']);
    await workers[workers.length - 1]!.kill('SIGKILL');
    const terminating = computes.terminate(computeId, 'fast');
    await waitForOutput(killedInSync, /failpoint syncSafekeepers reached/);
    await killedInSync.kill('SIGKILL');
    await startComputeWorker(computeId, pgdata);
    const { lsn } = await terminating;
    expect(lsn).toMatch(/^[0-9A-F]+\/[0-9A-F]+$/);
    const after = await activityCounts(computeId);
    expect(after.syncSafekeepers).toEqual({ scheduled: 1, completed: 1 });
    expect(after.stopPostgres).toEqual({ scheduled: 1, completed: 1 });
  }, 300_000);

  it('redoes the fresh start when PGDATA is wiped between two steps, never starting Postgres on it', async () => {
    const computeId = uniqueId('wipe');
    const pgdata = testPgdata();
    const { spec } = await exampleSpecFor(await createTestTimeline());
    const first = await startComputeWorker(computeId, pgdata, ['startPostgres']);
    await computes.start(computeId, spec, TEST_WORKFLOW_OPTIONS);
    await waitForOutput(first, /failpoint startPostgres reached/);
    // A replaced VM: the disk comes back empty.
    for (const entry of readdirSync(pgdata)) rmSync(path.join(pgdata, entry), { recursive: true, force: true });
    await first.kill('SIGKILL');
    const second = await startComputeWorker(computeId, pgdata);
    const status = await computes.waitForRunning(computeId, 180_000);
    expect(status.status).toBe('running');
    // The empty disk held no journal of the start: the retried attempt began again at a fresh
    // PGDATA and a new base backup; Postgres started once, on the complete directory.
    const withoutSync = (c: Record<string, number>) => ({ ...c, sync_safekeepers: undefined });
    expect(withoutSync(stepsDone([first]))).toEqual({ prepare_pgdata: 1, sync_sk_check: 1, basebackup: 1, sync_safekeepers: undefined });
    expect(withoutSync(stepsDone([second]))).toEqual({ prepare_pgdata: 1, sync_sk_check: 1, basebackup: 1, start_postgres: 1, config: 1, sync_safekeepers: undefined });
    expect((await activityCounts(computeId)).startCompute).toEqual({ scheduled: 1, completed: 1 });
    await computes.terminate(computeId, 'immediate');
  });

  it('a VM whose worker never polls fails the compute with that reason, not init forever', async () => {
    const computeId = uniqueId('nopoll');
    const { spec } = await exampleSpecFor(await createTestTimeline());
    await computes.start(computeId, spec, { ...TEST_WORKFLOW_OPTIONS, startupScheduleToStartSeconds: 3 });
    await expect(computes.waitForRunning(computeId, 60_000)).rejects.toThrow(`compute worker for ${computeId} never polled`);
    const status = await computes.status(computeId);
    expect(status.status).toBe('failed');
    expect(status.error).toMatch(/never polled/);
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
