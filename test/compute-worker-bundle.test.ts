import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, cpSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import proto from '@temporalio/proto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ComputeClient } from '../client/compute-client';
import { openClient } from '../client/context';
import { freePort } from '../dev/processes';
import { buildCli, buildComputeWorker } from '../deploy/build';
import { COMPUTE_WORKER_ENV, COMPUTE_WORKER_NODE_FLAGS } from '../deploy/compute-worker-runtime';
import { cleanupComputes, computeEnv, createTestTimeline, exampleSpecFor, testPgdata, TEST_WORKFLOW_OPTIONS } from './helpers/compute';
import { uniqueId } from './helpers/ids';
import { testClient, testConfig } from './helpers/stack';

/**
 * The compute worker as it ships: `npm run build`'s dist/compute-worker copied alone into an empty
 * directory (no node_modules anywhere above it, no tsx), started with plain `node` and the unit
 * file's flags, against the test stack. The compute it starts runs its workflow on the bundled
 * CLI's control-plane worker (dist/cli, copied alone too, with its prebuilt workflow bundle), on a
 * task queue of its own.
 */

interface Agent {
  child: ChildProcess;
  output: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

const agents: Agent[] = [];
let folder: string;
let cliFolder: string;

function startBundle(script: string, args: string[], readyLine: RegExp, extraEnv: Record<string, string> = {}): Promise<Agent> {
  // Only what a VM's environment file would hold, plus PATH: nothing of the test runner's (no NODE_OPTIONS loaders).
  const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', ...computeEnv(), ...COMPUTE_WORKER_ENV, ...(process.env.PG_BIN_DIR ? { PG_BIN_DIR: process.env.PG_BIN_DIR } : {}), ...extraEnv };
  const child = spawn(process.execPath, [...COMPUTE_WORKER_NODE_FLAGS, script, ...args], { cwd: path.dirname(script), env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  const agent: Agent = { child, output: () => out, exited };
  agents.push(agent);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${script} was not ready within 60 s:\n${out}`)), 60_000);
    const check = () => {
      if (readyLine.test(out)) {
        clearTimeout(timer);
        resolve(agent);
      }
    };
    child.stdout!.on('data', check);
    child.stderr!.on('data', check);
    void exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`${script} exited (${code ?? signal}) before it was ready:\n${out}`));
    });
  });
}

const startAgent = (args: string[], readyLine: RegExp) => startBundle(path.join(folder, 'compute-worker.cjs'), args, readyLine);

async function activityPollers(taskQueue: string): Promise<string[]> {
  const { client, close } = await testClient();
  try {
    const queue = await client.workflowService.describeTaskQueue({
      namespace: client.options.namespace,
      taskQueue: { name: taskQueue },
      taskQueueType: proto.temporal.api.enums.v1.TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
    });
    return (queue.pollers ?? []).map((p) => p.identity ?? '');
  } finally {
    await close();
  }
}

async function stopGracefully(agent: Agent): Promise<void> {
  agent.child.kill('SIGTERM');
  expect(await agent.exited).toEqual({ code: 0, signal: null });
  expect(agent.output()).toMatch(/compute worker stopped/);
}

describe('the compute-worker and CLI bundles, alone in a folder', () => {
  let computes: ComputeClient;
  let close: () => Promise<void>;
  const controlPlaneQueue = uniqueId('cp-bundle');
  const scratch: string[] = [];

  beforeAll(async () => {
    const dist = mkdtempSync(path.join(os.tmpdir(), 'dc-dist-'));
    scratch.push(dist);
    await buildComputeWorker(dist);
    await buildCli(dist);
    const empty = mkdtempSync(path.join(os.tmpdir(), 'dc-agent-'));
    scratch.push(empty);
    // The WAL pusher and sync-safekeepers run as the postgres user when we are root: it must reach them.
    chmodSync(empty, 0o755);
    folder = path.join(empty, 'compute-worker');
    cpSync(path.join(dist, 'compute-worker'), folder, { recursive: true });
    cliFolder = path.join(empty, 'cli');
    cpSync(path.join(dist, 'cli'), cliFolder, { recursive: true });
    const opened = await openClient(testConfig());
    computes = new ComputeClient(opened.client, controlPlaneQueue);
    close = opened.close;
  });
  afterAll(async () => {
    await Promise.all(agents.map(async (a) => (a.child.exitCode === null && a.child.signalCode === null ? (a.child.kill('SIGKILL'), a.exited) : undefined)));
    await close?.();
    await cleanupComputes();
    for (const dir of scratch) rmSync(dir, { recursive: true, force: true });
  });

  it('holds the bundles, the native bridge and the unit file, and nothing resolvable from node_modules', () => {
    expect(readdirSync(folder).sort()).toEqual(expect.arrayContaining(['compute-worker.cjs', 'cache-runtime.cjs', 'failure-converter.cjs', 'wal-pusher-main.cjs', 'sync-safekeepers-main.cjs', 'durable-compute-compute-worker.service', 'entrypoint.sh', 'releases']));
    expect(readdirSync(cliFolder)).toEqual(expect.arrayContaining(['durable-compute.cjs', 'workflow-bundle.js', 'workflow-worker-thread.js', 'releases']));
    for (let dir = folder; ; dir = path.dirname(dir)) {
      expect(existsSync(path.join(dir, 'node_modules')), `${dir}/node_modules`).toBe(false);
      if (dir === path.dirname(dir)) break;
    }
  });

  it('with --compute-id: polls its own task queue, then drains and exits 0 on SIGTERM', async () => {
    const computeId = uniqueId('bundle');
    const agent = await startAgent(['--compute-id', computeId, '--pgdata', testPgdata(), '--http-port', '0', '--http-host', '127.0.0.1'], /compute worker ready on/);
    expect(agent.output()).toContain(`compute worker ready on compute-node-${computeId} (polling;`);
    expect(await activityPollers(`compute-node-${computeId}`)).toContain(`compute-${computeId}@${agent.child.pid}`);
    await stopGracefully(agent);
  });

  it('in pool mode: waits, is assigned over the loopback API, runs a real compute start to running, stops on SIGTERM', async () => {
    const computeId = uniqueId('pool');
    const port = await freePort();
    const agent = await startAgent(['--pool', '--internal-http-port', String(port), '--pgdata', testPgdata(), '--http-port', '0', '--http-host', '127.0.0.1'], /waiting for an assignment/);
    const api = `http://127.0.0.1:${port}`;
    const assign = (body: string) => fetch(`${api}/assign`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });

    expect(await (await fetch(`${api}/assignment`)).json()).toEqual({ state: 'waiting' });
    expect((await assign('{"compute_id": ')).status).toBe(400);
    const invalid = await assign(JSON.stringify({ compute_id: 'no spaces allowed' }));
    expect(invalid.status).toBe(400);
    expect(((await invalid.json()) as { error: string }).error).toMatch(/compute_id/);

    const assigned = await assign(JSON.stringify({ compute_id: computeId }));
    expect(assigned.status).toBe(200);
    expect(await assigned.json()).toEqual({ compute_id: computeId, task_queue: `compute-node-${computeId}`, state: 'polling' });
    // 200 means the server already sees the poll.
    expect(await activityPollers(`compute-node-${computeId}`)).toContain(`compute-${computeId}@${agent.child.pid}`);
    expect((await assign(JSON.stringify({ compute_id: computeId }))).status).toBe(200);
    const other = await assign(JSON.stringify({ compute_id: `${computeId}-other` }));
    expect(other.status).toBe(409);
    expect(await other.json()).toMatchObject({ compute_id: computeId });
    expect(await (await fetch(`${api}/assignment`)).json()).toEqual({ state: 'polling', compute_id: computeId, task_queue: `compute-node-${computeId}` });

    const controlPlane = await startBundle(path.join(cliFolder, 'durable-compute.cjs'), ['worker', 'control-plane'], /control-plane worker ready/, {
      DURABLE_COMPUTE_TASK_QUEUE: controlPlaneQueue,
      DURABLE_COMPUTE_STACK_DIR: path.join(path.dirname(cliFolder), 'no-stack'),
    });
    const timeline = await createTestTimeline();
    const { spec } = await exampleSpecFor(timeline);
    await computes.start(computeId, spec, TEST_WORKFLOW_OPTIONS);
    const status = await computes.waitForRunning(computeId);
    expect(status).toMatchObject({ compute_id: computeId, status: 'running', error: null });
    await computes.terminate(computeId, 'fast');

    await stopGracefully(agent);
    controlPlane.child.kill('SIGTERM');
    expect(await controlPlane.exited).toEqual({ code: 0, signal: null });
    // Nothing secret reached the agent's output.
    const token = (spec as { spec: { storage_auth_token?: string } }).spec.storage_auth_token;
    expect(token).toMatch(/^[0-9a-f]{64}$/);
    expect(agent.output()).not.toContain(token);
    expect(controlPlane.output()).not.toContain(token);
  });
});
