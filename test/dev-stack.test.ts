import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { processStartTime } from '../common/process-start-time';
import { freePort, freePortRange } from '../dev/processes';
import { devStorageTokenFile } from '../dev/stack-settings';
import { runCli } from './helpers/cli';

async function stackPorts(): Promise<string[]> {
  return [
    '--temporal-port', String(await freePort()),
    '--ui-port', String(await freePort()),
    '--s3-port', String(await freePort()),
    '--pageserver-pg-port', String(await freePort()),
    '--pageserver-http-port', String(await freePort()),
    '--safekeeper-pg-port', String(await freePortRange(3)),
    '--safekeeper-http-port', String(await freePortRange(3)),
    '--codec-port', String(await freePort()),
    '--endpoint-storage-port', String(await freePort()),
  ];
}

/** Each `dev up` starts ten processes (Temporal, S3, storage, workers, codec server): minutes on a busy 2-core machine. */
const STACK_TEST_TIMEOUT_MS = 540_000;
const UP = { timeoutMs: 240_000 };

describe('durable-compute dev up/status/down', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'dc-devstack-'));
  afterAll(async () => {
    await runCli(['dev', 'down', '--dir', dir]);
    rmSync(dir, { recursive: true, force: true });
  });

  it('starts once, is idempotent, reports status, and stops exactly its processes', async () => {
    const ports = await stackPorts();
    const first = await runCli(['dev', 'up', '--json', '--dir', dir, ...ports], UP);
    expect(first.stderr).not.toMatch(/error/i);
    expect(first.code).toBe(0);
    const up = JSON.parse(first.stdout);
    expect(up).toMatchObject({
      temporal: { address: expect.stringMatching(/^127\.0\.0\.1:\d+$/), namespace: 'default', ui: expect.stringMatching(/^http:\/\//) },
      s3: { endpoint: expect.stringMatching(/^http:\/\//), bucket: 'durable-compute', region: 'us-east-1' },
      pageserver: { pg: expect.stringMatching(/^127\.0\.0\.1:\d+$/), http: expect.stringMatching(/^http:\/\/127\.0\.0\.1:\d+$/) },
      safekeepers: [
        { pg: expect.stringMatching(/:\d+$/), http: expect.stringMatching(/^http:/) },
        { pg: expect.stringMatching(/:\d+$/), http: expect.stringMatching(/^http:/) },
        { pg: expect.stringMatching(/:\d+$/), http: expect.stringMatching(/^http:/) },
      ],
      running: true,
    });
    // The dev credentials stay out of printed output.
    expect(first.stdout).not.toContain('S3RVER');

    const second = await runCli(['dev', 'up', '--json', '--dir', dir, ...ports], UP);
    expect(second.code).toBe(0);
    const again = JSON.parse(second.stdout);
    expect(again.temporal).toEqual(up.temporal);
    expect(again.s3).toEqual(up.s3);
    expect(again.processes.temporal.pid).toBe(up.processes.temporal.pid);
    expect(again.processes.s3.pid).toBe(up.processes.s3.pid);

    const ui = await fetch(up.temporal.ui);
    expect(ui.status).toBe(200);
    const bucket = await fetch(`${up.s3.endpoint}/${up.s3.bucket}`);
    expect(bucket.status).toBeLessThan(500);

    const status = JSON.parse((await runCli(['dev', 'status', '--json', '--dir', dir])).stdout);
    expect(status.running).toBe(true);
    expect(status.temporal).toEqual(up.temporal);

    // Fast import needs nothing beyond `dev up`: an importer host and the import_complete endpoint
    // (which the pageserver was told to call) run as part of the stack.
    expect(status.processes['importer-worker']).toMatchObject({ running: true });
    expect(status.processes['import-callback']).toMatchObject({ running: true });
    expect(status.imports.callbackUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/import_complete$/);
    expect(again.imports).toEqual(up.imports);
    const callbackBase = status.imports.callbackUrl.replace(/\/import_complete$/, '');
    expect((await fetch(`${callbackBase}/status`)).status).toBe(200);
    // The endpoint storage stand-in runs with the stack, on the port asked for.
    expect(status.processes['endpoint-storage']).toMatchObject({ running: true });
    expect(status.endpointStorage.addr).toBe(`127.0.0.1:${ports[ports.indexOf('--endpoint-storage-port') + 1]}`);
    expect((await fetch(`${status.endpointStorage.url}/status`)).status).toBe(200);
    // The stack's storage demands a token of its own, kept in a file: never on a command line.
    const token = readFileSync(devStorageTokenFile(dir), 'utf8').trim();
    expect(token).toMatch(/^[0-9a-f]{64}$/);
    expect(statSync(devStorageTokenFile(dir)).mode & 0o777).toBe(0o600);
    const auth = { authorization: `Bearer ${token}` };
    const notice = JSON.stringify({ tenant_id: 'a'.repeat(32), timeline_id: 'b'.repeat(32), error: null });
    expect((await fetch(status.imports.callbackUrl, { method: 'PUT', body: notice })).status).toBe(401);
    const malformed = await fetch(status.imports.callbackUrl, { method: 'PUT', headers: auth, body: '{"tenant_id":"nope"}' });
    expect(malformed.status).toBe(400);
    // No import runs for this timeline: acknowledged (the pageserver stops repeating), nothing signalled.
    const unknown = await fetch(status.imports.callbackUrl, { method: 'PUT', headers: auth, body: notice });
    expect(await unknown.json()).toEqual({ signalled: 0 });
    const timelines = `${up.pageserver.http}/v1/tenant/${'a'.repeat(32)}/timeline`;
    expect((await fetch(timelines)).status).toBe(401);
    expect((await fetch(timelines, { headers: auth })).status).not.toBe(401);
    expect((await fetch(`${up.safekeepers[0].http}/v1/tenant/${'a'.repeat(32)}/timeline/${'b'.repeat(32)}`)).status).toBe(401);
    const pageserverArgs = readFileSync(`/proc/${up.processes.pageserver.pid}/cmdline`, 'utf8').split('\0');
    expect(pageserverArgs[pageserverArgs.indexOf('--import-complete-url') + 1]).toBe(callbackBase);
    for (const name of ['pageserver', 'safekeeper-1', 'control-plane-worker']) {
      expect(readFileSync(`/proc/${up.processes[name].pid}/cmdline`, 'utf8')).not.toContain(token);
    }

    const pids: number[] = Object.values(up.processes as Record<string, { pid: number }>).map((p) => p.pid);
    // The Web UI decodes payloads in the browser through the stack's codec server (dev only: no token, loopback).
    expect(status.processes['codec-server']).toMatchObject({ running: true });
    expect(status.codec.endpoint).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const temporalArgs = readFileSync(`/proc/${up.processes.temporal.pid}/cmdline`, 'utf8').split('\0');
    expect(temporalArgs[temporalArgs.indexOf('--ui-codec-endpoint') + 1]).toBe(status.codec.endpoint);
    const preflight = await fetch(`${status.codec.endpoint}/decode`, {
      method: 'OPTIONS',
      headers: { origin: up.temporal.ui, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type,x-namespace' },
    });
    expect(preflight.status).toBe(204);
    expect(preflight.headers.get('access-control-allow-origin')).toBe(up.temporal.ui);
    const empty = await fetch(`${status.codec.endpoint}/decode`, { method: 'POST', headers: { origin: up.temporal.ui }, body: '{"payloads":[]}' });
    expect(await empty.json()).toEqual({ payloads: [] });

    expect(Object.keys(up.processes)).toEqual(['temporal', 's3', 'endpoint-storage', 'safekeeper-1', 'safekeeper-2', 'safekeeper-3', 'pageserver', 'control-plane-worker', 'import-callback', 'importer-worker', 'codec-server']);
    const down = await runCli(['dev', 'down', '--dir', dir]);
    expect(down.code).toBe(0);
    expect(down.stdout).toMatch(/stopped codec-server, importer-worker, import-callback, control-plane-worker, pageserver, safekeeper-3, safekeeper-2, safekeeper-1, endpoint-storage, s3, temporal/);
    for (const pid of pids) expect(processStartTime(pid)).toBeUndefined();
    const after = JSON.parse((await runCli(['dev', 'status', '--json', '--dir', dir])).stdout);
    expect(after.running).toBe(false);
  }, STACK_TEST_TIMEOUT_MS);

  it('keeps running workflows across a restart because Temporal state lives in the stack directory', async () => {
    const ports = await stackPorts();
    const sdir = mkdtempSync(path.join(os.tmpdir(), 'dc-devstack-persist-'));
    try {
      const up = JSON.parse((await runCli(['dev', 'up', '--json', '--dir', sdir, ...ports], UP)).stdout);
      const { Connection, Client } = await import('@temporalio/client');
      const open = async () => {
        const connection = await Connection.connect({ address: up.temporal.address });
        return { connection, client: new Client({ connection }) };
      };
      let { connection, client } = await open();
      await client.workflow.start('noSuchWorkflowType', { taskQueue: 'nobody-polls-this', workflowId: 'persisted-across-restart' });
      await connection.close();
      expect((await runCli(['dev', 'down', '--dir', sdir])).code).toBe(0);
      expect((await runCli(['dev', 'up', '--json', '--dir', sdir], UP)).code).toBe(0);
      ({ connection, client } = await open());
      const description = await client.workflow.getHandle('persisted-across-restart').describe();
      expect(description.status.name).toBe('RUNNING');
      await connection.close();
    } finally {
      await runCli(['dev', 'down', '--dir', sdir]);
      rmSync(sdir, { recursive: true, force: true });
    }
  }, STACK_TEST_TIMEOUT_MS);

  it('fails with a clear error when a port is taken, instead of hanging', async () => {
    const blocker = net.createServer();
    const port = await new Promise<number>((resolve) => blocker.listen(0, '127.0.0.1', () => resolve((blocker.address() as net.AddressInfo).port)));
    const bdir = mkdtempSync(path.join(os.tmpdir(), 'dc-devstack-busy-'));
    try {
      const started = Date.now();
      const ports = await stackPorts();
      ports[1] = String(port);
      const result = await runCli(['dev', 'up', '--dir', bdir, ...ports]);
      expect(result.code).not.toBe(0);
      expect(result.stderr).toContain(`port ${port} on 127.0.0.1 (Temporal gRPC) is already in use`);
      expect(result.stderr).toContain('--temporal-port');
      expect(Date.now() - started).toBeLessThan(30_000);
    } finally {
      blocker.close();
      await runCli(['dev', 'down', '--dir', bdir]);
      rmSync(bdir, { recursive: true, force: true });
    }
  });
});
