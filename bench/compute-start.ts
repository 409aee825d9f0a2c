/**
 * Cold start of a compute, against the floor. On a private embedded stack (Temporal dev server,
 * s3rver, dev pageserver, 3 dev safekeepers, control-plane worker), one timeline, N rounds; each
 * round starts the compute three ways, in rotating order, and terminates it after each start:
 *
 *   floor:          the startup's step functions (drivers/compute-startup/steps.ts) called
 *                   directly in this process, in the same order and concurrency, without Temporal;
 *   spec at start:  the compute workflow started with its spec (update-with-start, returns when
 *                   running), as `compute start --wait` does;
 *   pool:           the workflow started empty beforehand, its compute worker already polling;
 *                   the clock runs from the `configure` update to its answer (compute_ctl's
 *                   empty -> configuration_pending path).
 *
 * The workflow rounds run the real compute worker as its own process, as inside a VM. Between
 * starts the compute is terminated (fast, safekeepers synced) and the dev pageserver is left to
 * ingest the new WAL, so each start is an idle compute's activation on an existing database.
 * Each step's figure is the whole work of that step; "steps" is their critical path (the fresh
 * PGDATA and the safekeeper check run side by side), and orchestration is the total minus it.
 * Writes bench/results/compute-start.md.
 *   node --import tsx bench/compute-start.ts   (BENCH_COMPUTE_START_ROUNDS=50)
 */
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { MockActivityEnvironment } from '@temporalio/testing';
import { createStartupSteps } from '../drivers/compute-startup/steps';
import { createComputePostgres } from '../drivers/postgres';
import { computeStorageBackend } from '../drivers/storage-backend';
import { prepareSidecars } from '../drivers/storage-backend/stock/sidecars';
import { ComputeClient } from '../client/compute-client';
import { openClient } from '../client/context';
import { exampleComputeConfig } from '../client/example-spec';
import { createTimeline } from '../client/timelines';
import { findPostgres } from '../common/pg-binaries';
import { parseComputeSpec, type ComputeSpec } from '../model/compute-spec';
import { freePort } from '../dev/processes';
import { stackDown, type StackEndpoints } from '../dev/stack';
import { stackConfig, stackEnv, startPrivateStack } from '../dev/private-stack';
import { randomBytes } from 'node:crypto';
import { spawn, type ChildProcess } from 'node:child_process';
import { percentiles, type Percentiles } from './stats';

const repoRoot = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const ROUNDS = Number(process.env.BENCH_COMPUTE_START_ROUNDS ?? 50);

type Method = 'floor' | 'spec at start' | 'pool';
const METHODS: Method[] = ['floor', 'spec at start', 'pool'];
const PHASES = ['prepare_pgdata', 'sync_sk_check', 'sync_safekeepers', 'basebackup', 'start_postgres', 'config'] as const;
type Phase = (typeof PHASES)[number];

interface Sample {
  method: Method;
  totalMs: number;
  /** CPU time (user + system) of the process running the steps: the bench itself (floor) or the compute worker. */
  cpuMs: number;
  /** Floor only: CPU time of this process in each step (the workflow's steps run in the worker). */
  phaseCpu?: Partial<Record<Phase, number>>;
  phases: Record<Phase, number>;
  /** Critical path of the steps: max(prepare, check) + the rest. */
  stepsMs: number;
}

function criticalPath(p: Record<Phase, number>): number {
  return Math.max(p.prepare_pgdata, p.sync_sk_check) + p.sync_safekeepers + p.basebackup + p.start_postgres + p.config;
}

/** A compute worker process, as inside the compute's VM; resolves once it polls. */
async function startComputeWorker(stack: StackEndpoints, computeId: string, pgdata: string, logFile: string): Promise<ChildProcess> {
  const child = spawn(process.execPath, [path.join(repoRoot, 'bin/durable-compute.mjs'), 'worker', 'compute', '--compute-id', computeId, '--pgdata', pgdata, '--http-port', '0', '--http-host', '127.0.0.1'], {
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...stackEnv(stack) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  await new Promise<void>((resolve, reject) => {
    const onData = (d: Buffer) => {
      output += d.toString();
      if (/compute worker ready/.test(output)) resolve();
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.once('exit', (code) => reject(new Error(`compute worker exited (${code}):\n${output}`)));
  });
  child.stdout!.on('data', (d: Buffer) => writeFileSync(logFile, d, { flag: 'a' }));
  return child;
}

/** CPU time (user + system, ms) a process has used so far, from /proc (10 ms resolution). */
function processCpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // utime and stime are fields 14 and 15 of the whole line, in clock ticks (100 per second on Linux).
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

function ownCpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

/** Until the pageserver holds an image at the timeline's last record LSN (the ingest after a stop). */
async function waitForIngest(pageserverHttp: string, token: string, tenantId: string, timelineId: string): Promise<void> {
  const deadline = Date.now() + 120_000;
  for (;;) {
    const res = await fetch(`${pageserverHttp}/v1/tenant/${tenantId}/timeline/${timelineId}`, { headers: { authorization: `Bearer ${token}` } });
    const info = (await res.json()) as { last_record_lsn: string; image_lsns: string[] };
    if (info.image_lsns.includes(info.last_record_lsn)) return;
    if (Date.now() > deadline) throw new Error(`the pageserver did not ingest ${timelineId} up to ${info.last_record_lsn}`);
    await sleep(100);
  }
}

function table(rows: string[][]): string {
  const [head, ...body] = rows;
  return [`| ${head!.join(' | ')} |`, `|${head!.map((_, i) => (i === 0 ? '---' : '---:')).join('|')}|`, ...body.map((r) => `| ${r.join(' | ')} |`)].join('\n');
}

function fmt(p: Percentiles): string[] {
  return [p.p50, p.p90, p.p99].map((v) => String(Math.round(v)));
}

export async function runComputeStartBench(rounds = ROUNDS): Promise<string> {
  const root = mkdtempSync(path.join(os.tmpdir(), 'dc-bench-start-'));
  chmodSync(root, 0o755);
  const stack = await startPrivateStack(path.join(root, 'stack'));
  const config = stackConfig(stack);
  const { client, close } = await openClient(config);
  const computes = new ComputeClient(client, config.temporal.controlPlaneTaskQueue);
  const workers: ChildProcess[] = [];
  let failed = true;
  try {
    const tenantId = randomBytes(16).toString('hex');
    const timelineId = randomBytes(16).toString('hex');
    await createTimeline(config.storage, tenantId, { new_timeline_id: timelineId, pg_version: 15 });
    const token = config.storage.authToken!;
    const port = await freePort();
    const rawConfig = exampleComputeConfig({
      tenantId,
      timelineId,
      pageserverPg: stack.pageserver.pg,
      safekeepers: stack.safekeepers.map((s) => s.pg),
      port,
      endpointId: 'bench-ep',
      storageAuthToken: token,
    });
    const parsed = parseComputeSpec((rawConfig as { spec: unknown }).spec);
    if (!parsed.ok) throw new Error(parsed.errors.join('; '));
    const spec: ComputeSpec = parsed.spec;

    // The floor: the same steps, in this process.
    const floorPgdata = path.join(root, 'floor', 'pgdata');
    const pg = findPostgres({ pgBinDir: config.pgBinDir });
    const floorPostgres = createComputePostgres({ pgBinDir: pg.binDir, pgdata: floorPgdata, admin: { user: 'cloud_admin' } });
    const steps = createStartupSteps({
      pgBinDir: pg.binDir,
      pgdata: floorPgdata,
      backend: computeStorageBackend('stock'),
      cacheBackend: 'stock',
      postgres: floorPostgres,
    });
    await prepareSidecars();
    const activityEnv = new MockActivityEnvironment();

    const floorStart = async (): Promise<Sample> => {
      const incarnation = randomBytes(8).toString('hex');
      const phases = Object.fromEntries(PHASES.map((p) => [p, 0])) as Record<Phase, number>;
      const phaseCpu: Partial<Record<Phase, number>> = {};
      const cpu0 = ownCpuMs();
      const t0 = performance.now();
      await activityEnv.run(async () => {
        const timed = async <T>(phase: Phase, fn: () => Promise<T>): Promise<T> => {
          const s = performance.now();
          const c = ownCpuMs();
          const v = await fn();
          phases[phase] += performance.now() - s;
          // The first two steps overlap: their CPU is counted once, under prepare_pgdata.
          if (phase !== 'sync_sk_check') phaseCpu[phase] = (phaseCpu[phase] ?? 0) + ownCpuMs() - c;
          return v;
        };
        const [, check] = await Promise.all([
          timed('prepare_pgdata', async () => {
            await steps.preparePgdata({ incarnation });
            await steps.writePostgresConfig({ incarnation, spec });
          }),
          timed('sync_sk_check', () => steps.checkSafekeepersSynced(spec)),
        ]);
        if (!check.synced) console.log(`floor: safekeepers not in agreement (${check.reason})`);
        const lsn = check.lsn ?? (await timed('sync_safekeepers', () => steps.syncSafekeepers({ incarnation, storageAuthToken: token }))).lsn;
        await timed('basebackup', () => steps.fetchBasebackup({ incarnation, spec, lsn }, () => undefined));
        await timed('start_postgres', async () => {
          await steps.prepareStartupFiles({ incarnation, spec });
          await steps.startPostgres({ incarnation, spec });
        });
        await timed('config', () => steps.applySpec({ spec }));
      });
      const totalMs = performance.now() - t0;
      return { method: 'floor', totalMs, cpuMs: ownCpuMs() - cpu0, phaseCpu, phases, stepsMs: criticalPath(phases) };
    };
    const floorStop = async () => {
      await activityEnv.run(async () => {
        await floorPostgres.stopPostgres({ mode: 'fast' });
        await steps.syncSafekeepers({ incarnation: (await readIncarnation(floorPgdata))!, storageAuthToken: token });
      });
    };

    // The workflow: one compute worker process per compute ID, polling all along.
    const specWorkerId = 'bench-spec';
    const poolWorkerId = 'bench-pool';
    for (const id of [specWorkerId, poolWorkerId]) {
      workers.push(await startComputeWorker(stack, id, path.join(root, id, 'pgdata'), path.join(root, `${id}.log`)));
    }
    let run = 0;
    const fromStatus = (method: Method, totalMs: number, cpuMs: number, m: Record<string, number>): Sample => {
      const phases = {
        prepare_pgdata: m.prepare_pgdata_ms ?? 0,
        sync_sk_check: m.sync_sk_check_ms ?? 0,
        sync_safekeepers: m.sync_safekeepers_ms ?? 0,
        basebackup: m.basebackup_ms ?? 0,
        start_postgres: m.start_postgres_ms ?? 0,
        config: m.config_ms ?? 0,
      };
      return { method, totalMs, cpuMs, phases, stepsMs: criticalPath(phases) };
    };
    const workerPid = (i: number) => workers[i]!.pid!;
    const specStart = async (): Promise<{ sample: Sample; computeId: string }> => {
      const computeId = `${specWorkerId}`;
      const cpu0 = processCpuMs(workerPid(0));
      const t0 = performance.now();
      const status = await computes.startAndAwaitRunning(computeId, rawConfig);
      const totalMs = performance.now() - t0;
      const cpuMs = processCpuMs(workerPid(0)) - cpu0;
      return { sample: fromStatus('spec at start', totalMs, cpuMs, status.metrics as unknown as Record<string, number>), computeId };
    };
    const poolStart = async (): Promise<{ sample: Sample; computeId: string }> => {
      const computeId = poolWorkerId;
      await computes.start(computeId, undefined);
      await sleep(200); // the empty workflow has settled in `empty`, as a pool's would have long ago
      const cpu0 = processCpuMs(workerPid(1));
      const t0 = performance.now();
      const status = await computes.configure(computeId, rawConfig);
      const totalMs = performance.now() - t0;
      const cpuMs = processCpuMs(workerPid(1)) - cpu0;
      if (status.status !== 'running') throw new Error(`pool compute is ${status.status}: ${status.error}`);
      const m = status.metrics as unknown as Record<string, number>;
      return { sample: fromStatus('pool', totalMs, cpuMs, { ...m, wait_for_spec_ms: 0 }), computeId };
    };

    const samples: Sample[] = [];
    for (let round = 0; round < rounds; round++) {
      const order = METHODS.map((_, i) => METHODS[(i + round) % METHODS.length]!);
      for (const method of order) {
        run++;
        if (method === 'floor') {
          samples.push(await floorStart());
          await floorStop();
        } else {
          const { sample, computeId } = method === 'pool' ? await poolStart() : await specStart();
          samples.push(sample);
          await computes.terminate(computeId, 'fast');
          await computes.waitFor(computeId, (s) => s.status === 'terminated', 60_000);
        }
        await waitForIngest(stack.pageserver.http, token, tenantId, timelineId);
        const last = samples[samples.length - 1]!;
        console.log(`round ${round + 1}/${rounds} ${method}: ${Math.round(last.totalMs)} ms (steps ${Math.round(last.stepsMs)} ms)`);
      }
    }
    void run;
    failed = false;
    return report(samples, rounds);
  } finally {
    for (const w of workers) w.kill('SIGTERM');
    await close();
    await stackDown(path.join(root, 'stack'));
    // A failed run keeps its logs (stack, workers) for a look.
    if (failed || process.env.BENCH_KEEP_LOGS === "1") console.error(`logs kept in ${root}`);
    else rmSync(root, { recursive: true, force: true });
  }
}

async function readIncarnation(pgdata: string): Promise<string | undefined> {
  const { readFile } = await import('node:fs/promises');
  return (await readFile(path.join(pgdata, '.durable-compute-incarnation'), 'utf8').catch(() => undefined))?.trim();
}

const loadAtStart = os.loadavg()[0]!;

function report(samples: Sample[], rounds: number): string {
  const by = (m: Method) => samples.filter((s) => s.method === m);
  const floorP50 = percentiles(by('floor').map((s) => s.totalMs)).p50;
  const rows: string[][] = [['measure (ms)', ...METHODS.flatMap((m) => [`${m} p50`, 'p90', 'p99'])]];
  const line = (label: string, pick: (s: Sample) => number) => [label, ...METHODS.flatMap((m) => fmt(percentiles(by(m).map(pick))))];
  rows.push(line('**start → running (total)**', (s) => s.totalMs));
  for (const phase of PHASES) rows.push(line(phase, (s) => s.phases[phase]));
  rows.push(line('steps (critical path)', (s) => s.stepsMs));
  rows.push(line('**orchestration** (total − steps)', (s) => s.totalMs - s.stepsMs));
  rows.push(line('CPU time of the steps\' process (floor: this one; else the compute worker)', (s) => s.cpuMs));
  const cpuRows: string[][] = [['floor, CPU time of the steps\' process (ms)', 'p50', 'p90', 'p99']];
  for (const phase of PHASES.filter((p) => p !== 'sync_sk_check')) {
    cpuRows.push([phase === 'prepare_pgdata' ? 'prepare_pgdata (+ sync_sk_check beside it)' : phase, ...fmt(percentiles(by('floor').map((s) => s.phaseCpu?.[phase] ?? 0)))]);
  }
  cpuRows.push(['whole start', ...fmt(percentiles(by('floor').map((s) => s.cpuMs)))]);
  const ratio = (m: Method) => (percentiles(by(m).map((s) => s.totalMs)).p50 / floorP50).toFixed(2);
  const lines = [
    '# Compute cold start: workflow against the floor',
    '',
    `${rounds} rounds on ${os.cpus().length} cores (load average ${loadAtStart.toFixed(1)} at the start, ${os.loadavg()[0]!.toFixed(1)} at the end; the machine is shared), ${new Date().toISOString()}.`,
    'Each round starts the same compute (one timeline, the example spec: 2 roles, 2 databases) three ways in rotating order,',
    'terminating it (fast, safekeepers synced) after each start and letting the dev pageserver ingest the new WAL: every start',
    "is an idle compute's activation on an existing database. Floor: the startup's step functions called directly in one",
    'process without Temporal. Spec at start: update-with-start of the compute workflow, returning once running. Pool: the',
    'workflow started empty earlier, its compute worker polling; timed from `configure` to its answer. Each step figure is',
    "the step's whole work; steps = their critical path (fresh PGDATA and the safekeeper check run side by side).",
    '',
    table(rows),
    '',
    `Workflow p50 / floor p50: spec at start **${ratio('spec at start')}×**, pool **${ratio('pool')}×**.`,
    '',
    'CPU time does not wait for a busy machine: it is what each step costs the process that runs it (Postgres, the WAL',
    "pusher and the dev storage servers are other processes and not counted). The floor's steps, one by one:",
    '',
    table(cpuRows),
  ];
  return lines.join('\n');
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const md = await runComputeStartBench();
  writeFileSync(path.join(repoRoot, 'bench', 'results', 'compute-start.md'), `${md}\n`);
  console.log(md);
  process.exit(0);
}
