import pg from 'pg';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseLsn } from '../model/lsn';
import type { ComputeClient } from '../client/compute-client';
import { cleanupComputes, createTestTimeline, exampleSpecFor, startComputeWorker, testComputeClient, testPgdata, TEST_WORKFLOW_OPTIONS, type TestTimeline } from './helpers/compute';
import { uniqueId } from './helpers/ids';
import { killAllProcesses, type WorkerProcess } from './helpers/processes';

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

  beforeAll(async () => {
    ({ computes, close } = await testComputeClient());
    timeline = await createTestTimeline();
    primary = (await exampleSpecFor(timeline)) as { spec: Spec; port: number };
    replica = (await exampleSpecFor(timeline)) as { spec: Spec; port: number };
    replica.spec.spec.mode = 'Replica';
    await startComputeWorker(primaryId, testPgdata());
    replicaWorker = await startComputeWorker(replicaId, testPgdata());
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
    void replicaWorker;
  });
});
