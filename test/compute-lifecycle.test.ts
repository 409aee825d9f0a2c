import { Worker } from '@temporalio/worker';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encryptedDataConverter } from '../common/codec/data-converter';
import { computeWorkflowId } from '../model/compute-status';
import { WORKFLOWS_PATH } from '../workers/control-plane';
import { cleanupComputes, createTestTimeline, exampleSpecFor, startComputeWorker, testComputeClient, testPgdata, TEST_WORKFLOW_OPTIONS } from './helpers/compute';
import { uniqueId } from './helpers/ids';
import { historyTexts, recordReplayFixtureIfAsked } from './helpers/history';
import { killAllProcesses } from '../dev/child-processes';
import { testConfig } from './helpers/stack';
import type { ComputeClient } from '../client/compute-client';


type Spec = { spec: Record<string, unknown> & { cluster: { roles: { name: string; encrypted_password?: string }[]; databases: { name: string; owner: string }[] } } };

async function sql<T extends pg.QueryResultRow>(port: number, user: string, password: string, database: string, text: string): Promise<T[]> {
  const client = new pg.Client({ host: '127.0.0.1', port, user, password, database });
  await client.connect();
  try {
    return (await client.query<T>(text)).rows;
  } finally {
    await client.end();
  }
}

describe('compute lifecycle on the real stack', () => {
  const computeId = uniqueId('life');
  let computes: ComputeClient;
  let close: () => Promise<void>;
  let spec: Spec;
  let port: number;
  let storageToken: string;

  beforeAll(async () => {
    ({ computes, close } = await testComputeClient());
    const timeline = await createTestTimeline();
    const example = await exampleSpecFor(timeline);
    port = example.port;
    spec = example.spec as Spec;
    // The stack's storage demands its token, so the compute could only start with the real one.
    storageToken = String(spec.spec.storage_auth_token);
    expect(storageToken).toMatch(/^[0-9a-f]{64}$/);
    // A role the later reconfiguration deletes with a delete_role delta.
    spec.spec.cluster.roles.push({ name: 'legacy_reporter', encrypted_password: 'md54963c67bcc78aec02f612406e6fbd4e8' });
    await startComputeWorker(computeId, testPgdata());
  });
  afterAll(async () => {
    await computes.terminate(computeId, 'immediate').catch(() => undefined);
    await close();
    await killAllProcesses();
  });

  it('starts from the example spec: roles log in with their passwords, databases have their owners', async () => {
    await computes.start(computeId, spec, TEST_WORKFLOW_OPTIONS);
    const status = await computes.waitForRunning(computeId);
    expect(status).toMatchObject({ compute_id: computeId, status: 'running', error: null, tenant: spec.spec.tenant_id, timeline: spec.spec.timeline_id });
    expect(status.start_lsn).toMatch(/^[0-9A-F]+\/[0-9A-F]+$/);
    expect(status.metrics.basebackup_bytes).toBeGreaterThan(0);
    expect(status.metrics.total_startup_ms).toBeGreaterThan(0);

    const owners = await sql<{ datname: string; owner: string }>(
      port,
      'alice',
      'alice-dev-password',
      'app',
      "select datname, pg_get_userbyid(datdba) as owner from pg_database where datname in ('app', 'analytics') order by 1",
    );
    expect(owners).toEqual([
      { datname: 'analytics', owner: 'bob' },
      { datname: 'app', owner: 'alice' },
    ]);
    expect(await sql(port, 'bob', 'bob-dev-password', 'analytics', "select current_setting('timezone') as tz")).toEqual([{ tz: 'UTC' }]);
    await expect(sql(port, 'alice', 'not-her-password', 'app', 'select 1')).rejects.toThrow(/password authentication failed/);
    // Starting the same compute again neither duplicates nor replaces it.
    await expect(computes.start(computeId, spec)).rejects.toThrow(/already has a running workflow \(status running\)/);
  });

  it('reconfigures: adds a role, drops a database, applies a delete_role delta', async () => {
    const next = structuredClone(spec);
    next.spec.cluster.roles = next.spec.cluster.roles.filter((r) => r.name !== 'legacy_reporter');
    next.spec.cluster.roles.push({ name: 'carol', encrypted_password: 'md5a93eb5db72e8015f4b87ed32944e7dff' });
    next.spec.cluster.databases = next.spec.cluster.databases.filter((d) => d.name !== 'analytics');
    next.spec.delta_operations = [
      { action: 'delete_role', name: 'legacy_reporter' },
      { action: 'delete_db', name: 'analytics' },
    ];
    const status = await computes.configure(computeId, next);
    expect(status.status).toBe('running');
    const roles = await sql<{ rolname: string }>(port, 'alice', 'alice-dev-password', 'app', "select rolname from pg_roles where rolname in ('carol', 'legacy_reporter', 'bob')");
    expect(roles.map((r) => r.rolname).sort()).toEqual(['bob', 'carol']);
    const dbs = await sql(port, 'alice', 'alice-dev-password', 'app', "select 1 from pg_database where datname = 'analytics'");
    expect(dbs).toHaveLength(0);
    spec = next;
  });

  it('refuses an invalid spec in configure before anything is recorded', async () => {
    const broken = structuredClone(spec);
    broken.spec.tenant_id = 'not-hex';
    await expect(computes.configure(computeId, broken)).rejects.toThrow(/spec\.tenant_id/);
    expect((await computes.status(computeId)).status).toBe('running');
  });

  it('a configure with a setting Postgres rejects fails naming it; the previous configuration stays in force and the compute keeps running', async () => {
    const settingsOf = (s: Spec) => (s.spec.cluster as unknown as { settings: { name: string; value: string; vartype: string }[] }).settings;
    const show = async (name: string) => (await sql<Record<string, string>>(port, 'alice', 'alice-dev-password', 'app', `show ${name}`))[0]![name];
    const workMem = await show('work_mem');
    const bad = structuredClone(spec);
    settingsOf(bad).push({ name: 'work_mem', value: 'banana', vartype: 'string' });
    await expect(computes.configure(computeId, bad)).rejects.toThrow(/configure refused: reconfiguration refused: Postgres rejected work_mem: setting could not be applied .*the previous configuration stays in force/);
    expect(await computes.status(computeId)).toMatchObject({ status: 'running', error: null });
    expect(await show('work_mem')).toBe(workMem);

    // A server-start setting: accepted, reported as waiting for a restart.
    const restart = structuredClone(spec);
    settingsOf(restart).push({ name: 'max_connections', value: String(Number(await show('max_connections')) + 1), vartype: 'integer' });
    expect(await computes.configure(computeId, restart)).toMatchObject({ status: 'running', error: null, pending_restart: ['max_connections'] });
    expect(await computes.configure(computeId, spec)).toMatchObject({ status: 'running', pending_restart: [] });
  });

  it('keeps committed data across a fast terminate and an immediate terminate', async () => {
    await sql(port, 'alice', 'alice-dev-password', 'app', 'create table kept (v text); insert into kept values (\'before-fast\')');
    const fast = await computes.terminate(computeId, 'fast');
    expect(fast.lsn).toMatch(/^[0-9A-F]+\/[0-9A-F]+$/);
    expect((await computes.status(computeId)).status).toBe('terminated');

    await computes.start(computeId, spec, TEST_WORKFLOW_OPTIONS);
    const second = await computes.waitForRunning(computeId);
    expect(second.start_lsn).toBe(fast.lsn);
    expect(await sql(port, 'alice', 'alice-dev-password', 'app', 'select v from kept')).toEqual([{ v: 'before-fast' }]);

    await sql(port, 'alice', 'alice-dev-password', 'app', "insert into kept values ('before-immediate')");
    const immediate = await computes.terminate(computeId, 'immediate');
    expect(immediate.lsn).toMatch(/\//);

    await computes.start(computeId, spec, TEST_WORKFLOW_OPTIONS);
    await computes.waitForRunning(computeId);
    expect((await sql<{ v: string }>(port, 'alice', 'alice-dev-password', 'app', 'select v from kept order by v')).map((r) => r.v)).toEqual([
      'before-fast',
      'before-immediate',
    ]);
  });

  it('keeps password hashes and the storage token out of history, which still replays', async () => {
    const { Client, Connection } = await import('@temporalio/client');
    const cfg = testConfig();
    const connection = await Connection.connect({ address: cfg.temporal.address });
    try {
      // Raw history, without the codec: what the server stores and the Web UI shows.
      const raw = new Client({ connection, namespace: cfg.temporal.namespace });
      // Every run of this compute: the first carries the configure update, the later ones restarts.
      const runs: string[] = [];
      for await (const wf of raw.workflow.list({ query: `WorkflowId = '${computeWorkflowId(computeId)}'` })) runs.push(wf.runId);
      expect(runs.length).toBe(3);
      for (const runId of runs) {
        const history = await raw.workflow.getHandle(computeWorkflowId(computeId), runId).fetchHistory();
        const { texts, payloadEncodings } = historyTexts(history);
        const text = texts.join('\n');
        for (const secret of [storageToken, 'md560849aa43ff466fa8d448789b40fcd8e', 'SCRAM-SHA-256$4096', 'md5a93eb5db72e8015f4b87ed32944e7dff', '"alice"']) {
          expect(text).not.toContain(secret);
        }
        // Every payload (spec, results, update arguments, failure details) is ciphertext.
        // Search attributes stay readable: the server indexes them, and they hold only IDs and states.
        // So do patch markers: the SDK records the patch ID there itself, past the codec.
        const patchMarkers = payloadEncodings.filter((p) => p.path.includes('markerRecordedEventAttributes.details.patch-data'));
        for (const marker of patchMarkers) expect(marker.encoding).toBe('json/plain');
        const payloads = payloadEncodings.filter((p) => !p.path.includes('searchAttributes') && !patchMarkers.includes(p));
        expect(payloads.length).toBeGreaterThan(5);
        expect(payloads.filter((p) => p.encoding !== 'binary/encrypted')).toEqual([]);
        await Worker.runReplayHistory({ workflowsPath: WORKFLOWS_PATH, dataConverter: encryptedDataConverter(cfg.payloadKeys) }, history, computeWorkflowId(computeId));
        // RECORD_HISTORIES=1 refreshes the committed replay fixture (test/workflow-replay.test.ts) from the first run.
        if (runId === runs[runs.length - 1]) await recordReplayFixtureIfAsked('compute-lifecycle', computeWorkflowId(computeId), runId);
      }
    } finally {
      await connection.close();
    }
  });
});

// Whatever a failed compute left running dies with this file's tests.
afterAll(async () => {
  await killAllProcesses();
  await cleanupComputes();
});
