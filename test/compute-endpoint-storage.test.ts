/**
 * End to end on the embedded stack: a real compute, started by the compute workflow, whose spec
 * names endpoint storage (the stack's stand-in) offloads and prewarms its cache through it. Its
 * compute worker runs without S3 credentials, and its S3 endpoint is a closed port, so any use of
 * S3 on this path would fail. A state written the way a Neon compute writes it prewarms it too.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { GetObjectCommand } from '@aws-sdk/client-s3';
import { Client, Connection } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { ComputeClient } from '../client/compute-client';
import { decodeNeonEndpointState, neonStateAsBlockRanges } from '../drivers/cache';
import { buildNeonLfcState } from '../drivers/cache/neon-lfc-format';
import { createS3Client } from '../drivers/s3/client';
import { killAllProcesses, startProcess, type WorkerProcess } from '../dev/child-processes';
import { mintDevEndpointStorageToken } from '../dev/endpoint-storage/keys';
import { devS3Credentials } from '../dev/stack';
import { computeWorkflowId } from '../model/compute-status';
import { cleanupComputes, computeEnv, createTestTimeline, exampleSpecFor, testComputeClient, testPgdata, TEST_WORKFLOW_OPTIONS } from './helpers/compute';
import { uniqueId } from './helpers/ids';
import { testConfig } from './helpers/stack';
import { appSql, hotHitRatio } from './helpers/app-sql';
import { rawZstdFrame } from './helpers/zstd-frame';

type Spec = { spec: Record<string, unknown> & { cluster: { settings: { name: string; value: string; vartype: string }[] } } };



/** PUTs and GETs of the state that the stand-in logged (method, path, status). */
function storageRequests(statePath: string): string[] {
  const log = readFileSync(path.join(inject('stack').stackDir, 'endpoint-storage.log'), 'utf8');
  return log.split('\n').filter((l) => l.includes(statePath)).map((l) => /"msg":"([A-Z]+) \S+ (\d+)/.exec(l)?.slice(1, 3).join(' ') ?? l);
}

describe('cache offload and prewarm through endpoint storage', () => {
  const computeId = uniqueId('eps');
  const pgdata = testPgdata();
  let computes: ComputeClient;
  let close: () => Promise<void>;
  let spec: Spec;
  let port: number;
  let worker: WorkerProcess;
  let token: string;
  let statePath: string;

  const restart = async (autoprewarm: boolean) => {
    await computes.terminate(computeId, 'fast');
    spec.spec.autoprewarm = autoprewarm;
    await computes.start(computeId, spec, TEST_WORKFLOW_OPTIONS);
    await computes.waitForRunning(computeId);
  };
  const prewarmed = async () => {
    const lfc = await computes.waitForLfc(computeId, (s) => s.prewarm.status !== 'prewarming', 120_000);
    if (lfc.prewarm.status !== 'completed') throw new Error(`prewarm ended ${JSON.stringify(lfc.prewarm)}`);
    return lfc.prewarm;
  };

  beforeAll(async () => {
    ({ computes, close } = await testComputeClient());
    const timeline = await createTestTimeline();
    const example = await exampleSpecFor(timeline);
    spec = example.spec as Spec;
    port = example.port;
    spec.spec.autoprewarm = true;
    const endpointId = spec.spec.endpoint_id as string;
    token = await mintDevEndpointStorageToken(inject('stack').stackDir, { tenant_id: timeline.tenantId, timeline_id: timeline.timelineId, endpoint_id: endpointId });
    spec.spec.endpoint_storage_addr = inject('stack').endpointStorage.addr;
    spec.spec.endpoint_storage_token = token;
    statePath = `/${timeline.tenantId}/${timeline.timelineId}/${endpointId}/lfc_state`;
    // The VM agent without bucket credentials; its S3 is a closed port, so no S3 call could succeed.
    worker = await startProcess('bin/durable-compute.mjs', ['worker', 'compute', '--compute-id', computeId, '--pgdata', pgdata, '--http-port', '0', '--http-host', '127.0.0.1'], {
      env: computeEnv({ AWS_ACCESS_KEY_ID: '', AWS_SECRET_ACCESS_KEY: '', AWS_SESSION_TOKEN: '', S3_ENDPOINT: 'http://127.0.0.1:1' }),
      readyLine: /compute worker ready/,
    });
  });
  afterAll(async () => {
    await computes?.terminate(computeId, 'immediate').catch(() => undefined);
    await close?.();
    await killAllProcesses();
  });

  it('first start with nothing stored: the prewarm asks endpoint storage and is skipped', async () => {
    await computes.start(computeId, spec, TEST_WORKFLOW_OPTIONS);
    await computes.waitForRunning(computeId);
    const lfc = await computes.waitForLfc(computeId, (s) => s.prewarm.status !== 'prewarming');
    expect(lfc.prewarm).toEqual({ status: 'skipped' });
    expect(storageRequests(statePath)).toEqual(['GET 404']);
  });

  it("offloads through endpoint storage in Neon's format, and a restarted compute prewarms from it", async () => {
    await appSql(port, "create table hot as select g as id, repeat('h', 500) as payload from generate_series(1, 6000) g");
    for (let i = 0; i < 5; i++) await appSql(port, 'select sum(length(payload)) from hot');
    expect(await hotHitRatio(port)).toBeGreaterThan(0.95);

    await computes.offload(computeId);
    const offloaded = await computes.waitForLfc(computeId, (s) => s.offload.status !== 'offloading');
    expect(offloaded.offload).toMatchObject({ status: 'completed' });
    expect(storageRequests(statePath).at(-1)).toBe('PUT 200');

    // In the bucket behind the stand-in: a zstd frame holding a Neon LFC state with the hot table's pages.
    const stack = inject('stack');
    const s3 = createS3Client({ endpoint: stack.s3.endpoint, region: stack.s3.region, bucket: stack.s3.bucket, forcePathStyle: true, credentials: devS3Credentials() });
    const object = await s3.send(new GetObjectCommand({ Bucket: stack.s3.bucket, Key: `endpoint-storage${statePath}` }));
    const blob = Buffer.from(await object.Body!.transformToByteArray());
    s3.destroy();
    expect(blob.readUInt32LE(0)).toBe(0xfd2fb528);
    const state = await decodeNeonEndpointState(blob);
    if (state.kind !== 'neon-lfc') throw new Error('expected a Neon LFC state');
    const filenode = (await appSql<{ filenode: number }>(port, "select pg_relation_filenode('hot')::int as filenode"))[0]!.filenode;
    const hotPages = neonStateAsBlockRanges(state)
      .ranges.filter((r) => r.relfilenode === filenode && r.fork === 0)
      .reduce((n, r) => n + r.blockCount, 0);
    const blocks = (await appSql<{ blocks: number }>(port, "select (pg_relation_size('hot') / 8192)::int as blocks"))[0]!.blocks;
    expect(hotPages).toBe(blocks);

    await restart(false);
    expect(await hotHitRatio(port)).toBeLessThan(0.2);
    await restart(true);
    const done = await prewarmed();
    expect(done.prewarmed).toBeGreaterThan(0);
    expect(done.total).toBe(done.prewarmed + done.skipped);
    expect(await hotHitRatio(port)).toBeGreaterThan(0.95);
    expect(storageRequests(statePath).at(-1)).toBe('GET 200');
  });

  it('prewarms from a state written as a Neon compute writes it (its LFC chunks, zstd without a content size)', async () => {
    const [rel] = await appSql<{ spc: number; db: number; filenode: number; blocks: number }>(
      port,
      `select coalesce(nullif(c.reltablespace, 0), (select dattablespace from pg_database where datname = current_database()))::int as spc,
              (select oid from pg_database where datname = current_database())::int as db,
              pg_relation_filenode(c.oid)::int as filenode, (pg_relation_size(c.oid) / 8192)::int as blocks
         from pg_class c where c.relname = 'hot'`,
    );
    const chunks = [];
    for (let first = 0; first < rel!.blocks; first += 128) {
      chunks.push({ tablespace: rel!.spc, database: rel!.db, relfilenode: rel!.filenode, fork: 0, firstBlock: first, cached: Array.from({ length: Math.min(128, rel!.blocks - first) }, (_, i) => i) });
    }
    const neonMade = rawZstdFrame(buildNeonLfcState(7, chunks));
    const put = await fetch(`${inject('stack').endpointStorage.url}${statePath}`, { method: 'PUT', headers: { authorization: `Bearer ${token}` }, body: neonMade });
    expect(put.status).toBe(200);

    // (A restart alone leaves the table cold: the test before shows it.)
    await restart(true);
    const done = await prewarmed();
    expect(done.total).toBe(rel!.blocks);
    expect(await hotHitRatio(port)).toBeGreaterThan(0.95);
  });

  it('keeps the token out of the worker output and out of the workflow history in clear text', async () => {
    const signature = token.split('.')[2]!;
    expect(worker.output()).not.toContain(signature);
    const connection = await Connection.connect({ address: testConfig().temporal.address });
    try {
      const raw = new Client({ connection, namespace: testConfig().temporal.namespace });
      const history = await raw.workflow.getHandle(computeWorkflowId(computeId)).fetchHistory();
      const text = JSON.stringify(history, (_k, v: unknown) => (v instanceof Uint8Array ? Buffer.from(v).toString('latin1') : v));
      expect(text).toContain('prewarmCache');
      expect(text).not.toContain(signature);
    } finally {
      await connection.close();
    }
  });
});

afterAll(async () => {
  await killAllProcesses();
  await cleanupComputes();
});
