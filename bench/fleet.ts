/**
 * Fleet benchmark: thousands of compute workflows held by ONE control-plane worker process.
 *
 * Setup, all on loopback and all private to this run (removed at the end):
 * - a Temporal server (bench/fleet-server.ts: the CLI dev server, or with `--server sql` the
 *   production-style server on PostgreSQL) whose Prometheus counter `action` counts billable
 *   actions the way Temporal Cloud bills them;
 * - the product's control-plane worker, `durable-compute worker control-plane`, unchanged: the
 *   process whose RSS and CPU are measured;
 * - a SIMULATOR process (bench/fleet-simulator.ts) standing in for the computes' VMs: it answers the
 *   compute-node activities with the real watch's heartbeat timing but without Postgres, on a few
 *   shared task queues (the bench-only workflow option `simulatedNodeTaskQueue`);
 * - this process: starts the computes (the product's ComputeClient), waits until all are running,
 *   measures an idle window, then plays the VM platform (kills simulated VMs and sends `vmLost`).
 *
 * Flags (each also as an environment variable FLEET_<NAME>, for `npm run bench`):
 *   --computes N             computes to hold (10000)
 *   --window S               idle measurement window in seconds (600)
 *   --report-seconds S       watch round; default: the product default (1800)
 *   --heartbeat-timeout S    watch heartbeat timeout; default: the product default (600)
 *   --max-rounds N           watch rounds per run before continue-as-new; default: the product's (48)
 *   --kills N                simulated VMs killed and reported with vmLost after the window (20)
 *   --silent-kills N         simulated VMs killed with no report: the heartbeat-timeout backstop (0)
 *   --sim-queues N           shared simulator task queues (4)
 *   --sample N               histories read for event counts and task latency (200)
 *   --probe N                held computes sent a status query and a configure after the window, for
 *                            the workflow-task latency under load (100)
 *   --probe-seconds S        the period those are spread over (60)
 *   --start-seconds S        stop starting computes after S seconds and measure the fleet reached
 *                            (default: start them all)
 *   --out FILE               results file (bench/results/fleet.md)
 *   --server KIND            `dev` (default): a Temporal CLI dev server; `sql`: the production-style server,
 *                            go.temporal.io/server on PostgreSQL (dev/temporal-server)
 *   --control-plane FORM     `bundle` (default): the production form, `node dist/cli/durable-compute.cjs
 *                            worker control-plane` built for this run by deploy/build.ts; `sources`:
 *                            bin/durable-compute.mjs through tsx
 * Quick, time-compressed run:
 *   npm run bench:fleet -- --computes 500 --window 120 --report-seconds 20 --heartbeat-timeout 10 --max-rounds 4 --silent-kills 3 --out /tmp/fleet.md
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import { Client, Connection } from '@temporalio/client';
import { ComputeClient } from '../client/compute-client';
import { encryptedDataConverter } from '../common/codec/data-converter';
import { loadConfig } from '../common/config';
import { projectRoot, tsNodeArgs } from '../common/paths';
import { probeLatency, simulatedComputeConfig } from './fleet-probe';
import { serverProcessesUsage, startFleetServer, type FleetServerKind } from './fleet-server';
import { computeWorkflowId } from '../model/compute-status';
import { CONTROL_PLANE_MAX_CACHED_WORKFLOWS } from '../workers/control-plane';
import { buildCli } from '../deploy/build';
import { fmt, pct, sampleHistories, serverActions, signalToFailedMs, steadyStateModel } from './fleet-history';
import { interrupted, log, pause, processUsage, startChild, stopChildren, stopOnInterrupt, waitForLine } from './fleet-processes';

const here = path.dirname(fileURLToPath(import.meta.url));

const FLAG_NAMES = ['computes', 'window', 'report-seconds', 'heartbeat-timeout', 'max-rounds', 'kills', 'silent-kills', 'sim-queues', 'sample', 'out', 'control-plane', 'server', 'probe', 'probe-seconds', 'start-seconds'] as const;
const cli = new Command('fleet').description('SIMULATION: thousands of compute workflows on one control-plane worker (each flag also FLEET_<NAME>)');
for (const name of FLAG_NAMES) cli.option(`--${name} <value>`);
const parsed = cli.parse().opts<Record<string, string | undefined>>();
/** The flags under their command-line names (commander keeps them camelCased). */
const flags = Object.fromEntries(FLAG_NAMES.map((name) => [name, parsed[name.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase())]])) as Record<
  (typeof FLAG_NAMES)[number],
  string | undefined
>;

function setting(name: keyof typeof flags, fallback?: number): number | undefined {
  const raw = flags[name] ?? process.env[`FLEET_${name.toUpperCase().replace(/-/g, '_')}`];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < 0) throw new Error(`--${name} must be a non-negative number, got ${JSON.stringify(raw)}`);
  return n;
}

const REQUESTED = setting('computes', 10_000)!;
const START_SECONDS = setting('start-seconds');
const WINDOW_S = setting('window', 600)!;
const REPORT_S = setting('report-seconds');
const HEARTBEAT_S = setting('heartbeat-timeout');
const MAX_ROUNDS = setting('max-rounds');
const KILLS = Math.min(setting('kills', 20)!, REQUESTED);
const SILENT_KILLS = Math.min(setting('silent-kills', 0)!, REQUESTED - KILLS);
const SIM_QUEUES = Math.max(1, setting('sim-queues', 4)!);
const SAMPLE = Math.min(setting('sample', 200)!, REQUESTED);
const PROBE = Math.min(setting('probe', 100)!, REQUESTED - KILLS - SILENT_KILLS);
const PROBE_SECONDS = setting('probe-seconds', 60)!;
const START_LANES = 32;
const OUT = flags.out ?? process.env.FLEET_OUT ?? path.join(here, 'results', 'fleet.md');
const CONTROL_PLANE_FORM = flags['control-plane'] ?? process.env.FLEET_CONTROL_PLANE ?? 'bundle';
const SERVER = (flags.server ?? process.env.FLEET_SERVER ?? 'dev') as FleetServerKind;
if (SERVER !== 'dev' && SERVER !== 'sql') throw new Error(`--server must be dev or sql, got ${JSON.stringify(SERVER)}`);
if (CONTROL_PLANE_FORM !== 'bundle' && CONTROL_PLANE_FORM !== 'sources') throw new Error(`--control-plane must be bundle or sources, got ${JSON.stringify(CONTROL_PLANE_FORM)}`);
// The product defaults, for the arithmetic; the workflow applies them itself when a flag is absent.
const EFFECTIVE = { report: REPORT_S ?? 1800, heartbeat: HEARTBEAT_S ?? 600, maxRounds: MAX_ROUNDS ?? 48 };
const compressed = REPORT_S !== undefined || HEARTBEAT_S !== undefined || MAX_ROUNDS !== undefined;

let runDir: string | undefined;
let shmRunDir: string | undefined;

async function main(): Promise<void> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'dc-fleet-'));
  runDir = dir;
  const shmDir = mkdtempSync(path.join(existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir(), 'dc-fleet-db-'));
  shmRunDir = shmDir;
  const namespace = 'default';
  let stopServer: (() => Promise<void>) | undefined;
  log(
    `SIMULATED fleet: ${REQUESTED} computes on one control-plane worker; window ${WINDOW_S} s; watch round ${EFFECTIVE.report} s, heartbeat timeout ${EFFECTIVE.heartbeat} s, ${EFFECTIVE.maxRounds} rounds per run${compressed ? ' (time-compressed)' : ' (product defaults)'}`,
  );
  let connection: Connection | undefined;
  const startedAll = Date.now();
  try {
    // 1. A private Temporal server with its metrics endpoint.
    const server = await startFleetServer(SERVER, dir, shmDir);
    stopServer = server.stop;
    const { address, metricsUrl } = server;
    connection = await Connection.connect({ address, connectTimeout: '2s' });
    log(`Temporal server (${SERVER}) on ${address}, metrics on ${metricsUrl}`);

    const keyFile = path.join(dir, 'payload.key');
    writeFileSync(keyFile, randomBytes(32).toString('base64'), { mode: 0o600 });
    const taskQueue = 'fleet-control-plane';
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      TEMPORAL_ADDRESS: address,
      TEMPORAL_NAMESPACE: namespace,
      DURABLE_COMPUTE_PAYLOAD_KEY_FILE: keyFile,
      DURABLE_COMPUTE_TASK_QUEUE: taskQueue,
      // Nothing falls back to a dev stack the user may have running.
      DURABLE_COMPUTE_STACK_DIR: dir,
    };

    // 2. The simulated VMs, then the product's control-plane worker.
    const simQueues = Array.from({ length: SIM_QUEUES }, (_, i) => `fleet-simulated-nodes-${i}`);
    const cacheSize = process.env.DURABLE_COMPUTE_MAX_CACHED_WORKFLOWS ?? `the product's ${CONTROL_PLANE_MAX_CACHED_WORKFLOWS}`;
    const simulator = startChild(
      process.execPath,
      [...tsNodeArgs(), path.join(here, 'fleet-simulator.ts')],
      { ...env, FLEET_SIM_QUEUES: simQueues.join(','), FLEET_SIM_SLOTS_PER_QUEUE: String(Math.ceil(REQUESTED / SIM_QUEUES) + 200) },
      path.join(dir, 'simulator.log'),
      true,
    );
    await waitForLine(simulator, /fleet simulator ready/, 'fleet simulator');
    // The production form: the CLI bundle with its prebuilt workflow bundle, built from these sources for this run.
    const cliEntry = CONTROL_PLANE_FORM === 'bundle' ? path.join(await buildCli(path.join(dir, 'dist')), 'durable-compute.cjs') : path.join(projectRoot, 'bin', 'durable-compute.mjs');
    const cpNodeOptions = process.env.FLEET_CONTROL_PLANE_NODE_OPTIONS;
    const controlPlane = startChild(process.execPath, [cliEntry, 'worker', 'control-plane'], { ...env, ...(cpNodeOptions && { NODE_OPTIONS: cpNodeOptions }) }, path.join(dir, 'control-plane.log'));
    await waitForLine(controlPlane, /control-plane worker ready/, 'control-plane worker');
    const cpPid = controlPlane.pid!;
    log(`control-plane worker pid ${cpPid} ready; simulator on ${SIM_QUEUES} queues`);

    const simRequest = <T>(msg: object, key: string): Promise<T> =>
      new Promise((resolve) => {
        const onMessage = (reply: Record<string, unknown>) => {
          if (key in reply) {
            simulator.off('message', onMessage);
            resolve(reply[key] as T);
          }
        };
        simulator.on('message', onMessage);
        simulator.send(msg);
      });

    const config = loadConfig(env);
    const client = new Client({ connection, namespace, dataConverter: encryptedDataConverter(config.payloadKeys) });
    const computes = new ComputeClient(client, taskQueue);

    // 3. Start the fleet.
    const ids = Array.from({ length: REQUESTED }, (_, i) => `fleet-${String(i).padStart(5, '0')}`);
    const options = {
      simulatedNodeTaskQueue: '',
      ...(REPORT_S !== undefined && { watchReportSeconds: REPORT_S }),
      ...(HEARTBEAT_S !== undefined && { watchHeartbeatTimeoutSeconds: HEARTBEAT_S }),
      ...(MAX_ROUNDS !== undefined && { maxWatchRoundsPerRun: MAX_ROUNDS }),
    };
    const specs = new Map<string, unknown>();
    const startFailures: { id: string; error: string }[] = [];
    const startRetries: string[] = [];
    // What the server records (the search attribute the workflow upserts), not a query the loaded worker must answer.
    const runningPerServer = async (id: string): Promise<void> => {
      for (const until = Date.now() + 1_800_000; Date.now() < until; await pause(5000)) {
        const d = await client.workflow.getHandle(computeWorkflowId(id)).describe();
        const status = d.searchAttributes.ComputeStatus?.[0];
        if (status === 'running') return;
        if (d.status.name !== 'RUNNING' || status === 'failed') throw new Error(`compute ${id} is ${String(status)} (workflow ${d.status.name})`);
      }
      throw new Error(`compute ${id} not running after 30 minutes`);
    };
    const startBegan = Date.now();
    let next = 0;
    const peak = { rssMiB: 0 };
    const sampleRss = () => {
      const u = processUsage(cpPid);
      peak.rssMiB = Math.max(peak.rssMiB, u.rssMiB);
      return u;
    };
    const rssTimer = setInterval(() => {
      if (controlPlane.exitCode === null && controlPlane.signalCode === null) sampleRss();
    }, 2000);
    const cpuAtStart = processUsage(cpPid).cpuSeconds;
    // 32 computes starting at a time, as a control plane with 32 start requests in flight: each
    // lane starts a compute and waits (update-with-start) until it is running before the next.
    await Promise.all(
      Array.from({ length: START_LANES }, async () => {
        while (next < ids.length && !interrupted() && (START_SECONDS === undefined || Date.now() - startBegan < START_SECONDS * 1000)) {
          const i = next++;
          const id = ids[i]!;
          specs.set(id, simulatedComputeConfig(i));
          // The call can fail while the start went through (its update timed out on a loaded
          // machine): such a compute is held, so it is waited for; only one not running then is not.
          await computes
            .startAndAwaitRunning(id, specs.get(id), { ...options, simulatedNodeTaskQueue: simQueues[i % SIM_QUEUES]! })
            .catch((err: Error) => {
              startRetries.push(`${id}: ${err.message}`);
              return runningPerServer(id);
            })
            .catch((err: Error) => startFailures.push({ id, error: err.message }));
          if (i % 500 === 499) log(`${i + 1} computes started (${startRetries.length} waited for again after an error, the last: ${startRetries.at(-1) ?? 'none'}), ${startFailures.length} failed; control-plane RSS ${fmt(sampleRss().rssMiB, 0)} MiB (peak ${fmt(peak.rssMiB, 0)})`);
        }
      }),
    );
    // The fleet held is what was started and runs: all of it, unless the start budget ran out first.
    const failedIds = new Set(startFailures.map((f) => f.id));
    ids.splice(next);
    const heldIds = ids.filter((id) => !failedIds.has(id));
    ids.splice(0, ids.length, ...heldIds);
    const COMPUTES = ids.length;
    if (startFailures.length) log(`${startFailures.length} computes failed to start (not held); the first: ${startFailures[0]!.id}: ${startFailures[0]!.error}`);
    if (COMPUTES < REQUESTED) log(`start budget of ${START_SECONDS} s spent: holding ${COMPUTES} of the ${REQUESTED} computes asked for`);
    const countRunning = async () => Number((await client.workflow.count(`WorkflowType = 'computeWorkflow' AND ComputeStatus = 'running' AND ExecutionStatus = 'Running'`)).count);
    for (;;) {
      const running = await countRunning();
      if (running >= COMPUTES) break;
      log(`${running} of ${COMPUTES} running; control-plane RSS ${fmt(sampleRss().rssMiB, 0)} MiB (peak ${fmt(peak.rssMiB, 0)})`);
      if (Date.now() - startBegan > 3600_000) throw new Error(`only ${running} of ${COMPUTES} computes running after an hour`);
      await pause(5000);
    }
    const startupSeconds = (Date.now() - startBegan) / 1000;
    const startupCpu = processUsage(cpPid).cpuSeconds - cpuAtStart;
    log(`all ${COMPUTES} running after ${fmt(startupSeconds)} s (control-plane CPU ${fmt(startupCpu)} s)`);

    // 4. The idle window. A short settle first, so the window holds no startup tail.
    await pause(Math.min(30, WINDOW_S / 4) * 1000);
    const simBefore = await simRequest<Record<string, number>>({ stats: true }, 'stats');
    const actionsBefore = await serverActions(metricsUrl, namespace);
    const usageBefore = sampleRss();
    const peakBeforeWindow = peak.rssMiB;
    const serverBefore = serverProcessesUsage(server);
    const windowStart = Date.now();
    const rssDuring: number[] = [];
    while (Date.now() - windowStart < WINDOW_S * 1000) {
      await pause(Math.min(10_000, WINDOW_S * 1000 - (Date.now() - windowStart)));
      rssDuring.push(sampleRss().rssMiB);
      if (rssDuring.length % 6 === 0) log(`window: ${Math.round((Date.now() - windowStart) / 1000)} s of ${WINDOW_S} s, control-plane RSS ${fmt(rssDuring.at(-1)!)} MiB`);
    }
    const windowEnd = Date.now();
    const windowSeconds = (windowEnd - windowStart) / 1000;
    const usageAfter = sampleRss();
    const serverAfter = serverProcessesUsage(server);
    const actionsAfter = await serverActions(metricsUrl, namespace);
    const simAfter = await simRequest<Record<string, number>>({ stats: true }, 'stats');
    const windowActions = actionsAfter.total - actionsBefore.total;
    const windowHeartbeats = simAfter.watchHeartbeats! - simBefore.watchHeartbeats!;
    const windowRounds = simAfter.watchRounds! - simBefore.watchRounds!;
    const computeHours = (COMPUTES * windowSeconds) / 3600;
    const cpuSeconds = usageAfter.cpuSeconds - usageBefore.cpuSeconds;
    const byLabelsDelta = Object.fromEntries(
      Object.entries(actionsAfter.byLabels)
        .map(([k, v]) => [k, v - (actionsBefore.byLabels[k] ?? 0)] as const)
        .filter(([, v]) => v > 0),
    );
    log(`window done: ${windowActions} actions, ${windowHeartbeats} heartbeats, ${windowRounds} rounds; control-plane CPU ${fmt(cpuSeconds)} s, RSS ${fmt(usageAfter.rssMiB)} MiB`);

    // 5. History: a sample of computes, their runs back to before the window.
    const raw = new Client({ connection, namespace });
    const sampleIds = ids.slice(KILLS + SILENT_KILLS).filter((_, i, all) => i % Math.max(1, Math.floor(all.length / SAMPLE)) === 0).slice(0, SAMPLE);
    const { sampleBillable, wftScheduleToStart, wftScheduleToComplete, eventsPerRound, eventsPerRun, runsSeen, continuedAsNew } = await sampleHistories(raw, sampleIds, windowStart, windowEnd);
    const sampleScale = COMPUTES / sampleIds.length;
    const historyActionsEstimate = sampleBillable * sampleScale + windowHeartbeats;

    // 6. Workflow-task latency under the fleet's load, after the window so its count stays idle.
    log(`probe: ${PROBE} computes get a status query and a configure over ${PROBE_SECONDS} s`);
    const probe = await probeLatency(
      computes,
      raw,
      ids.slice(-PROBE).map((id) => ({ id, config: specs.get(id) })),
      PROBE_SECONDS,
    );
    if (probe.failures.length) log(`probe failures: ${probe.failures.slice(0, 5).join('; ')}`);

    // 7. Dead VMs: the simulator kills some; the bench, as the VM platform, reports them with vmLost.
    const lostIds = ids.slice(0, KILLS);
    const silentIds = ids.slice(KILLS, KILLS + SILENT_KILLS);
    await simRequest({ kill: [...lostIds, ...silentIds].map(computeWorkflowId) }, 'killed');
    const detect = async (id: string, report: boolean): Promise<{ ms: number; error: string | null }> => {
      const reportedAt = Date.now();
      if (report) {
        // A compute that already failed (say, its watch timed out on an overloaded machine) is not running to be told.
        const refused = await computes.vmLost(id, 'simulated VM killed by the fleet bench').then(() => undefined, (err: Error) => err.message);
        if (refused) return { ms: NaN, error: `vmLost refused: ${refused}` };
      }
      const limitMs = report ? 120_000 : (EFFECTIVE.heartbeat * 2 + 120) * 1000;
      for (;;) {
        const s = await computes.status(id);
        if (s.status === 'failed') return { ms: Date.now() - reportedAt, error: s.error };
        if (Date.now() - reportedAt > limitMs) return { ms: NaN, error: `still ${s.status}` };
        await pause(report ? 100 : 1000);
      }
    };
    const reported = await Promise.all(lostIds.map((id) => detect(id, true)));
    // From history too: the signal's event to the workflow's failure.
    const signalToFailed = await signalToFailedMs(raw, lostIds);
    let silent: { ms: number; error: string | null }[] = [];
    if (silentIds.length) {
      log(`waiting for ${silentIds.length} silently killed VMs to be declared lost by the heartbeat timeout (up to ${EFFECTIVE.heartbeat * 2} s)`);
      silent = await Promise.all(silentIds.map((id) => detect(id, false)));
    }
    const reportedMs = reported.map((r) => r.ms).filter(Number.isFinite);
    log(`vmLost → failed: p50 ${fmt(pct(reportedMs, 50), 0)} ms, max ${fmt(Math.max(...reportedMs), 0)} ms`);

    clearInterval(rssTimer);
    const finalUsage = processUsage(cpPid);
    const totalWallHours = (Date.now() - startedAll) / 3_600_000;

    // 8. Results.
    const perComputeHour = windowActions / computeHours;
    const heartbeatsPerHour = windowHeartbeats / computeHours;
    const { beatsPerRound, modelPerHour } = steadyStateModel(EFFECTIVE);
    const roundsPerDay = 86400 / EFFECTIVE.report;
    const medianRound = pct(eventsPerRound, 50);
    const medianRun = pct(eventsPerRun, 50);
    const perDay = Number.isFinite(medianRound) ? medianRound * roundsPerDay + (Number.isFinite(medianRun) ? (medianRun - medianRound * EFFECTIVE.maxRounds) * (roundsPerDay / EFFECTIVE.maxRounds) : 0) : NaN;
    const allLost = reported.every((r) => r.error?.startsWith('VM lost:'));
    const lines = [
      `## Fleet: ${COMPUTES.toLocaleString('en-US')} computes on one control-plane worker${compressed ? ' (time-compressed settings)' : ''}${SERVER === 'sql' ? ', production-style Temporal server on PostgreSQL' : ''}`,
      ...(COMPUTES < REQUESTED ? ['', `**${REQUESTED.toLocaleString('en-US')} computes were asked for; the start budget (${START_SECONDS} s) ran out at ${COMPUTES.toLocaleString('en-US')}, the size measured here.**`] : []),
      '',
      `**The computes are SIMULATED.** One simulator process (bench/fleet-simulator.ts) answers the compute-node activities of every compute with the real watch's heartbeat timing and no Postgres, on ${SIM_QUEUES} shared task queues (bench-only workflow option \`simulatedNodeTaskQueue\`) instead of one queue per compute. The control-plane side is the product: \`durable-compute worker control-plane\`, unchanged, against ${server.description}, on loopback. Computes are Static-mode specs (no safekeeper check against servers that do not exist); the idle watch is the same for every mode. The shared queues change the number of pollers the server sees (${SIM_QUEUES} simulator workers instead of ${COMPUTES.toLocaleString('en-US')}), not what a compute costs in actions, history or control-plane work.`,
      '',
      `Run ${new Date().toISOString()} on ${os.cpus().length} cores, ${(os.totalmem() / 1024 ** 3).toFixed(0)} GiB, shared with the simulator and the server. Watch round ${EFFECTIVE.report} s, heartbeat timeout ${EFFECTIVE.heartbeat} s (a beat every ${EFFECTIVE.heartbeat / 2} s), ${EFFECTIVE.maxRounds} rounds per run${compressed ? '' : ' (the product defaults)'}. Idle window ${fmt(windowSeconds, 0)} s of real time, ${fmt(computeHours, 1)} compute-hours. Control-plane worker: workflow cache ${cacheSize} (maxCachedWorkflows), other options the product's; ${CONTROL_PLANE_FORM === 'bundle' ? 'it runs in its production form, `node dist/cli/durable-compute.cjs worker control-plane` (the CLI bundle with its prebuilt workflow bundle, built from these sources for the run)' : 'it runs from the sources through tsx (TypeScript compiled at load, the workflow code bundled with webpack at start), whose memory is part of the RSS'}.`,
      '',
      '| Figure | Value | Target |',
      '|---|---|---|',
      `| Start ${COMPUTES.toLocaleString('en-US')} computes until all running, ${START_LANES} starting at a time | ${fmt(startupSeconds, 0)} s (control-plane CPU ${fmt(startupCpu, 0)} s)${startRetries.length ? `; ${startRetries.length} start calls failed (${startRetries[0]}) and their computes were waited for on the server` : ''}${startFailures.length ? `; ${startFailures.length} failed to start and are not held (first: ${startFailures[0]!.error})` : ''} | |`,
      `| Control-plane worker RSS: end of window / peak in the window / peak while starting (to the window) / peak over the run (2 s samples) | ${fmt(usageAfter.rssMiB, 0)} / ${fmt(Math.max(...rssDuring, usageBefore.rssMiB, usageAfter.rssMiB), 0)} / ${fmt(peakBeforeWindow, 0)} / ${fmt(peak.rssMiB, 0)} MiB | < 1024 MiB |`,
      `| Control-plane worker CPU per compute-hour (idle) | ${fmt((cpuSeconds * 1000) / computeHours, 2)} ms (${fmt((cpuSeconds / windowSeconds) * 100, 1)} % of one core for the fleet) | |`,
      `| Workflow-task latency in the window, schedule → complete (${wftScheduleToComplete.length} tasks of ${sampleIds.length} sampled computes) | p50 ${fmt(pct(wftScheduleToComplete, 50), 0)} ms, p99 ${fmt(pct(wftScheduleToComplete, 99), 0)} ms (schedule → start p50 ${fmt(pct(wftScheduleToStart, 50), 0)} ms) | |`,
      `| Workflow-task latency under load, probe after the window: a status query and a \`configure\` to ${probe.configureMs.length + probe.failures.length} held computes over ${fmt(probe.seconds, 0)} s (${probe.wftScheduleToComplete.length} tasks, from history) | p50 ${fmt(pct(probe.wftScheduleToComplete, 50), 0)} ms, p99 ${fmt(pct(probe.wftScheduleToComplete, 99), 0)} ms, max ${fmt(Math.max(...probe.wftScheduleToComplete), 0)} ms (schedule → start p50 ${fmt(pct(probe.wftScheduleToStart, 50), 0)} ms) | |`,
      `| … client round trip: status query / configure (p50, p99) | ${fmt(pct(probe.queryMs, 50), 0)} / ${fmt(pct(probe.configureMs, 50), 0)} ms, ${fmt(pct(probe.queryMs, 99), 0)} / ${fmt(pct(probe.configureMs, 99), 0)} ms; failed: ${probe.failures.length}${probe.failures.length ? ` (${probe.failures[0]})` : ''} | |`,
      `| **Temporal actions per idle compute-hour** (server \`action\` counter over the window) | **${fmt(perComputeHour, 2)}** | ≤ 60 |`,
      `| … of which watch heartbeats (counted by the simulator) | ${fmt(heartbeatsPerHour, 2)} | |`,
      `| … cross-check: billable history events of ${sampleIds.length} sampled computes × ${fmt(sampleScale, 1)} + heartbeats, per compute-hour | ${fmt(historyActionsEstimate / computeHours, 2)} | |`,
      `| … steady-state model: ${beatsPerRound} beats + one activity start per round, 4 per continue-as-new (run start, patch marker, 2 search-attribute upserts) | ${fmt(modelPerHour, 2)} | |`,
      `| Watch rounds completed in the window | ${windowRounds.toLocaleString('en-US')} | |`,
      `| History events per watch round (median, sampled) | ${fmt(medianRound, 0)} | |`,
      `| History events per run at continue-as-new (median) | ${Number.isFinite(medianRun) ? fmt(medianRun, 0) : `none in this run (first after ${EFFECTIVE.maxRounds} rounds = ${fmt((EFFECTIVE.maxRounds * EFFECTIVE.report) / 3600, 1)} h)`} | bounded |`,
      `| History events per compute-day | ${Number.isFinite(perDay) ? fmt(perDay, 0) : `${fmt(6 * roundsPerDay, 0)} (6 events per round × ${fmt(roundsPerDay, 0)} rounds; no round completed in the window)`} | |`,
      `| Runs continued as new (sampled runs read: ${runsSeen}) | ${continuedAsNew} | |`,
      `| Dead VM reported with vmLost → compute \`failed\` (${KILLS} VMs, client side) | p50 ${fmt(pct(reportedMs, 50), 0)} ms, max ${fmt(Math.max(...reportedMs), 0)} ms; error "VM lost: …" on all: ${allLost ? 'yes' : `NO (${reported.filter((r) => !r.error?.startsWith('VM lost:')).map((r) => r.error).join('; ')})`} | ≤ 60 s |`,
      `| … signal event → workflow failed event (history) | p50 ${fmt(pct(signalToFailed, 50), 0)} ms, max ${fmt(Math.max(...signalToFailed), 0)} ms | |`,
      ...(silentIds.length
        ? [`| Dead VM never reported (backstop: heartbeat timeout, then the retry's schedule-to-start timeout) (${silentIds.length} VMs) | p50 ${fmt(pct(silent.map((s) => s.ms).filter(Number.isFinite), 50) / 1000, 0)} s, max ${fmt(Math.max(...silent.map((s) => s.ms).filter(Number.isFinite)) / 1000, 0)} s, still not failed: ${silent.filter((s) => !Number.isFinite(s.ms)).length} (bound ${2 * EFFECTIVE.heartbeat} s) | |`]
        : [`| Dead VM never reported (backstop) | not waited for in this run: up to ${2 * EFFECTIVE.heartbeat} s (heartbeat timeout, then the retry's schedule-to-start timeout) | |`]),
      `| Temporal server over the window${SERVER === 'sql' ? ' (server and PostgreSQL with its backends)' : ''} | CPU ${fmt(((serverAfter.cpuSeconds - serverBefore.cpuSeconds) / windowSeconds) * 100, 1)} % of one core, RSS ${fmt(serverAfter.rssMiB, 0)} MiB${SERVER === 'sql' ? " (summed over the processes: PostgreSQL's shared memory counts once per backend)" : ''} | |`,
      '',
      `Server \`action\` counter in the window by its labels: ${Object.entries(byLabelsDelta).map(([k, v]) => `\`${k}\` ${v}`).join(', ') || 'none'}.`,
      '',
      `How the hour is extrapolated: actions, heartbeats and CPU are counted over the ${fmt(windowSeconds, 0)} s window and scaled by 3600 s / window per compute. All computes started within ${fmt(startupSeconds, 0)} s of each other, so a window shorter than a round may hold few or no round boundaries: the heartbeats (most of the cost) are measured directly, and the per-round activity start and per-run continue-as-new are counted from history (the cross-check row) and modelled (the model row). A time-compressed run (\`npm run bench:fleet -- --report-seconds 20 --heartbeat-timeout 30 --max-rounds 3 ...\`) holds many rounds and continue-as-news in its window and checks the model against the counter.`,
      '',
      `Whole run: ${fmt(totalWallHours * 60, 0)} min; control-plane worker CPU over it ${fmt(finalUsage.cpuSeconds, 0)} s.`,
    ];
    writeFileSync(OUT, `${lines.join('\n')}\n`);
    log(`wrote ${OUT}`);
    console.log(lines.join('\n'));
  } catch (err) {
    for (const name of ['control-plane.log', 'simulator.log']) {
      try {
        console.error(`--- tail of ${name}:\n${readFileSync(path.join(dir, name), 'utf8').slice(-4000)}`);
      } catch {
        // not started
      }
    }
    throw err;
  } finally {
    await connection?.close().catch(() => undefined);
    await stopChildren();
    await stopServer?.().catch((err: Error) => log(`stopping the Temporal server: ${err.message}`));
    rmSync(dir, { recursive: true, force: true });
    rmSync(shmDir, { recursive: true, force: true });
  }
}

// Ctrl-C or a timeout still stops the children and removes the directories: the run unwinds
// through its cleanup, and whatever is left when the process exits is killed there.
stopOnInterrupt(() => [runDir, shmRunDir]);
await main();
