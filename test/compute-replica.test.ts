import pg from 'pg';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parseLsn } from '../model/lsn';
import type { ComputeClient } from '../client/compute-client';
import { cleanupComputes, computeApiPort, createTestTimeline, exampleSpecFor, startComputeWorker, testComputeClient, testPgdata, TEST_WORKFLOW_OPTIONS, type TestTimeline } from './helpers/compute';
import { uniqueId } from './helpers/ids';
import { killAllProcesses, type WorkerProcess } from '../dev/child-processes';
import { runCli } from './helpers/cli';
import { testConfig, testEnv } from './helpers/stack';

type Spec = { spec: Record<string, unknown> };

async function sql<T extends pg.QueryResultRow>(port: number, text: string, values: unknown[] = []): Promise<T[]> {
  const client = new pg.Client({ host: '127.0.0.1', port, user: 'alice', password: 'alice-dev-password', database: 'app' });
  await client.connect();
  try {
    return (await client.query<T>(text, values)).rows;
  } finally {
    await client.end();
  }
}

/** Polls the replica until `text` returns what `done` accepts; returns how long that took. */
async function waitOnReplica(port: number, text: string, done: (rows: pg.QueryResultRow[]) => boolean, timeoutMs = 20_000): Promise<number> {
  const started = Date.now();
  for (;;) {
    const rows = await sql(port, text).catch(() => undefined);
    if (rows && done(rows)) return Date.now() - started;
    if (Date.now() - started > timeoutMs) throw new Error(`replica did not show ${JSON.stringify(text)} within ${timeoutMs} ms (last: ${JSON.stringify(rows)})`);
    await sleep(20);
  }
}

const OPTIONS = { ...TEST_WORKFLOW_OPTIONS, watchHeartbeatTimeoutSeconds: 20 };

describe('streaming read replica and promote on the embedded stack', () => {
  let computes: ComputeClient;
  let close: () => Promise<void>;
  let timeline: TestTimeline;
  const primaryId = uniqueId('prim');
  const replicaId = uniqueId('repl');
  let primary: { spec: Spec; port: number };
  let replica: { spec: Spec; port: number };
  let replicaWorker: WorkerProcess;
  const replicaPgdata = testPgdata();

  beforeAll(async () => {
    ({ computes, close } = await testComputeClient());
    timeline = await createTestTimeline();
    primary = (await exampleSpecFor(timeline)) as { spec: Spec; port: number };
    replica = (await exampleSpecFor(timeline)) as { spec: Spec; port: number };
    replica.spec.spec.mode = 'Replica';
    await startComputeWorker(primaryId, testPgdata());
    // Pauses the promote before it starts Postgres as the primary, so the test can kill this worker there.
    replicaWorker = await startComputeWorker(replicaId, replicaPgdata, ['promoteStartPrimary']);
  });
  afterAll(async () => {
    await computes.terminate(primaryId, 'immediate').catch(() => undefined);
    await computes.terminate(replicaId, 'immediate').catch(() => undefined);
    await close();
    await killAllProcesses();
    await cleanupComputes();
  });

  it('a replica streams from the safekeepers: a row committed on the primary shows up on it', async () => {
    await computes.start(primaryId, primary.spec, OPTIONS);
    await computes.waitForRunning(primaryId);
    await sql(primary.port, 'create table t (id int primary key, v text)');
    await sql(primary.port, "insert into t values (1, 'before the replica')");

    await computes.start(replicaId, replica.spec, OPTIONS);
    const status = await computes.waitForRunning(replicaId);
    expect(status.status).toBe('running');
    expect(await sql(replica.port, 'select v from t order by id')).toEqual([{ v: 'before the replica' }]);

    await sql(primary.port, "insert into t values (2, 'streamed')");
    const ms = await waitOnReplica(replica.port, 'select count(*)::int as n from t', (rows) => rows[0]?.n === 2);
    expect(ms).toBeLessThan(10_000);
    await expect(sql(replica.port, "insert into t values (3, 'no')")).rejects.toThrow(/read-only/);
  });

  it("reports its replay lag behind the safekeepers' commit LSN in status", async () => {
    const s = await computes.waitFor(replicaId, (st) => st.replication?.lag_bytes === 0, 30_000);
    expect(s.replication!.replay_lsn).toMatch(/^[0-9A-F]+\/[0-9A-F]+$/);
    expect(parseLsn(s.replication!.replay_lsn!)).toBeGreaterThanOrEqual(parseLsn(s.replication!.commit_lsn!));
    expect((await computes.status(primaryId)).replication).toBeUndefined();
  });

  it('refuses a promote while the primary runs, and of a compute that is not a replica', async () => {
    await expect(computes.promote(replicaId)).rejects.toThrow(new RegExp(`another primary is running on timeline ${timeline.timelineId}: ${primaryId}`));
    await expect(computes.promote(primaryId)).rejects.toThrow(/compute mode is Primary, not Replica/);
    await expect(computes.promote(replicaId, { safekeepersLsn: 'nonsense' })).rejects.toThrow(/safekeepers LSN must look like/);
    // The CLI says the same, with a non-zero exit.
    const cliRefused = await runCli(['compute', 'promote', '--compute-id', replicaId], { env: testEnv() });
    expect(cliRefused.code).not.toBe(0);
    expect(cliRefused.stderr).toMatch(/promote refused: .*another primary is running/);
    const cliBadLsn = await runCli(['compute', 'promote', '--compute-id', replicaId, '--safekeepers-lsn', 'nonsense'], { env: testEnv() });
    expect(cliBadLsn.code).not.toBe(0);
    expect(cliBadLsn.stderr).toMatch(/--safekeepers-lsn must look like 0\/16B5A50, got nonsense/);
    // compute_ctl's POST /promote on the compute worker: {spec, wal_flush_lsn}; a failure is 500 with a PromoteState.
    const base = `http://127.0.0.1:${computeApiPort(replicaWorker)}`;
    const post = (body: string) => fetch(`${base}/promote`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
    const malformed = await post('{"spec": {}}');
    expect(malformed.status).toBe(422);
    expect(await malformed.text()).toMatch(/wal_flush_lsn/);
    const refused = await post(JSON.stringify({ spec: primary.spec.spec, wal_flush_lsn: '0/0' }));
    expect(refused.status).toBe(500);
    expect(await refused.json()).toMatchObject({ status: 'failed', error: expect.stringMatching(/another primary is running/) });
    // Still a replica, still streaming.
    await sql(primary.port, "insert into t values (3, 'after the refusal')");
    await waitOnReplica(replica.port, 'select count(*)::int as n from t', (rows) => rows[0]?.n === 3);
  });

  it('promotes after the primary terminated; a worker killed mid-promote resumes without redoing finished steps', async () => {
    const terminated = await computes.terminate(primaryId, 'fast');
    expect(terminated.lsn).toMatch(/\//);

    // Through the CLI, as an operator would; it returns once the promote completed.
    const promoting = runCli(['compute', 'promote', '--compute-id', replicaId, '--safekeepers-lsn', terminated.lsn!, '--json'], { env: testEnv(), timeoutMs: 180_000 });
    const deadline = Date.now() + 60_000;
    while (!replicaWorker.output().includes('failpoint promoteStartPrimary reached')) {
      if (Date.now() > deadline) throw new Error(`the promote never reached its failpoint:\n${replicaWorker.output()}`);
      await sleep(100);
    }
    const before = replicaWorker.output();
    expect(before).toMatch(/promote step catch_up done/);
    expect(before).toMatch(/promote step stop_standby done/);
    expect(before).toMatch(/promote step configure_primary done/);
    await replicaWorker.kill('SIGKILL');
    const second = await startComputeWorker(replicaId, replicaPgdata);

    const cliResult = await promoting;
    expect(cliResult.code, cliResult.stderr).toBe(0);
    const state = JSON.parse(cliResult.stdout) as Record<string, unknown>;
    expect(state).toMatchObject({ status: 'completed', lsn: terminated.lsn });
    expect(state.pg_promote_time_ms).toEqual(expect.any(Number));
    const after = second.output();
    expect(after).toMatch(/promote step start_primary done/);
    expect(after).toMatch(/promote step apply_spec done/);
    for (const step of ['catch_up', 'stop_standby', 'configure_primary']) expect(after).not.toMatch(new RegExp(`promote step ${step} done`));

    const status = await computes.status(replicaId);
    expect(status.status).toBe('running');
    expect(status.replication).toBeUndefined();
    // Writes are accepted, and wait for the safekeepers as on any started primary.
    await sql(replica.port, "insert into t values (4, 'written on the promoted replica')");
    expect(await sql(replica.port, "select current_setting('synchronous_standby_names') as s")).toEqual([{ s: 'wal_pusher' }]);
    expect((await sql(replica.port, 'select id from t order by id')).map((r) => r.id)).toEqual([1, 2, 3, 4]);
    // A second promote has nothing to promote.
    await expect(computes.promote(replicaId)).rejects.toThrow(/not Replica/);
  });

  it('keeps every commit of the promoted primary across a killed postmaster and a fresh start', async () => {
    const pid = Number(readFileSync(path.join(replicaPgdata, 'postmaster.pid'), 'utf8').split('\n')[0]);
    process.kill(pid, 'SIGKILL');
    const failed = await computes.waitFor(replicaId, (s) => s.status === 'failed', 60_000);
    expect(failed.error).toMatch(/postmaster exited/);

    const againId = uniqueId('again');
    await startComputeWorker(againId, testPgdata());
    await computes.start(againId, primary.spec, OPTIONS);
    await computes.waitForRunning(againId);
    expect(await sql(primary.port, 'select id, v from t order by id')).toEqual([
      { id: 1, v: 'before the replica' },
      { id: 2, v: 'streamed' },
      { id: 3, v: 'after the refusal' },
      { id: 4, v: 'written on the promoted replica' },
    ]);
    await computes.terminate(againId, 'immediate');
  });

  it('a replica of a timeline the safekeepers do not know fails, saying so', async () => {
    const fresh = await createTestTimeline();
    // Known to the pageserver (the base backup works) but not to the safekeepers.
    const storage = testConfig().storage;
    for (const url of storage.safekeepersHttp) {
      const res = await fetch(`${url}/v1/tenant/${fresh.tenantId}/timeline/${fresh.timelineId}`, {
        method: 'DELETE',
        headers: storage.authToken ? { authorization: `Bearer ${storage.authToken}` } : {},
      });
      expect(res.status).toBe(200);
    }
    const bad = (await exampleSpecFor(fresh)) as { spec: Spec; port: number };
    bad.spec.spec.mode = 'Replica';
    const badId = uniqueId('badrepl');
    await startComputeWorker(badId, testPgdata());
    await computes.start(badId, bad.spec, OPTIONS);
    const s = await computes.waitFor(badId, (st) => st.status === 'failed' || st.status === 'running', 120_000);
    expect(s.status).toBe('failed');
    expect(s.error).toMatch(new RegExp(`timeline ${fresh.tenantId}/${fresh.timelineId} is not known to the safekeepers`));
  });
});
