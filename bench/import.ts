/**
 * Fast-import benchmark: a pgbench database imported end to end by the durable workflow on the
 * embedded stack, against two hand-run pipelines that stop once the data directory is in S3,
 * and the same workflow with its importer SIGKILLed half way through the upload.
 *
 *   node --import tsx bench/import.ts
 *
 *   (a) pg_dump -Fd -jN + pg_restore -jN + `aws s3 sync`, by hand
 *   (b) pgcopydb clone (N table jobs, N index jobs) + `aws s3 sync`
 *   (c) `import start`: the import workflow (Temporal, control-plane worker, one importer worker
 *       process) up to the commit marker, then the dev pageserver's import until the timeline is
 *       active; checked by starting a compute on the new timeline
 *   (d) (c) again with the importer worker SIGKILLed once half the bytes are uploaded (by its
 *       heartbeats) and restarted at once: the resumed upload sends only what was missing
 *
 * (a) and (b) restore into the same kind of target as the importer: a fresh initdb started with
 * the importer's bulk-load settings, so the comparison is of the pipelines, not of the tuning.
 * Everything runs on this machine: a private dev stack on free ports (s3rver with
 * --openssl-legacy-provider, which `aws s3 sync`'s ListObjectsV2 paging needs).
 *
 * BENCH_IMPORT_SCALE  pgbench scale factor (default 100, about 1.5 GB)
 * BENCH_IMPORT_JOBS   parallel jobs for every tool (default 2)
 * BENCH_IMPORT_OUT    results file (default bench/results/import.md)
 * BENCH_IMPORT_SKIP   comma-separated parts to leave out: pgdump,pgcopydb,kill,verify
 */
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import type { S3Client } from '@aws-sdk/client-s3';
import pg from 'pg';
import { projectRoot } from '../common/paths';
import { findPostgres, pgBin, type PgInstallation } from '../common/pg-binaries';
import { chownForPostgres } from '../common/pg-identity';
import { loadConfig, type AppConfig } from '../common/config';
import { detectHostResources, type HostResources } from '../activities/importer/bulk-load-settings';
import { COMMON_DUMP_RESTORE_OPTIONS } from '../activities/importer/dump-restore';
import { destroyScratch, ensureDatabase, ensureScratchRunning, initScratchDataDir, scratchPaths, stopScratch, withScratchClient } from '../activities/importer/scratch-postgres';
import { createPageserverClient } from '../drivers/pageserver';
import { writePgdataDone } from '../activities/importer/status';
import { createS3Client } from '../drivers/s3/client';
import { listObjects } from '../drivers/s3/objects';
import { generateLocalKey } from '../drivers/secrets/local-aes';
import { ComputeClient } from '../client/compute-client';
import { openClient } from '../client/context';
import { exampleComputeConfig } from '../client/example-spec';
import { ImportClient, type ImportStatusView } from '../client/import-client';
import { freePort, freePortRange } from '../dev/processes';
import { devPayloadKeyFile, devS3Credentials, devStorageTokenFile, stackDown, stackUp, type StackEndpoints } from '../dev/stack';
import { resolveStackSettings } from '../dev/stack-settings';
import { provisionTemporalCli } from '../dev/temporal-cli';
import { importPrefix } from '../model/import-status';
import { startThrowawayPostgres, type ThrowawayPostgres } from '../dev/throwaway-postgres';
import { startProcess, type WorkerProcess } from '../dev/child-processes';
import { canDropCaches, dropOsCache } from './os-cache';

const run = promisify(execFile);
const DATABASE = 'bench';
const MiB = 1024 * 1024;

const scale = Number(process.env.BENCH_IMPORT_SCALE ?? 100);
const jobs = Number(process.env.BENCH_IMPORT_JOBS ?? 2);
const outFile = process.env.BENCH_IMPORT_OUT ?? path.join(projectRoot, 'bench', 'results', 'import.md');
const skip = new Set((process.env.BENCH_IMPORT_SKIP ?? '').split(',').filter(Boolean));

interface Step {
  name: string;
  seconds: number;
}

interface MethodResult {
  method: string;
  steps: Step[];
  totalSeconds: number;
  objects: number;
  bytes: number;
  note?: string;
  /** 1/5/15-minute load average when the method started and when it ended. */
  load?: string;
}

interface Bench {
  root: string;
  install: PgInstallation;
  resources: HostResources;
  source: ThrowawayPostgres;
  sourceFingerprint: string;
  s3: S3Client;
  bucket: string;
  endpoints: StackEndpoints;
  stackDir: string;
  /** Environment of every child process (importer, compute worker): the private stack and the import key. */
  env: Record<string, string>;
  /** The private stack's storage token, for compute specs. */
  storageAuthToken?: string;
  imports: ImportClient;
  computes: ComputeClient;
}

function log(line: string): void {
  console.log(`[bench ${new Date().toISOString().slice(11, 19)}] ${line}`);
}

async function timed<T>(steps: Step[], name: string, fn: () => Promise<T>): Promise<T> {
  const start = performance.now();
  log(`${name}...`);
  const result = await fn();
  const seconds = (performance.now() - start) / 1000;
  steps.push({ name, seconds });
  log(`${name}: ${seconds.toFixed(1)} s`);
  return result;
}

/** Runs a command with an argument array; output is kept for the error message only. */
async function exec(command: string, args: string[], env: Record<string, string> = {}): Promise<string> {
  try {
    const { stdout } = await run(command, args, { env: { ...process.env, ...env }, maxBuffer: 256 * MiB });
    return stdout;
  } catch (err) {
    const e = err as { stderr?: string; stdout?: string; message: string };
    throw new Error(`${command} ${args.join(' ')} failed: ${e.message}\n${(e.stderr ?? '').slice(-4000)}`);
  }
}

function awsEnv(): Record<string, string> {
  const creds = devS3Credentials();
  return {
    AWS_ACCESS_KEY_ID: creds.accessKeyId,
    AWS_SECRET_ACCESS_KEY: creds.secretAccessKey,
    AWS_DEFAULT_REGION: 'us-east-1',
    // s3rver does not understand the newer default checksums.
    AWS_REQUEST_CHECKSUM_CALCULATION: 'WHEN_REQUIRED',
    AWS_RESPONSE_CHECKSUM_VALIDATION: 'WHEN_REQUIRED',
  };
}

function awsSync(ctx: Bench, pgdata: string, prefix: string): Promise<string> {
  return exec('aws', ['s3', 'sync', pgdata, `s3://${ctx.bucket}/${prefix}/pgdata`, '--endpoint-url', ctx.endpoints.s3.endpoint, '--no-progress', '--only-show-errors'], awsEnv());
}

async function prefixSize(ctx: Bench, prefix: string): Promise<{ objects: number; bytes: number }> {
  let objects = 0;
  let bytes = 0;
  for await (const o of listObjects(ctx.s3, ctx.bucket, `${prefix}/pgdata/`)) {
    objects++;
    bytes += o.size;
  }
  return { objects, bytes };
}

/** Rows and a cheap checksum of the pgbench tables, to check every copy is complete. */
async function pgbenchFingerprint(client: pg.Client): Promise<string> {
  const { rows } = await client.query<{ f: string }>(`
    SELECT (SELECT count(*) FROM pgbench_accounts) || '/' || (SELECT sum(abalance) + sum(aid) FROM pgbench_accounts)
      || '/' || (SELECT count(*) FROM pgbench_branches) || '/' || (SELECT count(*) FROM pgbench_tellers)
      || '/' || (SELECT count(*) FROM pg_indexes WHERE tablename LIKE 'pgbench_%') AS f`);
  return rows[0]!.f;
}

async function freshTarget(install: PgInstallation, workdir: string, resources: HostResources) {
  await initScratchDataDir(install, workdir);
  const conn = await ensureScratchRunning({ install, workdir, resources, restoreJobs: jobs });
  await ensureDatabase(conn, DATABASE);
  const url = `postgresql://${conn.user}@/${DATABASE}?host=${encodeURIComponent(conn.socketDir)}&port=${conn.port}`;
  return { conn, url };
}

function finish(method: string, steps: Step[], size: { objects: number; bytes: number }, fingerprint: string | undefined, ctx: Bench, totalSeconds?: number): MethodResult {
  const note = fingerprint === undefined ? 'not checked' : fingerprint === ctx.sourceFingerprint ? 'rows and checksum match' : `MISMATCH: ${fingerprint}`;
  if (fingerprint !== undefined && fingerprint !== ctx.sourceFingerprint) log(`WARNING: ${method} copied ${fingerprint}, source has ${ctx.sourceFingerprint}`);
  return { method, steps, totalSeconds: totalSeconds ?? steps.reduce((n, s) => n + s.seconds, 0), ...size, note };
}

async function methodPgDump(ctx: Bench): Promise<MethodResult> {
  const steps: Step[] = [];
  const workdir = path.join(ctx.root, 'a');
  const { conn, url } = await timed(steps, 'init target', () => freshTarget(ctx.install, workdir, ctx.resources));
  const dumpDir = path.join(workdir, 'dumpdir');
  await timed(steps, 'pg_dump -Fd', () =>
    exec(pgBin(ctx.install, 'pg_dump'), ['--format=directory', `--jobs=${jobs}`, ...COMMON_DUMP_RESTORE_OPTIONS, '--no-sync', '--file', dumpDir, '--dbname', ctx.source.url(DATABASE)]),
  );
  await timed(steps, 'pg_restore', () => exec(pgBin(ctx.install, 'pg_restore'), [`--jobs=${jobs}`, ...COMMON_DUMP_RESTORE_OPTIONS, '--dbname', url, dumpDir]));
  const fp = await withScratchClient(conn, DATABASE, pgbenchFingerprint);
  await timed(steps, 'stop', () => stopScratch({ install: ctx.install, workdir, resources: ctx.resources, restoreJobs: jobs }));
  await timed(steps, 'aws s3 sync', () => awsSync(ctx, scratchPaths(workdir).pgdata, 'bench/a'));
  return finish('pg_dump + pg_restore + aws s3 sync', steps, await prefixSize(ctx, 'bench/a'), fp, ctx);
}

async function methodPgcopydb(ctx: Bench): Promise<MethodResult> {
  const steps: Step[] = [];
  const workdir = path.join(ctx.root, 'b');
  const { conn, url } = await timed(steps, 'init target', () => freshTarget(ctx.install, workdir, ctx.resources));
  await timed(steps, 'pgcopydb clone', () =>
    exec('pgcopydb', [
      'clone',
      '--source', ctx.source.url(DATABASE),
      '--target', url,
      '--dir', path.join(workdir, 'pgcopydb'),
      '--table-jobs', String(jobs),
      '--index-jobs', String(jobs),
      '--no-owner',
      '--no-acl',
      '--skip-extensions',
    ]),
  );
  const fp = await withScratchClient(conn, DATABASE, pgbenchFingerprint);
  await timed(steps, 'stop', () => stopScratch({ install: ctx.install, workdir, resources: ctx.resources, restoreJobs: jobs }));
  await timed(steps, 'aws s3 sync', () => awsSync(ctx, scratchPaths(workdir).pgdata, 'bench/b'));
  return finish('pgcopydb clone + aws s3 sync', steps, await prefixSize(ctx, 'bench/b'), fp, ctx);
}

/**
 * The dev pageserver's import of what (a) uploaded, started and timed as the workflow starts its
 * own: the import is requested first, then the commit marker written; timed from the marker until
 * the timeline is active. (a) followed by this does what the workflow does end to end, with
 * (a)'s tools: the reference point for the workflow's end-to-end figure.
 */
async function pageserverImportOf(ctx: Bench, prefix: string): Promise<{ seconds: number; phases?: PageserverPhases }> {
  const pageserver = createPageserverClient({ httpUrl: ctx.endpoints.pageserver.http, token: ctx.storageAuthToken });
  const tenantId = randomNeonId();
  const timelineId = randomNeonId();
  await pageserver.createTimeline(tenantId, {
    new_timeline_id: timelineId,
    import_pgdata: { idempotency_key: `bench-${timelineId}`, location: { AwsS3: { region: ctx.endpoints.s3.region, bucket: ctx.bucket, key: prefix } } },
  });
  log(`pageserver import of ${prefix}...`);
  const start = performance.now();
  const markerAt = Date.now();
  await writePgdataDone(ctx.s3, ctx.bucket, prefix);
  for (;;) {
    const info = await pageserver.getTimeline(tenantId, timelineId);
    if (info.state === 'Active' || info.state === undefined) break;
    if (typeof info.state === 'object' && 'Broken' in info.state) throw new Error(`the pageserver's import of ${prefix} failed: ${info.state.Broken.reason}`);
    await sleep(50);
  }
  const seconds = (performance.now() - start) / 1000;
  log(`pageserver import of ${prefix}: ${seconds.toFixed(1)} s`);
  await pageserver.deleteTimeline(tenantId, timelineId);
  return { seconds, phases: pageserverPhases(ctx, tenantId, timelineId, markerAt) };
}

/** An importer worker process with its own work directory, as on an importer VM. */
function startImporter(ctx: Bench, hostId: string): Promise<WorkerProcess> {
  const root = path.join(ctx.root, `importer-${hostId}`);
  mkdirSync(root, { recursive: true, mode: 0o755 });
  return startProcess('bin/durable-compute.mjs', ['worker', 'importer'], {
    env: {
      ...ctx.env,
      DURABLE_COMPUTE_IMPORTER_WORKDIR: root,
      DURABLE_COMPUTE_IMPORTER_HOST_ID: hostId,
      DURABLE_COMPUTE_IMPORTER_MEMORY_MB: String(Math.floor(ctx.resources.totalMemoryBytes / MiB)),
      DURABLE_COMPUTE_IMPORTER_CPUS: String(ctx.resources.cpus),
    },
    readyLine: /importer worker ready/,
    timeoutMs: 120_000,
  });
}

function randomNeonId(): string {
  return randomUUID().replaceAll('-', '');
}

/** A compute on the imported timeline, as a user would start one; returns what it sees. */
async function fingerprintThroughCompute(ctx: Bench, tenantId: string, timelineId: string): Promise<string> {
  const computeId = `bench-${randomUUID().slice(0, 8)}`;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'dc-bench-compute-'));
  chownForPostgres(dir, false);
  const pgdata = path.join(dir, 'pgdata');
  const worker = await startProcess('bin/durable-compute.mjs', ['worker', 'compute', '--compute-id', computeId, '--pgdata', pgdata, '--http-port', '0', '--http-host', '127.0.0.1'], {
    env: ctx.env,
    readyLine: /compute worker ready/,
    timeoutMs: 120_000,
  });
  try {
    const spec = exampleComputeConfig({
      tenantId,
      timelineId,
      pageserverPg: ctx.endpoints.pageserver.pg,
      safekeepers: ctx.endpoints.safekeepers.map((sk) => sk.pg),
      port: await freePort(),
      storageAuthToken: ctx.storageAuthToken,
    });
    await ctx.computes.start(computeId, spec, { watchReportSeconds: 5, watchHeartbeatTimeoutSeconds: 30 });
    await ctx.computes.waitForRunning(computeId, 1_800_000);
    const lines = readFileSync(path.join(pgdata, 'postmaster.pid'), 'utf8').split('\n');
    const client = new pg.Client({ host: lines[4]!.trim(), port: Number(lines[3]), user: 'cloud_admin', database: DATABASE });
    await client.connect();
    try {
      return await pgbenchFingerprint(client);
    } finally {
      await client.end();
    }
  } finally {
    await ctx.computes.terminate(computeId, 'immediate').catch(() => undefined);
    await worker.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
}

interface WorkflowRun {
  result: MethodResult;
  status: ImportStatusView;
  /** Seconds from `import start` until the commit marker was written (the phase became pageserver_import). */
  toMarkerSeconds: number;
  /** The pageserver's side, from its log: marker seen, download, first image (tar.gz base backup, fsync). */
  pageserver?: PageserverPhases;
  kill?: { afterSeconds: number; atKill: string; restartSeconds: number; resumedAfterSeconds?: number };
  /** From the workflow's history: how often each local step completed. */
  completions: Record<string, number>;
}

interface PageserverPhases {
  /** From the commit marker's write (as the workflow's status shows it) until the pageserver noticed it. */
  markerSeenAfterSeconds: number;
  downloadSeconds: number;
  imageSeconds: number;
}

/** The dev pageserver's timings for one import, from its log. */
function pageserverPhases(ctx: Bench, tenantId: string, timelineId: string, markerAt: number): PageserverPhases | undefined {
  const id = `${tenantId}/${timelineId}`;
  let found: number | undefined;
  let download: number | undefined;
  let image: number | undefined;
  for (const line of readFileSync(path.join(ctx.stackDir, 'pageserver.log'), 'utf8').split('\n')) {
    if (!line.includes(id)) continue;
    const at = Date.parse(line.slice(0, 24));
    if (line.includes('commit marker found')) found = at;
    const m = /imported timeline \S+ in \d+ ms \(download (\d+) ms, first image and its base backup (\d+) ms\)/.exec(line);
    if (m) {
      download = Number(m[1]) / 1000;
      image = Number(m[2]) / 1000;
    }
  }
  if (found === undefined || download === undefined || image === undefined) return undefined;
  return { markerSeenAfterSeconds: Math.max(0, (found - markerAt) / 1000), downloadSeconds: download, imageSeconds: image };
}

/**
 * When the commit marker was written and when the workflow closed, from its history (the
 * server's clock, on this machine): exact, where a status poll would add its interval and the
 * latency of a query to a busy worker.
 */
async function historyTimes(ctx: Bench, importId: string): Promise<{ markerAt?: number; closedAt?: number }> {
  const history = await ctx.imports.historyOf(importId);
  const typeOf = new Map<string, string>();
  const times: { markerAt?: number; closedAt?: number } = {};
  for (const e of history.events ?? []) {
    const at = Number(e.eventTime?.seconds ?? 0) * 1000 + Math.floor((e.eventTime?.nanos ?? 0) / 1e6);
    if (e.activityTaskScheduledEventAttributes) typeOf.set(String(e.eventId), e.activityTaskScheduledEventAttributes.activityType?.name ?? '?');
    const done = e.activityTaskCompletedEventAttributes;
    if (done && typeOf.get(String(done.scheduledEventId)) === 'writePgdataStatus') times.markerAt = at;
    if (e.workflowExecutionCompletedEventAttributes) times.closedAt = at;
  }
  return times;
}

/** When the last attempt of an activity type started, from the workflow's history. */
async function lastAttemptStart(ctx: Bench, importId: string, activityType: string): Promise<number | undefined> {
  const history = await ctx.imports.historyOf(importId);
  const typeOf = new Map<string, string>();
  let at: number | undefined;
  for (const e of history.events ?? []) {
    if (e.activityTaskScheduledEventAttributes) typeOf.set(String(e.eventId), e.activityTaskScheduledEventAttributes.activityType?.name ?? '?');
    const st = e.activityTaskStartedEventAttributes;
    if (st && typeOf.get(String(st.scheduledEventId)) === activityType && e.eventTime?.seconds !== undefined) {
      at = Number(e.eventTime.seconds) * 1000 + Math.floor((e.eventTime.nanos ?? 0) / 1e6);
    }
  }
  return at;
}

function loadAverage(): string {
  return os.loadavg().map((l) => l.toFixed(2)).join(' ');
}

/** Completed activities per type, from the workflow's history (event types are not encrypted). */
async function completedActivities(ctx: Bench, importId: string): Promise<Record<string, number>> {
  const history = await ctx.imports.historyOf(importId);
  const typeOf = new Map<string, string>();
  const counts: Record<string, number> = {};
  for (const e of history.events ?? []) {
    if (e.activityTaskScheduledEventAttributes) typeOf.set(String(e.eventId), e.activityTaskScheduledEventAttributes.activityType?.name ?? '?');
    const done = e.activityTaskCompletedEventAttributes;
    if (done) {
      const type = typeOf.get(String(done.scheduledEventId)) ?? '?';
      counts[type] = (counts[type] ?? 0) + 1;
    }
  }
  return counts;
}

/**
 * `import start` ... done through the workflow; with `killAfterUploadSeconds`, the importer is
 * SIGKILLed that long into the upload and restarted at once on the same disk.
 */
async function methodWorkflow(ctx: Bench, killAfterUploadSeconds?: number): Promise<WorkflowRun> {
  const kill = killAfterUploadSeconds !== undefined;
  const importId = `bench-${kill ? 'killed' : 'plain'}-${randomUUID().slice(0, 8)}`;
  const tenantId = randomNeonId();
  const timelineId = randomNeonId();
  const hostId = `bench-host-${kill ? 'k' : 'p'}`;
  const loadAtStart = loadAverage();
  let worker = await startImporter(ctx, hostId);
  try {
    log(`workflow ${importId}${kill ? ' (to be killed half way through the upload)' : ''}...`);
    const start = performance.now();
    const startedAtWall = Date.now();
    await ctx.imports.start({
      importId,
      sourceConnstring: ctx.source.url(DATABASE),
      tenantId,
      timelineId,
      jobs,
      options: { heartbeatTimeoutSeconds: 10, pageserverPollSeconds: 2 },
    });
    let killInfo: WorkflowRun['kill'];
    let killedAtWall: number | undefined;
    if (killAfterUploadSeconds !== undefined) {
      // Half of the uninterrupted run's upload time after this upload started (as its status shows).
      // Timed from when the upload attempt started on the worker (as Temporal recorded it), not from when a poll first saw it.
      let uploadStarted: number | undefined;
      let last: ImportStatusView | undefined;
      for (;;) {
        const s = await ctx.imports.status(importId);
        if (s.running_step?.name === 'uploadPgdata') {
          uploadStarted ??= s.running_step.started_at ? Date.parse(s.running_step.started_at) : Date.now();
          last = s;
        }
        if (uploadStarted !== undefined && Date.now() - uploadStarted >= killAfterUploadSeconds * 1000) break;
        if (s.phase === 'pageserver_import' || s.phase === 'done' || s.phase === 'failed') throw new Error(`the upload ended before it could be killed (${s.phase})`);
        await sleep(uploadStarted === undefined ? 200 : Math.min(200, Math.max(10, uploadStarted + killAfterUploadSeconds * 1000 - Date.now())));
      }
      await worker.kill('SIGKILL');
      killedAtWall = Date.now();
      const afterSeconds = (performance.now() - start) / 1000;
      const p = last?.progress;
      const atKill = p ? `${p.filesDone}/${p.filesTotal} files, ${(p.bytesDone / MiB).toFixed(0)}/${((p.bytesTotal ?? 0) / MiB).toFixed(0)} MiB by the last heartbeat` : 'no heartbeat yet';
      log(`importer SIGKILLed after ${afterSeconds.toFixed(1)} s, ${killAfterUploadSeconds.toFixed(1)} s into the upload: ${atKill}`);
      const restartStart = performance.now();
      worker = await startImporter(ctx, hostId);
      killInfo = { afterSeconds, atKill, restartSeconds: (performance.now() - restartStart) / 1000 };
    }
    const status = await ctx.imports.wait(importId, { intervalMs: 500 });
    const { markerAt, closedAt } = await historyTimes(ctx, importId);
    if (markerAt === undefined || closedAt === undefined) throw new Error(`the history of ${importId} has no commit marker or no close`);
    const toMarkerSeconds = (markerAt - startedAtWall) / 1000;
    const totalSeconds = (closedAt - startedAtWall) / 1000;
    if (kill) {
      // The resumed worker's warnings say why a half-sent file had to be sent again whole.
      const output = worker.output();
      for (const m of output.matchAll(/^.*could not be continued[^\n]*\{\n[\s\S]*?^\}/gm)) log(`resumed importer: ${m[0].replace(/\s*\n\s*/g, ' ')}`);
    }
    if (killInfo && killedAtWall !== undefined) {
      const resumed = await lastAttemptStart(ctx, importId, 'uploadPgdata');
      if (resumed !== undefined) killInfo.resumedAfterSeconds = (resumed - killedAtWall) / 1000;
    }
    const pageserver = pageserverPhases(ctx, tenantId, timelineId, markerAt);
    log(`workflow ${importId} done in ${totalSeconds.toFixed(1)} s (commit marker after ${toMarkerSeconds.toFixed(1)} s): ${status.steps.map((st) => `${st.name} ${(st.ms / 1000).toFixed(1)}`).join('; ')}`);
    const steps = status.steps.map((st) => ({ name: st.name, seconds: st.ms / 1000 }));
    const fp = kill || skip.has('verify') ? undefined : await fingerprintThroughCompute(ctx, tenantId, timelineId);
    const result = finish(kill ? 'import workflow, importer killed half way through the upload' : 'import workflow (`import start`), to an active timeline', steps, await prefixSize(ctx, importPrefix(importId)), fp, ctx, totalSeconds);
    result.load = `${loadAtStart} → ${loadAverage()}`;
    return { result, status, toMarkerSeconds, pageserver, kill: killInfo, completions: await completedActivities(ctx, importId) };
  } finally {
    await worker.kill('SIGKILL');
  }
}

function fmt(seconds: number): string {
  return seconds >= 100 ? seconds.toFixed(0) : seconds.toFixed(1);
}

function stepSeconds(r: WorkflowRun, name: string): number {
  return r.result.steps.find((s) => s.name === name)?.seconds ?? 0;
}

function report(
  ctx: Bench,
  setupSeconds: number,
  sourceBytes: number,
  methods: MethodResult[],
  runs: WorkflowRun[],
  reference: { seconds: number; phases?: PageserverPhases } | undefined,
): string {
  const host = detectHostResources();
  const [plain, killed] = runs;
  const lines = [
    '# Fast import benchmark',
    '',
    `Run ${new Date().toISOString()} with \`node --import tsx bench/import.ts\` (BENCH_IMPORT_SCALE=${scale}, BENCH_IMPORT_JOBS=${jobs}).`,
    '',
    `Host: ${host.cpus} CPUs, ${(host.totalMemoryBytes / 1024 ** 3).toFixed(1)} GiB. PostgreSQL ${ctx.install.version}.`,
    canDropCaches()
      ? 'Before each method (and each workflow run) every dirty page is written back and the page cache emptied, so no run pays for the writeback of another or reads what another cached.'
      : 'The page cache could not be emptied between methods (not root): later methods may pay for the writeback of earlier ones.',
    'Everything on loopback: a private dev stack (Temporal dev server, control-plane worker, s3rver, 3 dev safekeepers, dev pageserver,',
    "import_complete endpoint, and the stack's own importer, idle here), one importer worker process of the bench's (on a queue of its own),",
    'the source Postgres; same disk for all of them.',
    `Source: pgbench scale ${scale} (${(sourceBytes / MiB).toFixed(0)} MiB database, built in ${fmt(setupSeconds)} s). Targets: fresh initdb with the importer's bulk-load settings`,
    `(shared_buffers 10% and maintenance_work_mem 70% of ${(ctx.resources.totalMemoryBytes / 1024 ** 3).toFixed(0)} GiB, fsync/full_page_writes/synchronous_commit off, wal_level minimal).`,
    '',
    '## End to end',
    '',
    '| method | total (s) | steps (s) | objects | uploaded MiB | check | load average (start → end) |',
    '|---|---:|---|---:|---:|---|---|',
    ...methods.map(
      (m) =>
        `| ${m.method} | ${fmt(m.totalSeconds)} | ${m.steps.map((s) => `${s.name} ${fmt(s.seconds)}`).join('; ')} | ${m.objects} | ${(m.bytes / MiB).toFixed(0)} | ${m.note ?? ''} | ${m.load ?? '-'} |`,
    ),
    '',
  ];
  const pgdump = methods.find((m) => m.method.startsWith('pg_dump'));
  if (plain && pgdump) {
    lines.push(
      `Against (a): the workflow to the commit marker ${(plain.toMarkerSeconds / pgdump.totalSeconds).toFixed(2)}x, end to end (with the pageserver's import) ${(plain.result.totalSeconds / pgdump.totalSeconds).toFixed(2)}x.`,
      '',
    );
  }
  if (pgdump && reference) {
    const withImport = pgdump.totalSeconds + reference.seconds;
    const ps = reference.phases;
    lines.push(
      `(a) followed by the dev pageserver's import of what (a) uploaded (requested, then the commit marker written, until the timeline`,
      `is active${ps ? `: marker seen after ${fmt(ps.markerSeenAfterSeconds)} s, download ${fmt(ps.downloadSeconds)} s, first image ${fmt(ps.imageSeconds)} s` : ''}): ${fmt(pgdump.totalSeconds)} + ${fmt(reference.seconds)} = ${fmt(withImport)} s,`,
      `${(withImport / pgdump.totalSeconds).toFixed(2)}x of (a). This is (a)'s tools doing everything the workflow does end to end${plain ? `; the workflow took ${(plain.result.totalSeconds / withImport).toFixed(2)}x of it` : ''}.`,
      '',
    );
  }
  for (const r of runs) {
    const ps = r.pageserver;
    if (!ps) continue;
    const pageserverStep = stepSeconds(r, 'pageserverImport');
    lines.push(
      `Phases of "${r.result.method}": to the commit marker ${fmt(r.toMarkerSeconds)} s; the pageserver saw the marker after ${fmt(ps.markerSeenAfterSeconds)} s,`,
      `downloaded the data directory in ${fmt(ps.downloadSeconds)} s and built the first image (WAL cut, fsync; a base backup tar.gz only up to 256 MiB) in ${fmt(ps.imageSeconds)} s;`,
      `the workflow's pageserverImport step (${fmt(pageserverStep)} s) ended ${fmt(Math.max(0, pageserverStep - ps.markerSeenAfterSeconds - ps.downloadSeconds - ps.imageSeconds))} s after that (the completion callback signals it).`,
      '',
    );
  }
  if (plain) {
    lines.push(
      `The workflow's total runs from \`import start\` to an active timeline, so it includes what (a) and (b) leave out: writing spec.json,`,
      `the pageserver's import (waiting for the commit marker, validating and downloading the data directory, building the timeline's`,
      `first image and base backup) and registering the timeline on the safekeepers. Its importer part, from \`import start\` until the`,
      `commit marker was written, took ${fmt(plain.toMarkerSeconds)} s; the pageserver import ${fmt(stepSeconds(plain, 'pageserverImport'))} s. The check of the`,
      'workflow row is made through a compute started on the new timeline.',
      '',
    );
  }
  if (plain && killed) {
    const up = (r: WorkflowRun) => r.status.upload!;
    lines.push(
      '## Importer killed half way through the upload (SIGKILL) vs not killed',
      '',
      '| run | total (s) | to commit marker (s) | uploadPgdata step (s) | at kill | what the resumed upload sent |',
      '|---|---:|---:|---:|---|---|',
      `| not killed | ${fmt(plain.result.totalSeconds)} | ${fmt(plain.toMarkerSeconds)} | ${fmt(stepSeconds(plain, 'uploadPgdata'))} | - | ${up(plain).uploaded_files} files, ${(up(plain).uploaded_bytes / MiB).toFixed(0)} MiB |`,
      `| killed after ${fmt(killed.kill!.afterSeconds)} s (half the upload time of the other run into its upload), restarted at once (${fmt(killed.kill!.restartSeconds)} s) | ${fmt(killed.result.totalSeconds)} | ${fmt(killed.toMarkerSeconds)} | ${fmt(stepSeconds(killed, 'uploadPgdata'))} | ${killed.kill!.atKill} | skipped ${up(killed).skipped_files} files (${(up(killed).skipped_bytes / MiB).toFixed(0)} MiB) already uploaded intact, sent ${up(killed).uploaded_files} files (${(up(killed).uploaded_bytes / MiB).toFixed(0)} MiB${up(killed).resumed_parts ? `, of which ${up(killed).resumed_parts} parts were kept from the killed attempt's unfinished multipart uploads` : ''}${up(killed).restarted_files ? `; ${up(killed).restarted_files} half-sent file(s) sent again whole, as S3 no longer had their earlier upload` : ''}) |`,
      '',
      `Killed vs not killed: ${(killed.result.totalSeconds / plain.result.totalSeconds).toFixed(2)}x end to end, ${(killed.toMarkerSeconds / plain.toMarkerSeconds).toFixed(2)}x to the commit marker.`,
      '',
      `- The killed run's uploadPgdata step spans both attempts. The restarted worker (same host, same disk) hands the dead one's attempt`,
      `  back before it polls, so the retry does not wait for the ${10} s heartbeat timeout: the resumed attempt started ${killed.kill!.resumedAfterSeconds === undefined ? '?' : fmt(killed.kill!.resumedAfterSeconds)} s after the kill.`,
      '  Nothing before the upload ran again: its history has',
      `  ${['initScratchPostgres', 'dumpSource', 'restoreDump', 'uploadPgdata'].map((t) => `${killed.completions[t] ?? 0} completed ${t}`).join(', ')}.`,
      `- Neon's importer would start over from an empty directory: dump, restore and the whole upload again.`,
      '',
    );
  }
  lines.push(
    'Notes:',
    '- The upload is one object per file: files above 64 MiB (relation segments) in 32 MiB multipart parts, as `aws s3 sync` also',
    '  uses multipart, smaller ones in one request (those of 8 to 64 MiB hashed first, so S3 can check every body); at most 10',
    '  requests in flight. What was sent is journaled',
    '  next to the data directory (each object\'s ETag, each finished part): a resumed upload skips an object of the right size and',
    '  recorded ETag without reading the file again, keeps the finished parts of a half-sent segment, and checks any other object of',
    '  the right size by content (its sha256 metadata).',
    '- The pageserver keeps no precomputed base backup for an image above 256 MiB (it packs one per request), so its import ends',
    '  once the data directory is downloaded, checked and fsync\'d.',
    '- Timings on this shared 2-CPU machine vary by tens of percent between runs (other test suites ran at the same time).',
    '- s3rver stores every object as files on the same disk, so the upload figures measure this machine more than S3.',
    '',
  );
  return lines.join('\n');
}

async function startStack(root: string): Promise<{ endpoints: StackEndpoints; dir: string }> {
  const dir = path.join(root, 'stack');
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  const settings = resolveStackSettings(
    {
      dir,
      ports: {
        temporal: await freePort(),
        temporalUi: await freePort(),
        s3: await freePort(),
        pageserverPg: await freePort(),
        pageserverHttp: await freePort(),
        safekeeperPg: await freePortRange(3),
        safekeeperHttp: await freePortRange(3),
        codecServer: await freePort(),
      },
    },
    {},
  );
  log('starting a private dev stack...');
  const endpoints = await stackUp(settings, { resolveTemporalCli: async () => (await provisionTemporalCli({ onProgress: log })).path, onProgress: log });
  return { endpoints, dir };
}

async function main(): Promise<void> {
  const install = findPostgres({ pgBinDir: process.env.PG_BIN_DIR });
  const detected = detectHostResources();
  // A shared machine: size the targets for at most 8 GiB whatever the host has.
  const resources: HostResources = { cpus: detected.cpus, totalMemoryBytes: Math.min(detected.totalMemoryBytes, 8 * 1024 ** 3) };
  const root = mkdtempSync(path.join(os.tmpdir(), 'dc-bench-import-'));
  chownForPostgres(root, false);
  let stackDir: string | undefined;
  let source: ThrowawayPostgres | undefined;
  const closers: (() => Promise<void>)[] = [];
  try {
    const stack = await startStack(root);
    stackDir = stack.dir;
    const keyFile = path.join(root, 'import.key');
    writeFileSync(keyFile, `${generateLocalKey()}\n`, { mode: 0o600 });
    const env: Record<string, string> = {
      DURABLE_COMPUTE_STACK_DIR: stack.dir,
      // The stack runs an importer of its own on the default queue; the bench's importers (sized,
      // killed and restarted by it) take the imports on a queue of their own.
      DURABLE_COMPUTE_IMPORTER_TASK_QUEUE: 'bench-importers',
      DURABLE_COMPUTE_PAYLOAD_KEY_FILE: devPayloadKeyFile(stack.dir),
      STORAGE_AUTH_TOKEN_FILE: devStorageTokenFile(stack.dir),
      DURABLE_COMPUTE_IMPORT_KEY_FILE: keyFile,
      ...(process.env.PG_BIN_DIR ? { PG_BIN_DIR: process.env.PG_BIN_DIR } : {}),
    };
    const config: AppConfig = loadConfig(env, {
      temporal: stack.endpoints.temporal,
      s3: { ...stack.endpoints.s3, ...devS3Credentials() },
      pageserver: stack.endpoints.pageserver,
      safekeepers: stack.endpoints.safekeepers,
      payloadKeyFile: devPayloadKeyFile(stack.dir),
      storageAuthTokenFile: devStorageTokenFile(stack.dir),
    });
    const opened = await openClient(config);
    closers.push(opened.close);
    const s3 = createS3Client(config.s3);
    closers.push(async () => s3.destroy());

    source = await startThrowawayPostgres({ shared_buffers: "'512MB'", max_wal_size: "'4GB'", checkpoint_timeout: "'30min'" });
    await source.query(`CREATE DATABASE ${DATABASE}`);
    const setupStart = performance.now();
    log(`pgbench -i -s ${scale}...`);
    await exec(pgBin(install, 'pgbench'), ['-i', '-q', '-s', String(scale), '-h', '127.0.0.1', '-p', String(source.port), '-U', 'postgres', DATABASE]);
    const setupSeconds = (performance.now() - setupStart) / 1000;
    const client = new pg.Client({ connectionString: source.url(DATABASE) });
    await client.connect();
    const sourceFingerprint = await pgbenchFingerprint(client);
    const sourceBytes = Number((await client.query<{ n: string }>('SELECT pg_database_size(current_database()) AS n')).rows[0]!.n);
    await client.end();
    log(`source ready: ${(sourceBytes / MiB).toFixed(0)} MiB, fingerprint ${sourceFingerprint}`);
    const ctx: Bench = {
      root,
      install,
      resources,
      source,
      sourceFingerprint,
      s3,
      bucket: config.s3.bucket,
      endpoints: stack.endpoints,
      stackDir: stack.dir,
      env,
      storageAuthToken: config.storage.authToken,
      imports: new ImportClient(opened.client, config.temporal.controlPlaneTaskQueue, config.imports),
      computes: new ComputeClient(opened.client, config.temporal.controlPlaneTaskQueue),
    };

    const methods: MethodResult[] = [];
    const runs: WorkflowRun[] = [];
    const cleanup = async (dir: string) => {
      await destroyScratch(install, path.join(root, dir)).catch(() => undefined);
    };
    // Every method starts with the previous one's dirty pages written back and the page cache
    // empty (where root may), so none pays for another's writeback or reads what another cached.
    const settled = canDropCaches();
    const withLoad = async <T extends { load?: string }>(fn: () => Promise<T>): Promise<T> => {
      if (settled) await dropOsCache();
      const before = loadAverage();
      const r = await fn();
      r.load = `${before} → ${loadAverage()}`;
      return r;
    };
    let reference: { seconds: number; phases?: PageserverPhases } | undefined;
    if (!skip.has('pgdump')) {
      methods.push(await withLoad(() => methodPgDump(ctx)));
      reference = await pageserverImportOf(ctx, 'bench/a');
      await cleanup('a');
    }
    if (!skip.has('pgcopydb')) {
      methods.push(await withLoad(() => methodPgcopydb(ctx)));
      await cleanup('b');
    }
    if (settled) await dropOsCache();
    const plain = await methodWorkflow(ctx);
    methods.push(plain.result);
    runs.push(plain);
    if (!skip.has('kill')) {
      if (settled) await dropOsCache();
      const killed = await methodWorkflow(ctx, stepSeconds(plain, 'uploadPgdata') / 2);
      methods.push(killed.result);
      runs.push(killed);
    }
    mkdirSync(path.dirname(outFile), { recursive: true });
    writeFileSync(outFile, report(ctx, setupSeconds, sourceBytes, methods, runs, reference));
    log(`results written to ${outFile}`);
  } finally {
    for (const close of closers.reverse()) await close().catch(() => undefined);
    // Scratch servers a failed run may have left (the workflow removes its own on success).
    for (const dir of readdirSync(root)) {
      if (dir === 'a' || dir === 'b') await destroyScratch(install, path.join(root, dir)).catch(() => undefined);
      if (dir.startsWith('importer-')) {
        for (const work of readdirSync(path.join(root, dir), { withFileTypes: true }).filter((d) => d.isDirectory())) {
          await destroyScratch(install, path.join(root, dir, work.name)).catch(() => undefined);
        }
      }
    }
    await source?.stop();
    if (stackDir) await stackDown(stackDir);
    rmSync(root, { recursive: true, force: true });
  }
}

await main();
