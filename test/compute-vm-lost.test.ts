import { existsSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ComputeClient } from '../client/compute-client';
import { computeWorkflowId } from '../model/compute-status';
import { TERMINATE_ENDS_WATCH_PATCH } from '../workflows/compute/watch';
import { cleanupComputes, createTestTimeline, exampleSpecFor, startComputeWorker, testComputeClient, testPgdata } from './helpers/compute';
import { uniqueId } from './helpers/ids';
import { killAllProcesses } from '../dev/child-processes';
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
  await killAllProcesses();
  await cleanupComputes();
});

const seconds = (d: { seconds?: unknown; nanos?: number | null } | null | undefined) => Number(d?.seconds ?? 0) + (d?.nanos ?? 0) / 1e9;

/** A running compute (the product's defaults) with its worker, PGDATA and workflow handle. */
async function runningCompute(prefix: string) {
  const computeId = uniqueId(prefix);
  const pgdata = testPgdata();
  const { spec } = await exampleSpecFor(await createTestTimeline());
  const worker = await startComputeWorker(computeId, pgdata);
  await computes.start(computeId, spec);
  await computes.waitForRunning(computeId);
  const handle = raw.workflow.getHandle(computeWorkflowId(computeId));
  /** The identity of the worker that runs the watch round now, if one does. */
  const watchHolder = async () => (await handle.describe()).raw.pendingActivities?.find((a) => a.activityType?.name === 'watchPostgres' && a.lastStartedTime)?.lastWorkerIdentity ?? undefined;
  /** Waits until `identity`'s worker (default: any) runs the watch round. */
  const untilWatchedBy = async (identity?: string) => {
    for (let i = 0; i < 100; i++) {
      const holder = await watchHolder();
      if (holder && (identity === undefined || holder === identity)) return holder;
      await new Promise((r) => setTimeout(r, 100));
    }
    return watchHolder();
  };
  return { computeId, pgdata, worker, handle, untilWatchedBy };
}

describe('the quiet watch and the VM platform’s vmLost signal', () => {
  it('watches in long rounds by default, yet a vmLost fails the compute at once with the reason; the status stays queryable', async () => {
    const { computeId, pgdata, worker, handle } = await runningCompute('vmlost');

    // The watch round is long and quiet: 30 minutes, heartbeat timeout 10 minutes (the backstop).
    const history = await handle.fetchHistory();
    const watch = (history.events ?? []).find((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'watchPostgres')?.activityTaskScheduledEventAttributes;
    expect(watch).toBeDefined();
    expect(seconds(watch!.heartbeatTimeout)).toBe(600);
    expect(seconds(watch!.startToCloseTimeout)).toBe(1800 + 120);
    expect(seconds(watch!.scheduleToStartTimeout)).toBe(600);
    // The change is patched, so histories recorded before it still replay.
    expect((history.events ?? []).some((e) => e.markerRecordedEventAttributes?.markerName === 'core_patch')).toBe(true);

    // The VM dies; the platform says so. No heartbeat timeout is waited for.
    await worker.kill('SIGKILL');
    const reportedAt = Date.now();
    await computes.vmLost(computeId, 'hypervisor host h-17 powered off');
    const status = await computes.waitFor(computeId, (s) => s.status === 'failed', 30_000);
    expect(Date.now() - reportedAt).toBeLessThan(10_000);
    expect(status.error).toBe('VM lost: hypervisor host h-17 powered off');
    await expect(handle.result()).rejects.toThrow();
    // The workflow has ended; the control plane still reads the status.
    expect(await computes.status(computeId)).toMatchObject({ status: 'failed', error: 'VM lost: hypervisor host h-17 powered off' });
    // A second report finds no running compute and says so.
    await expect(computes.vmLost(computeId, 'again')).rejects.toThrow(/no running compute/);
    await expect(computes.vmLost(computeId, '  ')).rejects.toThrow(/needs a reason/);

    // Postgres outlived the killed worker (a real VM would have taken it along).
    process.kill(Number(readFileSync(path.join(pgdata, 'postmaster.pid'), 'utf8').split('\n')[0]), 'SIGQUIT');
  });

  it('terminates at once after the compute worker restarted, without waiting for the watch the old worker held', async () => {
    const { computeId, pgdata, worker: first, handle, untilWatchedBy } = await runningCompute('restarted');
    expect(await untilWatchedBy()).toBe(`compute-${computeId}@${first.pid}`);

    // The agent restarts (systemd's Restart=always); Postgres outlives it (KillMode=process). Its
    // predecessor left no lease to hand the watch over by (an agent from before leases), so the
    // round it held is lost until its 10-minute heartbeat timeout.
    for (let i = 0; i < 100 && !existsSync(`${pgdata}.step.json`); i++) await new Promise((r) => setTimeout(r, 100));
    await first.kill('SIGKILL');
    rmSync(`${pgdata}.step.json`);
    await startComputeWorker(computeId, pgdata);
    const asked = Date.now();
    const { lsn } = await computes.terminate(computeId, 'fast');
    expect(Date.now() - asked).toBeLessThan(30_000);
    expect(lsn).toMatch(/^[0-9A-F]+\/[0-9A-F]+$/);
    expect(await computes.status(computeId)).toMatchObject({ status: 'terminated' });
    const events = (await handle.fetchHistory()).events ?? [];
    // The lost round was cancelled, not waited for.
    expect(events.some((e) => e.activityTaskCancelRequestedEventAttributes)).toBe(true);
    // Behind its patch (markers are encrypted; the server lists patches in a search attribute).
    expect((await handle.describe()).searchAttributes.TemporalChangeVersion).toContain(TERMINATE_ENDS_WATCH_PATCH);
  });

  it('hands a restarted agent the watch round at once, so a Postgres crash right after the restart fails the compute in seconds', async () => {
    const { computeId, pgdata, worker: first, handle, untilWatchedBy } = await runningCompute('handover');
    const watchRounds = async () => (await handle.fetchHistory()).events!.filter((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'watchPostgres').length;
    expect(await untilWatchedBy()).toBe(`compute-${computeId}@${first.pid}`);
    expect(await watchRounds()).toBe(1);

    // The agent restarts once the round's lease is on disk; its successor ends the old round before
    // it polls, and holds the next.
    for (let i = 0; i < 100 && !existsSync(`${pgdata}.step.json`); i++) await new Promise((r) => setTimeout(r, 100));
    await first.kill('SIGKILL');
    const second = await startComputeWorker(computeId, pgdata);
    expect(second.output().match(/handed back watchPostgres[^"]*|watchPostgres attempt [^"]*needs no hand-back[^"]*/g)?.join('; ')).toMatch(/^handed back watchPostgres attempt 1 /);
    expect(await untilWatchedBy(`compute-${computeId}@${second.pid}`)).toBe(`compute-${computeId}@${second.pid}`);
    expect(await watchRounds()).toBe(2);
    expect(await computes.status(computeId)).toMatchObject({ status: 'running' });

    // Postgres crashes: the new round sees it at once, not after the old round's heartbeat timeout.
    const crashed = Date.now();
    process.kill(Number(readFileSync(path.join(pgdata, 'postmaster.pid'), 'utf8').split('\n')[0]), 'SIGKILL');
    const status = await computes.waitFor(computeId, (s) => s.status === 'failed', 30_000);
    expect(Date.now() - crashed).toBeLessThan(15_000);
    expect(status.error).toMatch(/postmaster exited unexpectedly/);
  });
});
