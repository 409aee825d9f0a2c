/**
 * The compute worker as a VM agent: how long from exec until its poll reaches the server, how much
 * memory it holds when idle, and how long a pool VM's agent takes from `POST /assign` until it
 * polls. Three ways, rounds interleaved:
 *   - bundle: dist/compute-worker copied alone into an empty directory, started with the unit
 *     file's node flags and environment (deploy/compute-worker-runtime.ts), --compute-id;
 *   - bundle, pool: the same with --pool, then assigned over the loopback API;
 *   - bundle at nice -19 (as root): as on a VM, where nothing else competes for the cores;
 *   - bundle, default node settings: without those flags and environment, to show what they buy;
 *   - tsx: `node bin/durable-compute.mjs worker compute`, the TypeScript entry used before;
 *   - floor: bench/agent-floor-worker.ts, a worker with one no-op activity and nothing of ours,
 *     bundled the same way and run with the unit file's settings: the memory of Node and the SDK
 *     alone, below which no agent written with them can go.
 * "Polling" is what the agent prints once DescribeTaskQueue lists its identity among the activity
 * pollers (workers/poller-ready.ts): the server has its poll, not merely the SDK's RUNNING state.
 * Only a Temporal dev server runs; no compute starts. Writes bench/results/compute-agent.md.
 *   node --import tsx bench/compute-agent.ts   (BENCH_AGENT_RUNS=7, BENCH_AGENT_SETTLE_MS=5000)
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { randomBytes } from 'node:crypto';
import { buildActivitiesOnlyBundle, buildComputeWorker } from '../deploy/build';
import { COMPUTE_WORKER_ENV, COMPUTE_WORKER_NODE_FLAGS } from '../deploy/compute-worker-runtime';
import { canConnect, freePort, spawnDetached, stopTracked, waitUntilReady } from '../dev/processes';
import { provisionTemporalCli } from '../dev/temporal-cli';

const repoRoot = path.dirname(path.dirname(fileURLToPath(import.meta.url)));

interface Sample {
  /** exec → the agent's "ready … (polling)" or, in pool mode, "waiting for an assignment". */
  readyMs: number;
  /** CPU time (user + system) the process had used by then: what the start costs, whatever the machine's load. */
  readyCpuMs: number;
  /** POST /assign → its 200 (pool mode only): the worker created and its poll seen by the server. */
  assignMs?: number;
  /** Resident set (smaps_rollup Rss) after settling. */
  idleRssMiB: number;
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

function median(samples: Sample[]): number {
  return percentile(samples.map((s) => s.idleRssMiB).sort((a, b) => a - b), 50);
}

function cpuMs(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
}

function rssMiB(pid: number): number {
  const kb = Number(/^Rss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'))![1]);
  return kb / 1024;
}

async function waitForLine(child: ChildProcess, output: () => string, line: RegExp, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!line.test(output())) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`the agent exited before ${line}:\n${output()}`);
    if (Date.now() > deadline) throw new Error(`no ${line} within ${timeoutMs} ms:\n${output()}`);
    await sleep(2);
  }
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  await Promise.race([exited, sleep(20_000).then(() => child.kill('SIGKILL'))]);
}

type Variant = 'bundle' | 'bundle-nice' | 'pool' | 'bundle-defaults' | 'tsx' | 'floor';

export interface AgentBenchOptions {
  runs?: number;
  settleMs?: number;
}

export async function runComputeAgentBench(opts: AgentBenchOptions = {}): Promise<string> {
  const runs = opts.runs ?? Number(process.env.BENCH_AGENT_RUNS ?? 7);
  const settleMs = opts.settleMs ?? Number(process.env.BENCH_AGENT_SETTLE_MS ?? 5000);
  const root = mkdtempSync(path.join(os.tmpdir(), 'dc-bench-agent-'));
  chmodSync(root, 0o755);
  const temporalCli = (await provisionTemporalCli({ onProgress: (l) => console.log(l) })).path;
  const port = await freePort();
  const server = spawnDetached(
    temporalCli,
    ['server', 'start-dev', '--headless', '--ip', '127.0.0.1', '--port', String(port), '--db-filename', path.join(root, 'temporal.db'), '--log-level', 'warn'],
    { log: path.join(root, 'temporal.log') },
  );
  try {
    await waitUntilReady('temporal', server, async () => {
      if (!(await canConnect('127.0.0.1', port))) throw new Error(`nothing listens on ${port} yet`);
    }, 60_000);
    const dist = path.join(root, 'dist');
    await buildComputeWorker(dist);
    // The folder alone, as on a VM: no node_modules anywhere above it.
    const vm = path.join(root, 'vm');
    mkdirSync(vm);
    cpSync(path.join(dist, 'compute-worker'), path.join(vm, 'compute-worker'), { recursive: true });
    const keyFile = path.join(root, 'payload.key');
    writeFileSync(keyFile, randomBytes(32).toString('base64'), { mode: 0o600 });
    const baseEnv = { PATH: process.env.PATH ?? '/usr/bin:/bin', TEMPORAL_ADDRESS: `127.0.0.1:${port}`, DURABLE_COMPUTE_PAYLOAD_KEY_FILE: keyFile, ...(process.env.PG_BIN_DIR ? { PG_BIN_DIR: process.env.PG_BIN_DIR } : {}) };
    const bundle = path.join(vm, 'compute-worker', 'compute-worker.cjs');
    await buildActivitiesOnlyBundle(path.join(dist, 'floor'), { entryPoints: { 'agent-floor-worker': path.join(repoRoot, 'bench/agent-floor-worker.ts') } });
    cpSync(path.join(dist, 'floor'), path.join(vm, 'floor'), { recursive: true });
    const floorBundle = path.join(vm, 'floor', 'agent-floor-worker.cjs');

    const samples: Record<Variant, Sample[]> = { bundle: [], 'bundle-nice': [], pool: [], 'bundle-defaults': [], tsx: [], floor: [] };
    // bundle-nice runs the agent at the highest priority (when we may): on its VM it has the cores
    // to itself, here it shares them with whatever else runs.
    const canRenice = process.getuid?.() === 0;
    const order: Variant[] = ['bundle', ...(canRenice ? (['bundle-nice'] as const) : []), 'pool', 'bundle-defaults', 'tsx', 'floor'];
    for (let round = 0; round < runs; round++) {
      for (const variant of order) {
        const computeId = `bench-${variant}-${round}-${randomBytes(3).toString('hex')}`;
        const pgdata = path.join(root, 'pgdata', computeId);
        const internalPort = await freePort();
        const [command, args, env, cwd] =
          variant === 'floor'
            ? ([process.execPath, [...COMPUTE_WORKER_NODE_FLAGS, floorBundle, computeId], { ...baseEnv, ...COMPUTE_WORKER_ENV }, vm] as const)
            : variant === 'tsx'
            ? ([process.execPath, [path.join(repoRoot, 'bin/durable-compute.mjs'), 'worker', 'compute', '--compute-id', computeId, '--pgdata', pgdata, '--http-port', '0', '--http-host', '127.0.0.1'], baseEnv, repoRoot] as const)
            : variant === 'bundle-defaults'
              ? ([process.execPath, [bundle, '--compute-id', computeId, '--pgdata', pgdata], baseEnv, vm] as const)
              : variant === 'bundle-nice'
                ? (['nice', ['-n', '-19', process.execPath, ...COMPUTE_WORKER_NODE_FLAGS, bundle, '--compute-id', computeId, '--pgdata', pgdata], { ...baseEnv, ...COMPUTE_WORKER_ENV }, vm] as const)
                : ([
                  process.execPath,
                  [...COMPUTE_WORKER_NODE_FLAGS, bundle, ...(variant === 'pool' ? ['--pool', '--internal-http-port', String(internalPort)] : ['--compute-id', computeId]), '--pgdata', pgdata],
                  { ...baseEnv, ...COMPUTE_WORKER_ENV },
                  vm,
                ] as const);
        const started = performance.now();
        const child = spawn(command, [...args], { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
        let out = '';
        child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
        child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
        try {
          await waitForLine(child, () => out, variant === 'pool' ? /waiting for an assignment/ : variant === 'floor' ? /floor worker running/ : /compute worker ready on .* \(polling/);
          const readyMs = performance.now() - started;
          const readyCpuMs = cpuMs(child.pid!);
          let assignMs: number | undefined;
          if (variant === 'pool') {
            const assignStarted = performance.now();
            const res = await fetch(`http://127.0.0.1:${internalPort}/assign`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ compute_id: computeId }) });
            if (res.status !== 200) throw new Error(`POST /assign answered ${res.status}: ${await res.text()}`);
            assignMs = performance.now() - assignStarted;
          }
          await sleep(settleMs);
          samples[variant].push({ readyMs, readyCpuMs, assignMs, idleRssMiB: rssMiB(child.pid!) });
        } finally {
          await stop(child);
        }
        console.log(`round ${round + 1}/${runs} ${variant}: ${JSON.stringify(samples[variant].at(-1))}`);
      }
    }

    const stats = (xs: number[]) => {
      const s = [...xs].sort((a, b) => a - b);
      return `${percentile(s, 50).toFixed(0)} | ${percentile(s, 90).toFixed(0)} | ${s[0]!.toFixed(0)}`;
    };
    const label: Record<Variant, string> = {
      bundle: 'bundle, --compute-id (unit file settings)',
      'bundle-nice': 'the same at nice -19 (the cores to itself, as on its VM)',
      pool: 'bundle, --pool (unit file settings)',
      'bundle-defaults': 'bundle, --compute-id, default node settings',
      tsx: 'tsx: bin/durable-compute.mjs worker compute',
      floor: 'floor: one no-op activity, nothing of ours (unit file settings)',
    };
    // The floor does not wait for the server to list its poller: only its memory compares.
    const rows = (metric: (s: Sample) => number | undefined, what: string, variants: Variant[] = order.filter((v) => v !== 'floor')) =>
      variants
        .filter((v) => samples[v].some((s) => metric(s) !== undefined))
        .map((v) => `| ${what} | ${label[v]} | ${stats(samples[v].map(metric).filter((x): x is number => x !== undefined))} |`);
    return [
      '# The compute worker as a VM agent (exec → polling, idle memory, assignment → polling)',
      '',
      `${runs} rounds on ${os.cpus().length} cores, load average ${os.loadavg()[0]!.toFixed(1)} at the end; each round starts every variant once against a local Temporal dev server.`,
      `Polling: the agent saw its own identity among the task queue's activity pollers (DescribeTaskQueue). Idle RSS: smaps_rollup Rss ${settleMs / 1000} s after ready (after the assignment in pool mode).`,
      `Unit file settings: node ${COMPUTE_WORKER_NODE_FLAGS.join(' ')}, ${Object.entries(COMPUTE_WORKER_ENV).map(([k, v]) => `${k}=${v}`).join(' ')}.`,
      'Wall times depend on the machine\'s load (other work shares the 2 cores); the CPU column is what a start costs on an idle core.',
      '',
      '| measure | variant | p50 | p90 | min |',
      '|---|---|---:|---:|---:|',
      ...rows((s) => s.readyMs, 'exec → polling (ms; pool: → waiting for an assignment)'),
      ...rows((s) => s.readyCpuMs, 'CPU time until then (ms)'),
      ...rows((s) => s.assignMs, 'POST /assign → 200, polling (ms)'),
      ...rows((s) => s.idleRssMiB, 'idle RSS (MiB)', order),
      '',
      `Idle RSS above the floor (bundle, --compute-id): ${(median(samples.bundle) - median(samples.floor)).toFixed(1)} MiB. The floor is Node and the Temporal SDK's worker with its native bridge, bundled and run exactly as the agent is; an agent built on them cannot hold less.`,
      '',
    ].join('\n');
  } finally {
    await stopTracked(server);
    rmSync(root, { recursive: true, force: true });
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const markdown = await runComputeAgentBench();
  const out = path.join(repoRoot, 'bench', 'results', 'compute-agent.md');
  writeFileSync(out, markdown);
  process.stdout.write(markdown);
}
