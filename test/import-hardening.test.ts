import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Client } from '@temporalio/client';
import type { NativeConnection, Worker } from '@temporalio/worker';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPageserverClient, type PageserverClient, type TimelineInfo } from '../drivers/pageserver';
import { generateLocalKey } from '../drivers/secrets/local-aes';
import { ImportClient } from '../client/import-client';
import { startImportCallbackServer } from '../client/import-callback-server';
import { openClient } from '../client/context';
import { importControlActivitiesFor } from '../activities/import-control';
import { encryptedDataConverter } from '../common/codec/data-converter';
import type { AppConfig } from '../common/config';
import { importIdempotencyKey } from '../model/import-status';
import { createControlPlaneWorker } from '../workers/control-plane';
import { createWorker } from '../workers/run-worker';
import { neonId, uniqueId } from './helpers/ids';
import { testConfig } from './helpers/stack';

/**
 * The import's control-plane decisions under faults other than a killed worker (issue 15):
 *
 * - an import never deletes a timeline it did not create, even when its start request failed
 *   transiently (a 5xx or a timeout, before or after the pageserver acted, or a 429 that was not
 *   the pageserver's "this import is running") and the import then failed or was cancelled;
 * - the import_complete callback fails closed, and a forged failure notice never fails an import.
 *
 * Real Temporal, the real control-plane worker (in this process, on its own task queue) and the
 * stack's dev pageserver behind a fault-injecting HTTP proxy. Where an import must get as far as
 * waiting for the pageserver, the importer host is SIMULATED (activities that return at once and
 * never write the commit marker): only the control plane's decisions are under test, and the
 * pageserver then keeps the import running for as long as the test needs.
 */

type StartAction = 'forward' | 'forward-then-503' | '503' | '429';

interface FaultProxy {
  url: string;
  /** What the proxy does with each import start request for `timelineId`; the last action repeats. */
  script(timelineId: string, actions: StartAction[]): void;
  /** Import start requests seen for `timelineId`. */
  starts(timelineId: string): number;
  close(): Promise<void>;
}

/** A loopback proxy in front of the pageserver's HTTP API that fails import start requests as scripted. */
async function startFaultProxy(upstreamUrl: string): Promise<FaultProxy> {
  const upstream = new URL(upstreamUrl);
  const scripts = new Map<string, StartAction[]>();
  const seen = new Map<string, number>();
  const relay = (req: http.IncomingMessage, body: Buffer): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer }> =>
    new Promise((resolve, reject) => {
      const out = http.request({ host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 502, headers: res.headers, body: Buffer.concat(chunks) }));
        res.on('error', reject);
      });
      out.on('error', reject);
      out.end(body);
    });
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      void (async () => {
        const body = Buffer.concat(chunks);
        let action: StartAction = 'forward';
        if (req.method === 'POST' && /^\/v1\/tenant\/[0-9a-f]{32}\/timeline\/?$/.test(req.url ?? '')) {
          const json = JSON.parse(body.toString('utf8') || '{}') as { new_timeline_id?: string; import_pgdata?: unknown };
          const script = json.new_timeline_id ? scripts.get(json.new_timeline_id) : undefined;
          if (json.import_pgdata && json.new_timeline_id && script) {
            const n = seen.get(json.new_timeline_id) ?? 0;
            seen.set(json.new_timeline_id, n + 1);
            action = script[Math.min(n, script.length - 1)]!;
          }
        }
        const reply = (status: number, msg: string) => {
          const text = JSON.stringify({ msg });
          res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
          res.end(text);
        };
        if (action === '503') return reply(503, 'injected: service unavailable (the pageserver never saw the request)');
        if (action === '429') return reply(429, 'injected: too many requests (the pageserver never saw the request)');
        const answer = await relay(req, body);
        // The pageserver acted; its answer is lost on the way back, as in a timeout.
        if (action === 'forward-then-503') return reply(503, 'injected: gateway timeout (the pageserver acted, its answer was lost)');
        res.writeHead(answer.status, answer.headers);
        res.end(answer.body);
      })().catch(() => res.destroy());
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    script: (timelineId, actions) => void scripts.set(timelineId, actions),
    starts: (timelineId) => seen.get(timelineId) ?? 0,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

let scratch: string;
let proxy: FaultProxy;
let config: AppConfig;
let pageserver: PageserverClient;
let imports: ImportClient;
let client: Client;
let closeClient: () => Promise<void>;
const workers: { worker: Worker; connection: NativeConnection; running: Promise<void> }[] = [];
/** An importer queue nobody polls: an import that gets past its start waits there for a host. */
const NOBODY_QUEUE = uniqueId('no-importers');
/** The simulated importer host's queue. */
const SIMULATED_QUEUE = uniqueId('simulated-importer');

async function runWorker(handle: { worker: Worker; connection: NativeConnection }): Promise<void> {
  workers.push({ ...handle, running: handle.worker.run() });
}

beforeAll(async () => {
  scratch = mkdtempSync(path.join(os.tmpdir(), 'dc-imp-harden-'));
  const keyFile = path.join(scratch, 'import.key');
  writeFileSync(keyFile, `${generateLocalKey()}\n`, { mode: 0o600 });
  const direct = testConfig();
  proxy = await startFaultProxy(direct.storage.pageserverHttp!);
  config = testConfig({ PAGESERVER_HTTP_URL: proxy.url, DURABLE_COMPUTE_TASK_QUEUE: uniqueId('cp-harden'), DURABLE_COMPUTE_IMPORT_KEY_FILE: keyFile });
  pageserver = createPageserverClient({ httpUrl: direct.storage.pageserverHttp!, token: direct.storage.authToken });
  await runWorker(await createControlPlaneWorker(config));
  // SIMULATED importer host: every local step returns at once, and the commit marker is never written.
  const simulated = {
    claimImportHost: async () => ({ hostId: 'simulated-host', taskQueue: SIMULATED_QUEUE, workdir: path.join(scratch, 'simulated-workdir') }),
    initScratchPostgres: async () => ({ port: 0, socketDir: '', reusedDataDir: false, started: true, createdDatabase: true }),
    dumpSource: async () => ({ skipped: false, tocSha256: '0'.repeat(64), bytes: 0, files: 0 }),
    restoreDump: async () => ({ skipped: false, tocSha256: '0'.repeat(64) }),
    stopScratchPostgres: async () => ({ checkpointLsn: '0/0', state: 'shut down' }),
    uploadPgdata: async () => ({
      phase: 'upload' as const,
      filesTotal: 0,
      bytesTotal: 0,
      filesDone: 0,
      bytesDone: 0,
      uploadedFiles: 0,
      uploadedBytes: 0,
      skippedFiles: 0,
      skippedBytes: 0,
      resumedParts: 0,
      restartedFiles: 0,
      skippedSymlinks: [],
      removedStaleObjects: 0,
      verifiedByContent: 0,
    }),
    writePgdataStatus: async () => undefined,
    writeFastImportStatus: async () => ({ command: 'pgdata', done: false }),
    destroyWorkdir: async () => undefined,
  };
  await runWorker(await createWorker(config, { taskQueue: SIMULATED_QUEUE, activities: simulated, dataConverter: encryptedDataConverter(config.payloadKeys) }));
  const opened = await openClient(config);
  client = opened.client;
  closeClient = opened.close;
  imports = new ImportClient(client, config.temporal.controlPlaneTaskQueue, config.imports);
}, 300_000);

afterAll(async () => {
  for (const w of workers) w.worker.shutdown();
  for (const w of workers) {
    await w.running.catch(() => undefined);
    await w.connection.close();
  }
  await closeClient?.();
  await proxy?.close();
  if (scratch) rmSync(scratch, { recursive: true, force: true });
}, 120_000);

/** A timeline that exists before any import: bootstrapped, with its initdb image as data. */
async function existingTimeline(): Promise<{ tenantId: string; timelineId: string; before: TimelineInfo }> {
  const tenantId = neonId();
  const timelineId = neonId();
  // initdb on a busy machine can take a while.
  await pageserver.createTimeline(tenantId, { new_timeline_id: timelineId, pg_version: 15 }, { timeoutMs: 240_000 });
  const before = await pageserver.getTimeline(tenantId, timelineId);
  expect(before.state).toBe('Active');
  expect((before as { image_lsns?: string[] }).image_lsns?.length).toBeGreaterThan(0);
  return { tenantId, timelineId, before };
}

/** The timeline is still there, with the same data (same images, same last record). */
async function expectUntouched(tenantId: string, timelineId: string, before: TimelineInfo): Promise<void> {
  const after = await pageserver.getTimeline(tenantId, timelineId);
  const fields = (i: TimelineInfo) => ({
    state: i.state,
    last_record_lsn: i.last_record_lsn,
    initdb_lsn: i.initdb_lsn,
    image_lsns: (i as { image_lsns?: string[] }).image_lsns,
    current_physical_size: (i as { current_physical_size?: number }).current_physical_size,
  });
  expect(fields(after)).toEqual(fields(before));
}

async function startImport(importId: string, tenantId: string, timelineId: string, importerTaskQueue: string, claimTimeoutSeconds = 5): Promise<void> {
  await imports.start({
    importId,
    // Never reached: every import here ends before (or without) a real dump.
    sourceConnstring: 'postgresql://importer:unused@127.0.0.1:1/shop',
    tenantId,
    timelineId,
    jobs: 1,
    options: { importerTaskQueue, claimTimeoutSeconds, heartbeatTimeoutSeconds: 10, hostLostAfterSeconds: 60, pageserverPollSeconds: 1 },
  });
}

async function waitForEnd(importId: string, timeoutMs = 120_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const s = await imports.status(importId);
    if (s.workflow_status !== 'RUNNING') return s;
    if (Date.now() > deadline) throw new Error(`import ${importId} still running after ${timeoutMs} ms (phase ${s.phase})`);
    await sleep(250);
  }
}

describe.concurrent('an import never deletes a timeline it did not create', () => {
  it.each([
    ['after the pageserver acted (its 409 lost to a 503), then a 429 that was not its own', ['forward-then-503', '429'] as StartAction[]],
    ['before the pageserver acted (a 503), then a 429 that was not its own', ['503', '429'] as StartAction[]],
  ])('start failed transiently %s, and the import failed: the timeline and its data stay', async (_what, script) => {
    const { tenantId, timelineId, before } = await existingTimeline();
    proxy.script(timelineId, script);
    const importId = uniqueId('own-fail');
    await startImport(importId, tenantId, timelineId, NOBODY_QUEUE);
    const final = await waitForEnd(importId);
    expect(final.workflow_status).toBe('FAILED');
    expect(final.error).toMatch(/already exists and is not this import's/);
    expect(proxy.starts(timelineId)).toBeGreaterThanOrEqual(2);
    await expectUntouched(tenantId, timelineId, before);
  }, 300_000);

  it('start failed transiently (after and before the pageserver acted) and the import was cancelled while retrying: the timeline and its data stay', async () => {
    const { tenantId, timelineId, before } = await existingTimeline();
    proxy.script(timelineId, ['forward-then-503', '503']);
    const importId = uniqueId('own-cancel');
    await startImport(importId, tenantId, timelineId, NOBODY_QUEUE);
    const deadline = Date.now() + 60_000;
    while (proxy.starts(timelineId) < 2 && Date.now() < deadline) await sleep(100);
    expect(proxy.starts(timelineId)).toBeGreaterThanOrEqual(2);
    const final = await imports.cancel(importId);
    expect(final).toMatchObject({ phase: 'cancelled', workflow_status: 'CANCELLED' });
    await expectUntouched(tenantId, timelineId, before);
  }, 300_000);

  it('the cleanup step itself keeps a timeline whose pageserver record lacks the import\'s key, and deletes nothing without a key', async () => {
    const { tenantId, timelineId, before } = await existingTimeline();
    const activities = importControlActivitiesFor(config);
    const importId = uniqueId('own-direct');
    expect(await activities.deleteImportTimeline({ tenantId, timelineId, idempotencyKey: importIdempotencyKey(importId) })).toMatchObject({
      deleted: false,
      kept: expect.stringMatching(/not created by this import/),
    });
    expect(await activities.deleteImportTimeline({ tenantId, timelineId })).toMatchObject({ deleted: false, kept: expect.stringMatching(/no idempotency key/) });
    await expectUntouched(tenantId, timelineId, before);
  }, 300_000);

  it("deletes what it did create: its start answer lost after the pageserver acted, then cancelled (SIMULATED importer host)", async () => {
    const tenantId = neonId();
    const timelineId = neonId();
    proxy.script(timelineId, ['forward-then-503', 'forward']);
    const importId = uniqueId('own-created');
    await startImport(importId, tenantId, timelineId, SIMULATED_QUEUE, 60);
    const deadline = Date.now() + 60_000;
    while ((await imports.status(importId)).phase !== 'pageserver_import' && Date.now() < deadline) await sleep(250);
    // The pageserver's own record: this import's idempotency key.
    const info = (await pageserver.getTimeline(tenantId, timelineId)) as TimelineInfo & { import_pgdata?: { idempotency_key?: string } };
    expect(info.import_pgdata?.idempotency_key).toBe(importIdempotencyKey(importId));
    const final = await imports.cancel(importId);
    expect(final).toMatchObject({ phase: 'cancelled', workflow_status: 'CANCELLED' });
    await expect(pageserver.getTimeline(tenantId, timelineId)).rejects.toMatchObject({ status: 404 });
  }, 300_000);
});

describe('the import_complete callback', () => {
  it('without a token: refuses every request and says at startup why', async () => {
    // A client that is never connected: nothing may get as far as Temporal.
    const unconnected = new Client();
    const lines: string[] = [];
    const server = await startImportCallbackServer(unconnected, { host: '127.0.0.1', port: 0, token: undefined, log: (l) => lines.push(l) });
    try {
      expect(lines.join('\n')).toMatch(/no token.*refuses every/i);
      const notice = JSON.stringify({ tenant_id: neonId(), timeline_id: neonId(), error: 'forged' });
      for (const headers of [{}, { authorization: 'Bearer anything' }] as Record<string, string>[]) {
        const res = await fetch(`${server.url}/import_complete`, { method: 'PUT', headers, body: notice });
        expect(res.status).toBe(401);
        expect(((await res.json()) as { msg: string }).msg).toMatch(/no token is configured/);
      }
      const status = await fetch(`${server.url}/status`);
      expect(status.status).toBe(503);
      expect(((await status.json()) as { reason: string }).reason).toMatch(/no token is configured/);
    } finally {
      await server.close();
    }
  });

  it('a forged failure notice, even one carrying the token, never fails an import: the pageserver decides (SIMULATED importer host)', async () => {
    const tenantId = neonId();
    const timelineId = neonId();
    const importId = uniqueId('forged');
    await startImport(importId, tenantId, timelineId, SIMULATED_QUEUE, 60);
    const deadline = Date.now() + 60_000;
    while ((await imports.status(importId)).phase !== 'pageserver_import' && Date.now() < deadline) await sleep(250);
    expect((await imports.status(importId)).phase).toBe('pageserver_import');
    const token = config.storage.authToken!;
    const server = await startImportCallbackServer(client, { host: '127.0.0.1', port: 0, token });
    try {
      const forged = JSON.stringify({ tenant_id: tenantId, timeline_id: timelineId, error: 'forged: the import failed' });
      expect((await fetch(`${server.url}/import_complete`, { method: 'PUT', body: forged })).status).toBe(401);
      const res = await fetch(`${server.url}/import_complete`, { method: 'PUT', headers: { authorization: `Bearer ${token}` }, body: forged });
      expect(res.status).toBe(200);
      expect(((await res.json()) as { signalled: number }).signalled).toBe(1);
    } finally {
      await server.close();
    }
    // Several polls later the pageserver still says "running", so the import still waits.
    await sleep(4000);
    const after = await imports.status(importId);
    expect(after).toMatchObject({ workflow_status: 'RUNNING', phase: 'pageserver_import', error: null });
    const final = await imports.cancel(importId);
    expect(final.workflow_status).toBe('CANCELLED');
  }, 300_000);
});
