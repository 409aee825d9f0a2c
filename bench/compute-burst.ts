/**
 * A burst: N computes (default 100) started at once on the embedded stack, each a real Postgres
 * with small settings on its own branch of one timeline, against single starts measured in the
 * same run. The compute workers of the burst are a SIMULATION of N VMs: they share a few host
 * processes on this machine (bench/compute-vm-host.ts) instead of one VM each. Reports p50/p99
 * to running and the CPU the machine spent. Writes bench/results/compute-burst.md.
 *   node --import tsx bench/compute-burst.ts   (BENCH_BURST_COMPUTES=100, BENCH_BURST_HOSTS=4)
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ComputeClient } from '../client/compute-client';
import { openClient } from '../client/context';
import { exampleComputeConfig } from '../client/example-spec';
import { createTimeline } from '../client/timelines';
import { tsNodeArgs } from '../common/paths';
import { assertPortFree } from '../dev/processes';
import { stackDown } from '../dev/stack';
import { stackConfig, stackEnv, startPrivateStack } from '../dev/private-stack';
import { percentiles } from './stats';

const repoRoot = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const N = Number(process.env.BENCH_BURST_COMPUTES ?? 100);
const HOSTS = Number(process.env.BENCH_BURST_HOSTS ?? 4);
const SINGLES = 5;

/** Busy and total CPU ticks of the whole machine, from /proc/stat. */
function cpuTicks(): { busy: number; total: number } {
  const fields = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const idle = fields[3]! + fields[4]!;
  const total = fields.reduce((a, b) => a + b, 0);
  return { busy: total - idle, total };
}

/**
 * Listen ports for the computes' Postgres, below the kernel's ephemeral range (from 32768): there
 * an outgoing connection of the hundreds this run opens can take a port between this check and
 * Postgres binding it, which fails that compute's start. On their own VMs computes share no ports.
 */
async function listenPorts(count: number): Promise<number[]> {
  const ports: number[] = [];
  for (let port = 20_000; ports.length < count && port < 32_768; port++) {
    if (await assertPortFree('127.0.0.1', port, 'probe', '').then(() => true, () => false)) ports.push(port);
  }
  if (ports.length < count) throw new Error(`only ${ports.length} of ${count} free ports between 20000 and 32767`);
  return ports;
}

function startHost(env: Record<string, string>, root: string, ids: string[]): Promise<ChildProcess> {
  const child = spawn(process.execPath, [...tsNodeArgs(), path.join(repoRoot, 'bench/compute-vm-host.ts'), root, ...ids], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  return new Promise((resolve, reject) => {
    const on = (d: Buffer) => {
      out += d.toString();
      if (out.includes('vm host ready')) resolve(child);
    };
    child.stdout!.on('data', on);
    child.stderr!.on('data', on);
    child.once('exit', (code) => reject(new Error(`vm host exited (${code}):\n${out.slice(-2000)}`)));
  });
}

export async function runComputeBurstBench(): Promise<string> {
  const root = mkdtempSync(path.join(os.tmpdir(), 'dc-bench-burst-'));
  chmodSync(root, 0o755);
  const stack = await startPrivateStack(path.join(root, 'stack'));
  const config = stackConfig(stack);
  const { client, close } = await openClient(config);
  const computes = new ComputeClient(client, config.temporal.controlPlaneTaskQueue);
  const hosts: ChildProcess[] = [];
  const started: string[] = [];
  try {
    const tenantId = randomBytes(16).toString('hex');
    const parent = randomBytes(16).toString('hex');
    await createTimeline(config.storage, tenantId, { new_timeline_id: parent, pg_version: 15 });
    const total = N + SINGLES;
    const ids = Array.from({ length: total }, (_, i) => `burst-${i}`);
    const specs = new Map<string, Record<string, unknown>>();
    const ports = await listenPorts(total);
    for (const [i, id] of ids.entries()) {
      // Each compute on its own branch: the images are shared, the WAL is its own.
      const timelineId = randomBytes(16).toString('hex');
      await createTimeline(config.storage, tenantId, { new_timeline_id: timelineId, ancestor_timeline_id: parent });
      const spec = exampleComputeConfig({
        tenantId,
        timelineId,
        pageserverPg: stack.pageserver.pg,
        safekeepers: stack.safekeepers.map((s) => s.pg),
        port: ports[i]!,
        endpointId: `ep-${id}`,
        storageAuthToken: config.storage.authToken,
      }) as { spec: { cluster: { settings: { name: string; value: string }[] } } };
      // Small settings: a hundred of these share 24 GiB.
      for (const s of spec.spec.cluster.settings) {
        if (s.name === 'shared_buffers') s.value = '2048';
        if (s.name === 'max_connections') s.value = '20';
      }
      specs.set(id, spec);
    }
    const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', ...stackEnv(stack) };
    const perHost = Math.ceil(total / HOSTS);
    for (let h = 0; h < HOSTS; h++) {
      const mine = ids.slice(h * perHost, (h + 1) * perHost);
      if (mine.length) hosts.push(await startHost(env, path.join(root, 'vms'), mine));
    }

    // Single starts first, one at a time: the reference.
    const singles: number[] = [];
    for (const id of ids.slice(N)) {
      const t0 = performance.now();
      await computes.startAndAwaitRunning(id, specs.get(id));
      singles.push(performance.now() - t0);
      started.push(id);
      await computes.terminate(id, 'immediate');
    }

    // The burst.
    const cpu0 = cpuTicks();
    const t0 = performance.now();
    let retriedOnServer = 0;
    const results = await Promise.allSettled(
      ids.slice(0, N).map(async (id) => {
        started.push(id);
        let clientGaveUp = false;
        await computes.startAndAwaitRunning(id, specs.get(id)).catch(async (err: Error) => {
          // The call can give up (its deadline) while the start goes on: the server has the outcome.
          const status = await computes.waitFor(id, (s) => s.status === 'running' || s.status === 'failed', 600_000);
          if (status.status !== 'running') throw new Error(`compute ${id} is failed: ${status.error ?? err.message}`);
          clientGaveUp = true;
        });
        if (clientGaveUp) retriedOnServer++;
        return performance.now() - t0;
      }),
    );
    const wallMs = performance.now() - t0;
    const cpu1 = cpuTicks();
    const times = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
    const failures = results.flatMap((r) => (r.status === 'rejected' ? [String((r.reason as Error).message).split('\n')[0]] : []));
    const ticksPerSecond = 100;
    const cpuSeconds = (cpu1.busy - cpu0.busy) / ticksPerSecond;
    const single = percentiles(singles);
    const burst = percentiles(times);
    const lines = [
      '# Burst: computes started at once',
      '',
      `${N} computes started at the same moment on ${os.cpus().length} cores (${new Date().toISOString()}), each a real Postgres 15`,
      '(shared_buffers 16 MB, max_connections 20) on its own branch of one timeline, with the example spec (2 roles, 2 databases).',
      `SIMULATION: their compute workers share ${HOSTS} host processes on this machine instead of one VM each.`,
      '',
      '| measure | p50 | p90 | p99 | max |',
      '|---|---:|---:|---:|---:|',
      `| single start → running, ms (${singles.length}, one at a time) | ${Math.round(single.p50)} | ${Math.round(single.p90)} | ${Math.round(single.p99)} | ${Math.round(single.max)} |`,
      `| burst: start → running, ms (${times.length} of ${N}) | ${Math.round(burst.p50)} | ${Math.round(burst.p90)} | ${Math.round(burst.p99)} | ${Math.round(burst.max)} |`,
      '',
      `- Burst p99 / single p50: **${(burst.p99 / single.p50).toFixed(1)}×** (target ≤ 3×).`,
      `- The burst took ${(wallMs / 1000).toFixed(1)} s and ${cpuSeconds.toFixed(0)} CPU-seconds of the machine (${(cpuSeconds / N).toFixed(2)} per compute):`,
      `  with ${os.cpus().length} cores, no schedule can finish it sooner than ${(cpuSeconds / os.cpus().length).toFixed(1)} s.`,
      ...(retriedOnServer ? [`- ${retriedOnServer} start calls gave up before their compute ran (the client's deadline); those computes were waited for on the server, and their time is when a status poll saw them running.`] : []),
      ...(failures.length ? [`- ${failures.length} failed: ${[...new Set(failures)].slice(0, 3).join('; ')}`] : []),
    ];
    return lines.join('\n');
  } finally {
    await Promise.allSettled(started.map((id) => computes.terminate(id, 'immediate')));
    for (const h of hosts) h.kill('SIGTERM');
    await close();
    await stackDown(path.join(root, 'stack'));
    rmSync(root, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const md = await runComputeBurstBench();
  writeFileSync(path.join(repoRoot, 'bench', 'results', 'compute-burst.md'), `${md}\n`);
  console.log(md);
  process.exit(0);
}
