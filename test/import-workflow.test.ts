import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { S3Client } from '@aws-sdk/client-s3';
import { Client, Connection } from '@temporalio/client';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { destroyScratch } from '../drivers/importer/scratch-postgres';
import { killRecordedGroup } from '../drivers/importer/run-tool';
import { createPageserverClient } from '../drivers/pageserver';
import { createS3Client } from '../drivers/s3/client';
import { getObjectBytes, listObjects } from '../drivers/s3/objects';
import { generateLocalKey } from '../drivers/secrets/local-aes';
import { ImportClient, type ImportStatusView } from '../client/import-client';
import { openClient } from '../client/context';
import { projectRoot } from '../common/paths';
import { findPostgres } from '../common/pg-binaries';
import { chownForPostgres } from '../common/pg-identity';
import { importPrefix, importWorkflowId } from '../model/import-status';
import type { ImportWorkflowOptions } from '../workflows/import/workflow';
import { cleanupComputes, exampleSpecFor, startComputeWorker, testComputeClient, testPgdata, TEST_WORKFLOW_OPTIONS } from './helpers/compute';
import { historyTexts, recordReplayFixtureIfAsked } from './helpers/history';
import { neonId, uniqueId } from './helpers/ids';
import { importFingerprint, startImportSource, type ImportSource } from '../dev/import-source';
import { runCli } from './helpers/cli';
import { killAllProcesses, startProcess, type WorkerProcess } from '../dev/child-processes';
import { testConfig, testEnv } from './helpers/stack';

/**
 * The import workflow on the real stack: Temporal, the control-plane worker, s3rver, the dev
 * pageserver and safekeepers, importer workers as separate processes (killed with SIGKILL), a
 * real source Postgres with password authentication, and a compute started on the result.
 */

const install = findPostgres({ pgBinDir: process.env.PG_BIN_DIR });
const PASSWORD = 'imp0rt s3cret:/@%';
const DATABASE = 'shop';

let source: ImportSource;
let scratchRoot: string;
let keyFile: string;
let imports: ImportClient;
let closeClient: () => Promise<void>;
let raw: Client;
let rawConnection: Connection;
let s3: S3Client;
let bucket: string;

interface ImporterHostProcess {
  proc: WorkerProcess;
  root: string;
  hostId: string;
}

type OnFinished = (fn: () => Promise<void> | void) => void;

/**
 * One test's importer pool: its own shared task queue (no other test's importer claims its
 * work, so tests run concurrently), its importer processes and imports, all cleaned up when the
 * test ends.
 */
function newPool(onTestFinished: OnFinished) {
  const queue = uniqueId('importers');
  const procs: WorkerProcess[] = [];
  const importIds: string[] = [];
  onTestFinished(async () => {
    for (const p of procs) await p.kill('SIGKILL');
    // An import a failed test left running would wait for a host for minutes.
    for (const id of importIds) {
      const handle = raw.workflow.getHandle(importWorkflowId(id));
      if ((await handle.describe().catch(() => undefined))?.status.name === 'RUNNING') await handle.terminate('test finished').catch(() => undefined);
    }
  });
  return {
    queue,
    importId(name: string): string {
      const id = uniqueId(name);
      importIds.push(id);
      return id;
    },
    /** Short timeouts: a killed worker is noticed in seconds; the host is declared lost only well after a restart. */
    options(extra: ImportWorkflowOptions = {}): ImportWorkflowOptions {
      return { heartbeatTimeoutSeconds: 10, hostLostAfterSeconds: 45, pageserverPollSeconds: 1, claimTimeoutSeconds: 300, importerTaskQueue: queue, ...extra };
    },
    /** Environment of the CLI for this pool. */
    cliEnv(): Record<string, string> {
      return { ...testEnv(), DURABLE_COMPUTE_IMPORT_KEY_FILE: keyFile, DURABLE_COMPUTE_IMPORTER_TASK_QUEUE: queue };
    },
    /** An importer worker process: its own work directory (its "disk") and host id. */
    async startImporter(host: { root: string; hostId: string }, extraEnv: Record<string, string> = {}): Promise<ImporterHostProcess> {
      const proc = await startProcess('bin/durable-compute.mjs', ['worker', 'importer'], {
        env: {
          ...testEnv(),
          ...extraEnv,
          DURABLE_COMPUTE_IMPORT_KEY_FILE: keyFile,
          DURABLE_COMPUTE_IMPORTER_WORKDIR: host.root,
          DURABLE_COMPUTE_IMPORTER_HOST_ID: host.hostId,
          DURABLE_COMPUTE_IMPORTER_TASK_QUEUE: queue,
          // A small scratch server and a slow upload: a shared 2-CPU test machine, and a kill must land mid-upload.
          DURABLE_COMPUTE_IMPORTER_MEMORY_MB: '512',
          DURABLE_COMPUTE_IMPORTER_CPUS: '2',
          DURABLE_COMPUTE_IMPORTER_UPLOAD_CONCURRENCY: '2',
        },
        readyLine: /importer worker ready/,
      });
      procs.push(proc);
      return { proc, ...host };
    },
  };
}

function newHost(name: string): { root: string; hostId: string } {
  const root = mkdtempSync(path.join(scratchRoot, `${name}-`));
  chownForPostgres(root, false);
  return { root, hostId: uniqueId(name) };
}

/** The import's working directory on a host, once it was claimed there. */
async function workdirOn(root: string, timeoutMs = 60_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const dirs = readdirSync(root, { withFileTypes: true }).filter((d) => d.isDirectory());
    if (dirs.length > 0) return path.join(root, dirs[0]!.name);
    if (Date.now() > deadline) throw new Error(`no import directory appeared under ${root}`);
    await sleep(50);
  }
}

async function waitFor<T>(what: string, probe: () => Promise<T | undefined> | T | undefined, timeoutMs = 120_000, intervalMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(intervalMs);
  }
}

/**
 * A loopback S3 endpoint in front of s3rver that holds every object write back by `delayMs`: a
 * slow link, so an upload of a small test database lasts long enough to be killed half way.
 */
async function slowS3(delayMs: number): Promise<{ endpoint: string; close: () => Promise<void> }> {
  const upstream = new URL(testConfig().s3.endpoint!);
  const server = http.createServer((req, res) => {
    const forward = () => {
      const out = http.request({ host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers }, (up) => {
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.pipe(res);
      });
      out.on('error', () => res.destroy());
      req.pipe(out);
    };
    if (req.method === 'PUT') setTimeout(forward, delayMs);
    else forward();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}

/** The tool's recorded process group leader, once its pid file is complete. */
function recordedPid(pidFile: string): number | undefined {
  try {
    return (JSON.parse(readFileSync(pidFile, 'utf8')) as { pid: number }).pid;
  } catch {
    return undefined;
  }
}

/**
 * Waits for a tool (pg_dump, pg_restore) to run and freezes its whole process group mid-work, as
 * a dying VM would leave it; the test kills its worker next.
 */
async function freezeTool(pidFile: string): Promise<void> {
  const pid = await waitFor(`${path.basename(pidFile)} to be written`, () => recordedPid(pidFile), 180_000, 10);
  process.kill(-pid, 'SIGSTOP');
}

/**
 * Per activity type, from history: scheduled, started attempts, completed, and how the attempt
 * before each recorded start ended (the failure type, or the timeout type).
 */
async function activityCounts(importId: string): Promise<Record<string, { scheduled: number; completed: number; attempts: number[]; previousFailures: string[] }>> {
  const history = await raw.workflow.getHandle(importWorkflowId(importId)).fetchHistory();
  const byId = new Map<string, string>();
  const counts: Record<string, { scheduled: number; completed: number; attempts: number[]; previousFailures: string[] }> = {};
  for (const e of history.events ?? []) {
    const s = e.activityTaskScheduledEventAttributes;
    if (s) {
      const type = s.activityType?.name ?? '?';
      byId.set(String(e.eventId), type);
      (counts[type] ??= { scheduled: 0, completed: 0, attempts: [], previousFailures: [] }).scheduled += 1;
    }
    const st = e.activityTaskStartedEventAttributes;
    if (st) {
      const entry = counts[byId.get(String(st.scheduledEventId))!]!;
      entry.attempts.push(st.attempt ?? 1);
      const last = st.lastFailure;
      if (last) entry.previousFailures.push(last.applicationFailureInfo?.type ?? `timeout:${last.timeoutFailureInfo?.timeoutType ?? '?'}`);
    }
    const c = e.activityTaskCompletedEventAttributes;
    if (c) counts[byId.get(String(c.scheduledEventId))!]!.completed += 1;
  }
  return counts;
}

async function statusObject(importId: string, name: 'pgdata' | 'fast_import'): Promise<unknown> {
  const bytes = await getObjectBytes(s3, bucket, `${importPrefix(importId)}/status/${name}`);
  return bytes ? (JSON.parse(bytes.toString('utf8')) as unknown) : undefined;
}

async function countPgdataObjects(importId: string): Promise<number> {
  let n = 0;
  for await (const _o of listObjects(s3, bucket, `${importPrefix(importId)}/pgdata/`)) n++;
  return n;
}

/**
 * Objects under the import's pgdata/ with their local file's full size. s3rver writes a PUT
 * straight to its final path, so one cut short by a kill is listed too, half written.
 */
async function countIntactPgdataObjects(importId: string, pgdata: string): Promise<number> {
  const prefix = `${importPrefix(importId)}/pgdata/`;
  let n = 0;
  for await (const o of listObjects(s3, bucket, prefix)) {
    const local = path.join(pgdata, ...o.key.slice(prefix.length).split('/'));
    if (existsSync(local) && statSync(local).size === o.size) n++;
  }
  return n;
}

async function expectSecretAbsent(importId: string): Promise<void> {
  const history = await raw.workflow.getHandle(importWorkflowId(importId)).fetchHistory();
  const { texts } = historyTexts(history);
  for (const secret of [PASSWORD, encodeURIComponent(PASSWORD), source.url()]) expect(texts.some((t) => t.includes(secret))).toBe(false);
  for await (const o of listObjects(s3, bucket, `${importPrefix(importId)}/`)) {
    if (o.key.includes('/pgdata/')) continue;
    const text = (await getObjectBytes(s3, bucket, o.key))!.toString('utf8');
    expect(text.includes(PASSWORD) || text.includes(encodeURIComponent(PASSWORD)), o.key).toBe(false);
  }
}

/** Names of the signals the import's workflow received, from its history. */
async function signalsOf(importId: string): Promise<string[]> {
  const history = await raw.workflow.getHandle(importWorkflowId(importId)).fetchHistory();
  return (history.events ?? []).flatMap((e) => (e.workflowExecutionSignaledEventAttributes?.signalName ? [e.workflowExecutionSignaledEventAttributes.signalName] : []));
}

/**
 * Runs the CLI on a pseudo-terminal (util-linux `script`), as at a user's terminal: its stderr is
 * a TTY, so progress is drawn as a bar. Returns the exit code and what the terminal showed, one
 * entry per line or redraw, escape sequences removed.
 */
async function runCliOnTerminal(args: string[], env: Record<string, string>): Promise<{ code: number; frames: string[] }> {
  const script = ['/usr/bin/script', '/bin/script'].find((p) => existsSync(p));
  if (!script) throw new Error('util-linux `script` is needed to run the CLI on a pseudo-terminal (Debian: apt-get install bsdutils)');
  // `script` runs a shell command: the text here is fixed, every value reaches it through the environment.
  const command = ['exec "$DC_NODE" "$DC_CLI"', ...args.map((_, i) => `"$DC_ARG_${i}"`)].join(' ');
  const argEnv = Object.fromEntries(args.map((a, i) => [`DC_ARG_${i}`, a]));
  const { code, stdout } = await new Promise<{ code: number; stdout: string }>((resolve) => {
    execFile(
      script,
      ['--quiet', '--flush', '--return', '--command', command, '/dev/null'],
      { env: { ...process.env, ...env, ...argEnv, SHELL: '/bin/sh', DC_NODE: process.execPath, DC_CLI: path.join(projectRoot, 'bin', 'durable-compute.mjs') }, cwd: projectRoot, timeout: 300_000, maxBuffer: 64 * 1024 * 1024 },
      (err, out) => resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout: out }),
    );
  });
  const frames = stdout
    // eslint-disable-next-line no-control-regex
    .split(/\r\n|\r|\n|\x1b\[1G/)
    // eslint-disable-next-line no-control-regex
    .map((f) => f.replace(/\x1b\[[0-9;?]*[A-Za-z]|\x1b[78]/g, '').trimEnd())
    .filter(Boolean);
  return { code, frames };
}

beforeAll(async () => {
  scratchRoot = mkdtempSync(path.join(os.tmpdir(), 'dc-imp-'));
  chownForPostgres(scratchRoot, false);
  keyFile = path.join(scratchRoot, 'import.key');
  writeFileSync(keyFile, `${generateLocalKey()}\n`, { mode: 0o600 });
  const config = testConfig({ DURABLE_COMPUTE_IMPORT_KEY_FILE: keyFile });
  const opened = await openClient(config);
  imports = new ImportClient(opened.client, config.temporal.controlPlaneTaskQueue, config.imports);
  closeClient = opened.close;
  rawConnection = await Connection.connect({ address: config.temporal.address });
  raw = new Client({ connection: rawConnection, namespace: config.temporal.namespace });
  s3 = createS3Client(config.s3);
  bucket = config.s3.bucket;

  // The large table (about 20 MB) goes up as a multipart upload.
  source = await startImportSource({ password: PASSWORD, database: DATABASE, size: { customers: 10_000, orders: 50_000, events: 150_000, eventPayloadRepeat: 2 } });
  expect(source.fingerprint.events).toMatch(/^150000:/);
}, 300_000);

afterAll(async () => {
  await killAllProcesses();
  await cleanupComputes();
  // Scratch servers and tools the killed workers left behind.
  for (const hostDir of scratchRoot ? readdirSync(scratchRoot, { withFileTypes: true }).filter((d) => d.isDirectory()) : []) {
    for (const work of readdirSync(path.join(scratchRoot, hostDir.name), { withFileTypes: true }).filter((d) => d.isDirectory())) {
      const dir = path.join(scratchRoot, hostDir.name, work.name);
      for (const pidFile of ['pg_dump.pid', 'pg_restore.pid']) if (existsSync(path.join(dir, pidFile))) await killRecordedGroup(path.join(dir, pidFile));
      await destroyScratch(install, dir).catch(() => undefined);
    }
  }
  await closeClient?.();
  await rawConnection?.close();
  s3?.destroy();
  await source?.server.stop();
  if (scratchRoot) rmSync(scratchRoot, { recursive: true, force: true });
}, 180_000);

/** Starts a compute on the imported timeline and returns the database's fingerprint as the compute sees it. */
async function fingerprintThroughCompute(tenantId: string, timelineId: string): Promise<Record<string, string>> {
  const { computes, close } = await testComputeClient();
  const computeId = uniqueId('imported');
  const pgdata = testPgdata();
  const onFinished: (() => Promise<void>)[] = [];
  try {
    const { spec } = await exampleSpecFor({ tenantId, timelineId });
    const computeWorker = await startComputeWorker(computeId, pgdata);
    onFinished.push(() => computeWorker.kill('SIGKILL'));
    await computes.start(computeId, spec, TEST_WORKFLOW_OPTIONS);
    const running = await computes.waitForRunning(computeId, 180_000);
    expect(running.start_lsn).toMatch(/^[0-9A-F]+\/[0-9A-F]+$/);
    // The imported cluster's pg_hba trusts its superuser on the local socket, as compute_ctl uses it.
    const pidLines = readFileSync(path.join(pgdata, 'postmaster.pid'), 'utf8').split('\n');
    const client = new pg.Client({ host: pidLines[4]!.trim(), port: Number(pidLines[3]), user: 'cloud_admin', database: DATABASE });
    await client.connect();
    try {
      return await importFingerprint(client);
    } finally {
      await client.end();
    }
  } finally {
    await computes.terminate(computeId, 'immediate').catch(() => undefined);
    for (const fn of onFinished) await fn();
    await close();
  }
}

describe.concurrent('import workflow on the real stack (the tests run concurrently, each with its own importer pool)', () => {
  it('imports a database: status shows every phase, the status objects are written, and a compute on the timeline has the same data', async ({ onTestFinished }) => {
    const pool = newPool(onTestFinished);
    const importId = pool.importId('happy');
    const tenantId = neonId();
    const timelineId = neonId();
    const host = newHost('happy');
    await pool.startImporter(host);
    const pageserver = createPageserverClient({ httpUrl: testConfig().storage.pageserverHttp!, token: testConfig().storage.authToken });
    const phases: string[] = [];
    // The workflow asks the pageserver only every 5 minutes: the stack's pageserver has to call the
    // stack's import_complete endpoint, which has to signal the workflow, for this to end sooner.
    await imports.start({ importId, sourceConnstring: source.url(), tenantId, timelineId, jobs: 2, options: pool.options({ pageserverPollSeconds: 300 }) });
    const waiting = imports.wait(importId, {
      timeoutMs: 240_000,
      intervalMs: 200,
      onUpdate: (s: ImportStatusView) => {
        if (phases.at(-1) !== s.phase) phases.push(s.phase);
      },
    });
    // (A failure of the wait is reported where it is awaited, not as an unhandled rejection meanwhile.)
    waiting.catch(() => undefined);
    await waitFor('the pageserver to finish', async () => ((await pageserver.getTimeline(tenantId, timelineId).catch(() => undefined))?.state === 'Active' ? true : undefined), 240_000, 200);
    const activeAt = Date.now();
    const done = await waiting;
    expect(Date.now() - activeAt).toBeLessThan(30_000);
    const pageserverStep = done.steps.find((st) => st.name === 'pageserverImport')!;
    expect(pageserverStep.ms).toBeLessThan(120_000);
    // The history shows why: the completion signal, sent by the stack's callback endpoint.
    expect(await signalsOf(importId)).toContain('importComplete');
    // The storage controller repeats the call until acknowledged: a late repeat signals nothing and is still acknowledged.
    const notice = JSON.stringify({ tenant_id: tenantId, timeline_id: timelineId, error: null });
    const repeat = await fetch(inject('stack').imports.callbackUrl!, { method: 'PUT', headers: { authorization: `Bearer ${testConfig().storage.authToken}` }, body: notice });
    expect(await repeat.json()).toEqual({ signalled: 0 });
    // Only the storage may call: without its token, nothing is signalled.
    const forged = await fetch(inject('stack').imports.callbackUrl!, { method: 'PUT', body: JSON.stringify({ tenant_id: tenantId, timeline_id: timelineId, error: 'forged' }) });
    expect(forged.status).toBe(401);
    expect(done).toMatchObject({ phase: 'done', error: null, database: DATABASE, host: host.hostId, local_run: 1, host_changes: [] });
    // Polling sees the phases in order (short ones may pass between two polls).
    const order = ['prepare', 'init', 'dump', 'restore', 'upload', 'pageserver_import', 'done'];
    expect(phases.map((p) => order.indexOf(p))).toEqual([...phases.map((p) => order.indexOf(p))].sort((a, b) => a - b));
    expect(phases).toContain('pageserver_import');
    expect(phases.at(-1)).toBe('done');
    expect(done.steps.map((st) => st.name)).toEqual([
      'prepareImportPrefix',
      'startPageserverImport',
      'claimImportHost',
      'initScratchPostgres',
      'dumpSource',
      'restoreDump',
      'stopScratchPostgres',
      'uploadPgdata',
      'writePgdataStatus',
      'pageserverImport',
      'activateImportedTimeline',
      'writeFastImportStatus',
    ]);
    expect(done.upload!.uploaded_files).toBe(done.upload!.files_total);
    expect(done.progress).toMatchObject({ bytesDone: done.upload!.bytes_total, bytesTotal: done.upload!.bytes_total });
    expect(done.start_lsn).toMatch(/^[0-9A-F]+\/[0-9A-F]+$/);
    expect(await statusObject(importId, 'pgdata')).toEqual({ done: true });
    expect(await statusObject(importId, 'fast_import')).toEqual({ command: 'pgdata', done: true });
    expect(await countPgdataObjects(importId)).toBe(done.upload!.files_total);
    await expectSecretAbsent(importId);
    // The host's working directory is gone once the data is in S3.
    expect(readdirSync(host.root, { withFileTypes: true }).filter((d) => d.isDirectory())).toEqual([]);

    expect((await pageserver.getTimeline(tenantId, timelineId)).state).toBe('Active');
    expect(await fingerprintThroughCompute(tenantId, timelineId)).toEqual(source.fingerprint);

    // The CLI shows the finished import; a completed import is not started again.
    const cliEnv = pool.cliEnv();
    const shown = await runCli(['import', 'status', '--import-id', importId, '--json'], { env: cliEnv });
    expect(shown.code).toBe(0);
    expect(JSON.parse(shown.stdout)).toMatchObject({ import_id: importId, phase: 'done', workflow_status: 'COMPLETED', progress: { bytesDone: done.upload!.bytes_total } });
    await expect(imports.start({ importId, sourceConnstring: source.url(), tenantId, timelineId })).rejects.toThrow(/is done/);
    await recordReplayFixtureIfAsked('import-pgdata', importWorkflowId(importId));
  }, 400_000);

  it('killed during the dump, the restore and the upload: the import completes, the dump ran once, and the upload sent only the missing files', async ({ onTestFinished }) => {
    const pool = newPool(onTestFinished);
    const importId = pool.importId('kill');
    const tenantId = neonId();
    const timelineId = neonId();
    const host = newHost('kill');
    const slow = await slowS3(15);
    onTestFinished(slow.close);
    const env = { S3_ENDPOINT: slow.endpoint };
    let worker = await pool.startImporter(host, env);
    // A heartbeat timeout far longer than a restart: each killed step must be resumed because the
    // restarted worker hands its predecessor's attempt back, not because Temporal gave up on it.
    await imports.start({ importId, sourceConnstring: source.url(), tenantId, timelineId, jobs: 2, options: pool.options({ heartbeatTimeoutSeconds: 60 }) });
    const workdir = await workdirOn(host.root);

    // Each tool's process group is frozen mid-work, then its worker dies; the same host comes back.
    for (const tool of ['pg_dump', 'pg_restore'] as const) {
      await freezeTool(path.join(workdir, `${tool}.pid`));
      await worker.proc.kill('SIGKILL');
      worker = await pool.startImporter(host, env);
    }

    // Killed once its heartbeats have told the server how far it got.
    const atKill = await waitFor(
      'upload progress in a heartbeat',
      async () => {
        const s = await imports.status(importId);
        return s.running_step?.name === 'uploadPgdata' && (s.progress?.filesDone ?? 0) >= 150 ? s.progress! : undefined;
      },
      180_000,
      100,
    );
    expect(atKill.filesTotal).toBeGreaterThan(atKill.filesDone!);
    expect(atKill.bytesTotal).toBeGreaterThan(0);
    process.kill(worker.proc.pid, 'SIGSTOP');
    await worker.proc.kill('SIGKILL');
    const uploadedAtKill = await countIntactPgdataObjects(importId, path.join(workdir, 'pgdata'));
    worker = await pool.startImporter(host, env);

    const done = await imports.wait(importId, { timeoutMs: 300_000 });
    expect(done).toMatchObject({ phase: 'done', local_run: 1, host_changes: [], host: host.hostId });
    const counts = await activityCounts(importId);
    // One local run: every step scheduled once; the killed ones needed a second attempt.
    for (const step of ['claimImportHost', 'initScratchPostgres', 'dumpSource', 'restoreDump', 'stopScratchPostgres', 'uploadPgdata']) {
      expect(counts[step], step).toMatchObject({ scheduled: 1, completed: 1 });
    }
    for (const step of ['dumpSource', 'restoreDump', 'uploadPgdata']) {
      expect(counts[step]!.attempts, step).toEqual([2]);
      // The restarted worker handed the dead one's attempt back at once (no wait for the heartbeat timeout).
      expect(counts[step]!.previousFailures, `${step}; the last worker said:\n${worker.proc.output()}`).toEqual(['ImporterRestarted']);
    }
    // The dump ran (for real) once: the restore and upload kills did not redo it.
    expect(done.dump!.skipped).toBe(false);
    const upload = done.upload!;
    expect(upload.resumed_from!.files_done).toBeGreaterThanOrEqual(atKill.filesDone!);
    expect(upload.skipped_files).toBeGreaterThanOrEqual(uploadedAtKill);
    expect(upload.uploaded_files + upload.skipped_files).toBe(upload.files_total);
    expect(upload.uploaded_files).toBeLessThan(upload.files_total);
    expect(await countPgdataObjects(importId)).toBe(upload.files_total);
    // The restore started over in a clean database: the data is exactly the source's.
    expect(await fingerprintThroughCompute(tenantId, timelineId)).toEqual(source.fingerprint);
  }, 400_000);

  it('a host that stays gone: the local steps restart on another host, and the status says so', async ({ onTestFinished }) => {
    const pool = newPool(onTestFinished);
    const importId = pool.importId('lost');
    const tenantId = neonId();
    const timelineId = neonId();
    const first = newHost('lost-a');
    const worker = await pool.startImporter(first);
    await imports.start({ importId, sourceConnstring: source.url(), tenantId, timelineId, jobs: 2, options: pool.options({ hostLostAfterSeconds: 8 }) });
    const workdir = await workdirOn(first.root);
    await freezeTool(path.join(workdir, 'pg_restore.pid'));
    await worker.proc.kill('SIGKILL');
    const second = newHost('lost-b');
    await pool.startImporter(second);

    const done = await imports.wait(importId, { timeoutMs: 300_000 });
    expect(done).toMatchObject({ phase: 'done', host: second.hostId, local_run: 2 });
    expect(done.host_changes).toHaveLength(1);
    expect(done.host_changes[0]).toMatchObject({ from: first.hostId, to: second.hostId });
    expect(done.host_changes[0]!.reason).toMatch(/no answer from host .* during restore/);
    const counts = await activityCounts(importId);
    expect(counts.claimImportHost).toMatchObject({ scheduled: 2, completed: 2 });
    expect(counts.dumpSource).toMatchObject({ scheduled: 2, completed: 2 });
    expect(counts.cleanImportData).toMatchObject({ scheduled: 1, completed: 1 });
    const description = await raw.workflow.getHandle(importWorkflowId(importId)).describe();
    expect(description.status.name).toBe('COMPLETED');
    expect(await statusObject(importId, 'fast_import')).toEqual({ command: 'pgdata', done: true });
  }, 400_000);

  it('a wrong source password: a clear error with the connection string masked, status/fast_import says why, the timeline is deleted', async ({ onTestFinished }) => {
    const pool = newPool(onTestFinished);
    const importId = pool.importId('badpw');
    const tenantId = neonId();
    const timelineId = neonId();
    const wrong = 'not-the-password-7731';
    const badpwHost = newHost('badpw');
    await pool.startImporter(badpwHost);
    // Through the CLI, the connection string on stdin (never on the command line).
    const cliEnv = pool.cliEnv();
    const cli = await runCli(['import', 'start', '--import-id', importId, '--source', '-', '--tenant', tenantId, '--timeline', timelineId, '--wait'], {
      env: cliEnv,
      input: `${source.url(wrong)}\n`,
      timeoutMs: 180_000,
    });
    expect(cli.code).not.toBe(0);
    const failure = { message: cli.stderr };
    expect(failure.message).toMatch(/failed: dump failed: pg_dump failed \(exit code 1\)/);
    expect(failure.message).toMatch(/password authentication failed for user "importer"/);
    expect(failure.message).toContain(`postgresql://importer:********@127.0.0.1:${source.server.port}/${DATABASE}`);
    expect(cli.stdout + cli.stderr).not.toContain(wrong);
    const status = await imports.status(importId);
    expect(status).toMatchObject({ phase: 'failed', workflow_status: 'FAILED' });
    expect(status.error).toContain('********');
    const fastImport = (await statusObject(importId, 'fast_import')) as { command: string; done: boolean; error: string };
    expect(fastImport).toMatchObject({ command: 'pgdata', done: false });
    expect(fastImport.error).toMatch(/password authentication failed/);
    expect(fastImport.error).not.toContain(wrong);
    expect(await statusObject(importId, 'pgdata')).toBeUndefined();
    await expect(createPageserverClient({ httpUrl: testConfig().storage.pageserverHttp!, token: testConfig().storage.authToken }).getTimeline(tenantId, timelineId)).rejects.toMatchObject({ status: 404 });
    // A password is not a transient problem: one attempt only.
    expect((await activityCounts(importId)).dumpSource!.attempts).toEqual([1]);
    const history = await raw.workflow.getHandle(importWorkflowId(importId)).fetchHistory();
    expect(historyTexts(history).texts.some((t) => t.includes(wrong))).toBe(false);
    await expectSecretAbsent(importId);

    // A failed import may be started again (with the right password), from a clean prefix. This
    // time as a user would on the dev stack: `import start --wait` on a terminal, with nothing but
    // the stack (its own importer worker, its key, its callback endpoint), showing the progress bar.
    const sourceFile = path.join(scratchRoot, `${importId}.source`);
    writeFileSync(sourceFile, `${source.url()}\n`, { mode: 0o600 });
    const onTerminal = await runCliOnTerminal(['import', 'start', '--import-id', importId, '--source-file', sourceFile, '--tenant', tenantId, '--timeline', timelineId, '--jobs', '2', '--wait'], {
      ...testEnv(),
      DURABLE_COMPUTE_STACK_DIR: inject('stack').stackDir,
    });
    expect(onTerminal.code, onTerminal.frames.join('\n')).toBe(0);
    // cli-progress redraws one line: every frame names the phase and the bytes; the upload's shows its total.
    const frames = onTerminal.frames.filter((f) => /^\S+\s+\|[█░]{40}\| \d+% /.test(f));
    expect(frames.some((f) => /^upload\s+\|[█░]{40}\| \d+% \d+\.\d MiB \/ \d+\.\d MiB$/.test(f)), frames.join('\n')).toBe(true);
    expect(frames.at(-1)).toMatch(/^done\s+\|█{40}\| 100% (\d+\.\d MiB) \/ \1$/);
    expect(onTerminal.frames).toContain('phase:     done (workflow completed)');
    expect(onTerminal.frames.join('\n')).not.toContain(PASSWORD);
    const retried = await imports.status(importId);
    expect(retried).toMatchObject({ phase: 'done', error: null, local_run: 1 });
    // Claimed by the stack's own importer, not the test's; ended by the stack's callback.
    expect(retried.host).toEqual(expect.any(String));
    expect(retried.host).not.toBe(badpwHost.hostId);
    expect(await statusObject(importId, 'fast_import')).toEqual({ command: 'pgdata', done: true });
    expect(await signalsOf(importId)).toContain('importComplete');
  }, 400_000);

  it('a cancelled import deletes its timeline, removes its working directory and records the cancellation', async ({ onTestFinished }) => {
    const pool = newPool(onTestFinished);
    const importId = pool.importId('cancel');
    const tenantId = neonId();
    const timelineId = neonId();
    const host = newHost('cancel');
    await pool.startImporter(host);
    await imports.start({ importId, sourceConnstring: source.url(), tenantId, timelineId, jobs: 2, options: pool.options() });
    // Cancelled while pg_restore runs (held still, so the cancellation surely lands in the restore).
    await freezeTool(path.join(await workdirOn(host.root), 'pg_restore.pid'));
    const pageserver = createPageserverClient({ httpUrl: testConfig().storage.pageserverHttp!, token: testConfig().storage.authToken });
    expect((await pageserver.getTimeline(tenantId, timelineId)).state).toBe('Loading');
    const final = await imports.cancel(importId);
    expect(final).toMatchObject({ phase: 'cancelled', workflow_status: 'CANCELLED' });
    expect(final.error).toMatch(/cancelled during restore/);
    await expect(pageserver.getTimeline(tenantId, timelineId)).rejects.toMatchObject({ status: 404 });
    expect(await statusObject(importId, 'fast_import')).toMatchObject({ command: 'pgdata', done: false, error: expect.stringMatching(/cancelled/) });
    expect(readdirSync(host.root, { withFileTypes: true }).filter((d) => d.isDirectory())).toEqual([]);
    await expect(imports.cancel(importId)).rejects.toThrow(/has already ended \(cancelled\)/);
    await expect(imports.status(uniqueId('no-such-import'))).rejects.toThrow(/no import with ID/);
  }, 400_000);
});
