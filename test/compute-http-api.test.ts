/**
 * compute_ctl's external HTTP API on the compute worker, driven the way compute_ctl's clients do:
 * plain HTTP with `Authorization: Bearer <EdDSA JWT>`, against a real compute on the test stack.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWTPayload } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectAsAdmin } from '../drivers/postgres/connect';
import type { ComputeClient } from '../client/compute-client';
import { freePort } from '../dev/processes';
import { cleanupComputes, computeApiPort, computeEnv, createTestTimeline, exampleSpecFor, startComputeWorker, testComputeClient, testPgdata, TEST_WORKFLOW_OPTIONS } from './helpers/compute';
import { uniqueId } from './helpers/ids';
import { killAllProcesses, startProcess, type WorkerProcess } from '../dev/child-processes';
import { checkExposition } from './helpers/prometheus-format';
import { waitFor } from './helpers/wait';

/** A JSON body, loosely typed: the assertions say what it must hold. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const jsonOf = (res: Response): Promise<any> => res.json();

interface Keys {
  privateKey: CryptoKey;
  jwk: Record<string, unknown>;
}

async function newKeys(kid: string): Promise<Keys> {
  const { privateKey, publicKey } = await generateKeyPair('EdDSA', { crv: 'Ed25519' });
  return { privateKey, jwk: { ...(await exportJWK(publicKey)), kid, use: 'sig', alg: 'EdDSA' } };
}

/** A token as Neon's control plane mints them: EdDSA, compute_id (or the admin scope), an expiry. */
function mint(keys: Keys, claims: JWTPayload, expiresIn: string | number = '5m'): Promise<string> {
  return new SignJWT(claims).setProtectedHeader({ alg: 'EdDSA', kid: String(keys.jwk.kid) }).setIssuedAt().setExpirationTime(expiresIn).sign(keys.privateKey);
}

describe('compute_ctl HTTP API on the compute worker', () => {
  const computeId = uniqueId('http');
  let computes: ComputeClient;
  let close: () => Promise<void>;
  let worker: WorkerProcess;
  let base: string;
  let pgdata: string;
  let config: { spec: Record<string, unknown> & { cluster: { settings: { name: string; value: string }[] } }; compute_ctl_config: unknown };
  let keys: Keys;
  let otherKeys: Keys;
  let token: string;
  let workerMetricsPort: number;
  const api = (route: string, init: RequestInit & { token?: string | null } = {}) => {
    const headers = new Headers(init.headers);
    const bearer = init.token === undefined ? token : init.token;
    if (bearer !== null) headers.set('authorization', `Bearer ${bearer}`);
    return fetch(`${base}${route}`, { ...init, headers });
  };
  const postJson = (route: string, body: unknown, init: RequestInit & { token?: string | null } = {}) =>
    api(route, { ...init, method: 'POST', headers: { 'content-type': 'application/json' }, body: typeof body === 'string' ? body : JSON.stringify(body) });

  beforeAll(async () => {
    ({ computes, close } = await testComputeClient());
    keys = await newKeys('cp-1');
    otherKeys = await newKeys('stranger');
    const example = await exampleSpecFor(await createTestTimeline());

    config = { spec: example.spec.spec as typeof config.spec, compute_ctl_config: { jwks: { keys: [keys.jwk] } } };
    pgdata = testPgdata();
    workerMetricsPort = await freePort();
    // The prewarm failpoint holds the first prewarm, so "one is already running" is observable.
    worker = await startComputeWorker(computeId, pgdata, ['prewarmCache'], {
      env: { DURABLE_COMPUTE_WORKER_METRICS_PORT: String(workerMetricsPort), DURABLE_COMPUTE_WORKER_METRICS_HOST: '127.0.0.1' },
    });
    base = `http://127.0.0.1:${computeApiPort(worker)}`;
    // An empty compute: it gets its spec (and with it the API's keys) from POST /configure.
    await computes.start(computeId, undefined, TEST_WORKFLOW_OPTIONS);
    token = await mint(keys, { compute_id: computeId });
  });
  afterAll(async () => {
    await computes.terminate(computeId, 'immediate').catch(() => undefined);
    await close();
    await killAllProcesses();
    await cleanupComputes();
  });

  it('serves an empty compute without authentication while it has no keys, and says so once', async () => {
    const res = await api('/status', { token: null });
    expect(res.status).toBe(200);
    expect(res.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
    expect(await jsonOf(res)).toMatchObject({ status: 'empty', tenant: null, timeline: null, error: null, last_active: null });
    await api('/status', { token: null });
    expect(worker.output().match(/requests are NOT authenticated/g)).toHaveLength(1);
  });

  it('refuses an invalid spec with 400 naming the field, and malformed JSON with 400', async () => {
    const broken = structuredClone(config);
    broken.spec.tenant_id = 'not-hex';
    const invalid = await postJson('/configure', broken);
    expect(invalid.status).toBe(400);
    expect((await jsonOf(invalid)).error).toMatch(/^invalid spec: spec\.tenant_id: must be 32 hex/);

    const missing = await postJson('/configure', { spec: config.spec });
    expect(missing.status).toBe(400);
    expect((await jsonOf(missing)).error).toMatch(/missing field `compute_ctl_config`/);

    const malformed = await postJson('/configure', '{"spec": {');
    expect(malformed.status).toBe(400);
    expect((await jsonOf(malformed)).error).toMatch(/^failed to parse the request body as JSON: /);
    expect((await api('/status', { token: null })).status).toBe(200);
  });

  it('configures: blocks until running and answers the status', async () => {
    const res = await postJson('/configure', config);
    const body = await jsonOf(res);
    expect(res.status, JSON.stringify(body)).toBe(200);
    expect(body).toMatchObject({ status: 'running', tenant: config.spec.tenant_id, timeline: config.spec.timeline_id, error: null });
  });

  it("takes the spec's keys after configure: a missing, forged, expired or foreign token is refused", async () => {
    const missing = await api('/status', { token: null });
    expect(missing.status).toBe(400);
    expect((await jsonOf(missing)).error).toMatch(/invalid authorization token/);

    const forged = await api('/status', { token: await mint(otherKeys, { compute_id: computeId }) });
    expect(forged.status).toBe(401);
    expect((await jsonOf(forged)).error).toMatch(/signature verification failed/);

    const expired = await api('/status', { token: await mint(keys, { compute_id: computeId }, Math.floor(Date.now() / 1000) - 60) });
    expect(expired.status).toBe(401);
    expect((await jsonOf(expired)).error).toMatch(/expired/);

    const foreign = await api('/status', { token: await mint(keys, { compute_id: 'some-other-compute' }) });
    expect(foreign.status).toBe(403);
    expect((await jsonOf(foreign)).error).toMatch(/invalid compute ID/);
    expect((await api('/status', { token: await mint(keys, {}) })).status).toBe(403);

    const adminNoAudience = await api('/status', { token: await mint(keys, { scope: 'compute_ctl:admin' }) });
    expect(adminNoAudience.status).toBe(401);
    expect((await jsonOf(adminNoAudience)).error).toMatch(/missing audience/);
    expect((await api('/status', { token: await mint(keys, { scope: 'compute_ctl:admin', aud: ['other'] }) })).status).toBe(401);
    expect((await api('/status', { token: await mint(keys, { scope: 'compute_ctl:admin', aud: ['compute'] }) })).status).toBe(200);

    const ok = await api('/status');
    expect(ok.status).toBe(200);
    expect((await jsonOf(ok)).status).toBe('running');
  });

  it('answers /metrics.json with the startup timings and /metrics without a token', async () => {
    const timings = await jsonOf(await api('/metrics.json'));
    expect(timings.total_startup_ms).toBeGreaterThan(0);
    expect(timings.basebackup_bytes).toBeGreaterThan(0);
    expect(timings).toHaveProperty('sync_safekeepers_ms');
    expect(timings).toHaveProperty('wait_for_spec_ms');

    const res = await api('/metrics', { token: null });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    const text = await res.text();
    expect(text).toMatch(/^compute_ctl_up\{build_tag="durable-compute",status="running"\} 1$/m);
    expect(text).toMatch(/^compute_ctl_up\{build_tag="durable-compute",status="configuration-pending"\} 0$/m);
    expect(text).toMatch(/^compute_ctl_startup_phase_seconds\{phase="total"\} [1-9.]/m);
    expect(text).toMatch(/^compute_ctl_lfc_prewarms_total 0$/m);
    const check = checkExposition(text);
    expect(check.problems).toEqual([]);
  });

  it('lists databases and roles, and dumps a database schema with pg_dump', async () => {
    const catalog = await jsonOf(await api('/dbs_and_roles'));
    expect(catalog.roles).toContainEqual({ name: 'alice', encrypted_password: expect.stringMatching(/^(md5|SCRAM-SHA-256)/), options: null });
    expect(catalog.databases).toContainEqual({ name: 'app', owner: 'alice', options: null, restrict_conn: false, invalid: false });
    expect(catalog.roles.some((r: { name: string }) => r.name.startsWith('pg_'))).toBe(false);

    const admin = await connectAsAdmin(pgdata, { user: 'cloud_admin' }, 'app');
    try {
      await admin.query('CREATE TABLE public."http probe" (id int primary key, note text)');
    } finally {
      await admin.end();
    }
    const schema = await api('/database_schema?database=app');
    expect(schema.status).toBe(200);
    const text = await schema.text();
    expect(text).toMatch(/PostgreSQL database dump/);
    expect(text).toMatch(/CREATE TABLE public\."http probe"/);
    expect(text).not.toMatch(/INSERT INTO|COPY /);

    const absent = await api(`/database_schema?database=${encodeURIComponent("nope' host=elsewhere")}`);
    expect(absent.status).toBe(404);
    expect(await jsonOf(absent)).toEqual({ error: 'database does not exist' });
    expect((await api('/database_schema')).status).toBe(400);
  });

  it('checks writability through public.health_check and reports insights from pg_stat_statements', async () => {
    const writable = await api('/check_writability', { method: 'POST' });
    expect(writable.status).toBe(200);
    expect(await jsonOf(writable)).toBe(true);
    const admin = await connectAsAdmin(pgdata, { user: 'cloud_admin' }, 'postgres');
    try {
      expect((await admin.query('SELECT id FROM public.health_check')).rows).toEqual([{ id: 1 }]);

      // The example spec preloads pg_stat_statements and the startup creates it; without it, a clear error.
      await admin.query('DROP EXTENSION IF EXISTS pg_stat_statements');
      const missing = await api('/insights');
      expect(missing.status).toBe(500);
      expect((await jsonOf(missing)).error).toMatch(/pg_stat_statements extension is not installed/);
      await admin.query('CREATE EXTENSION pg_stat_statements');
    } finally {
      await admin.end();
    }
    const res = await api('/insights');
    expect(res.status).toBe(200);
    // compute_ctl's body is a JSON string holding the JSON object.
    const inner = JSON.parse((await jsonOf(res)) as string);
    expect(Array.isArray(inner.pg_stat_statements)).toBe(true);
  });

  it('offloads and prewarms the cache: 202, state, 429 while one runs, cancel, counters', async () => {
    expect(await jsonOf(await api('/lfc/offload'))).toEqual({ status: 'not_offloaded' });
    expect((await api('/lfc/offload', { method: 'POST' })).status).toBe(202);
    const offloaded = await waitFor('offload done', async () => {
      const s = await jsonOf(await api('/lfc/offload'));
      return s.status === 'offloading' ? undefined : s;
    });
    expect(offloaded.status).toBe('completed');

    expect((await api('/lfc/prewarm', { method: 'POST' })).status).toBe(202);
    expect(await jsonOf(await api('/lfc/prewarm'))).toEqual({ status: 'prewarming' });
    const again = await api('/lfc/prewarm', { method: 'POST' });
    expect(again.status).toBe(429);
    expect((await jsonOf(again)).error).toMatch(/already running/);
    expect((await api('/lfc/prewarm', { method: 'DELETE' })).status).toBe(202);
    expect(await jsonOf(await api('/lfc/prewarm'))).toEqual({ status: 'cancelled' });

    expect((await api(`/lfc/prewarm?from_endpoint=${encodeURIComponent('../x')}`, { method: 'POST' })).status).toBe(400);
    expect((await api('/lfc/prewarm', { method: 'POST' })).status).toBe(202);
    const prewarmed = await waitFor('prewarm done', async () => {
      const s = await jsonOf(await api('/lfc/prewarm'));
      return s.status === 'prewarming' ? undefined : s;
    });
    expect(prewarmed.status).toBe('completed');
    const text = await (await api('/metrics', { token: null })).text();
    expect(text).toMatch(/^compute_ctl_lfc_prewarms_total 1$/m);
    expect(text).toMatch(/^compute_ctl_lfc_offloads_total 1$/m);
  });

  it('answers 404 to an unknown route, 405 to a wrong method and 413 to a body over 1 MiB, and keeps serving', async () => {
    const unknown = await api('/nowhere');
    expect(unknown.status).toBe(404);
    expect(await unknown.text()).toBe('');
    expect((await api('/status', { method: 'DELETE' })).status).toBe(405);
    const big = await postJson('/configure', JSON.stringify({ spec: config.spec, compute_ctl_config: {}, padding: 'x'.repeat(1024 * 1024) }));
    expect(big.status).toBe(413);
    expect((await jsonOf(big)).error).toMatch(/exceeds the limit of 1048576 bytes/);
    expect((await api('/status')).status).toBe(200);
  });

  it("exports the SDK Runtime's metrics on the worker metrics port", async () => {
    const res = await fetch(`http://127.0.0.1:${workerMetricsPort}/metrics`);
    expect(res.status).toBe(200);
    const text = await res.text();
    expect(text).toMatch(/^temporal_\w+/m);
    expect(checkExposition(text).problems).toEqual([]);
  });

  it('terminates: 400 for a bad mode, {lsn} once terminated, 201 when already terminated, then 412 for configure', async () => {
    expect((await api('/terminate?mode=gentle', { method: 'POST' })).status).toBe(400);
    const res = await api('/terminate?mode=fast', { method: 'POST' });
    const body = await jsonOf(res);
    expect(res.status, JSON.stringify(body)).toBe(200);
    expect(body.lsn).toMatch(/^[0-9A-F]+\/[0-9A-F]+$/);
    const again = await api('/terminate', { method: 'POST' });
    expect(again.status).toBe(201);
    expect(await jsonOf(again)).toEqual(body);
    const configure = await postJson('/configure', config);
    expect(configure.status).toBe(412);
    expect(await jsonOf(configure)).toEqual({ error: 'invalid compute status: terminated' });
  });
});

describe('worker metrics ports', () => {
  const dirs: string[] = [];
  afterAll(async () => {
    await killAllProcesses();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  it('the control-plane worker exports the Runtime metrics and the fleet gauges; the importer worker the Runtime metrics', async () => {
    const cpPort = await freePort();
    const importerPort = await freePort();
    const metricsEnv = (port: number) => ({ DURABLE_COMPUTE_WORKER_METRICS_PORT: String(port), DURABLE_COMPUTE_WORKER_METRICS_HOST: '127.0.0.1' });
    // Own task queues: these workers must not take work from the other tests' workflows.
    await startProcess('bin/durable-compute.mjs', ['worker', 'control-plane'], {
      env: computeEnv({ ...metricsEnv(cpPort), DURABLE_COMPUTE_TASK_QUEUE: uniqueId('metrics-cp'), DURABLE_COMPUTE_FLEET_METRICS_INTERVAL_SECONDS: '1' }),
      readyLine: /control-plane worker ready/,
    });
    const workdir = mkdtempSync(path.join(os.tmpdir(), 'dc-metrics-importer-'));
    dirs.push(workdir);
    writeFileSync(path.join(workdir, '.keep'), '');
    await startProcess('bin/durable-compute.mjs', ['worker', 'importer'], {
      env: computeEnv({ ...metricsEnv(importerPort), DURABLE_COMPUTE_IMPORTER_TASK_QUEUE: uniqueId('metrics-imp'), DURABLE_COMPUTE_IMPORTER_WORKDIR: workdir }),
      readyLine: /importer worker ready/,
    });

    const cpText = await waitFor('fleet gauges', async () => {
      const text = await (await fetch(`http://127.0.0.1:${cpPort}/metrics`)).text();
      return /^durable_compute_computes\{status="running"\} \d+$/m.test(text) && /^durable_compute_imports\{phase="dump"\} \d+$/m.test(text) ? text : undefined;
    });
    expect(cpText).toMatch(/^temporal_\w+/m);
    expect(cpText).toMatch(/^durable_compute_imports_closed\{execution_status="completed"\} \d+$/m);
    expect(checkExposition(cpText).problems).toEqual([]);

    const importerText = await waitFor('importer metrics', async () => {
      const text = await (await fetch(`http://127.0.0.1:${importerPort}/metrics`)).text();
      return /^temporal_\w+/m.test(text) ? text : undefined;
    });
    expect(checkExposition(importerText).problems).toEqual([]);
  });
});
