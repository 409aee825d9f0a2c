/**
 * The fast-import benchmark's workflow runs, (c) and (d): `import start` on the private stack with
 * its own importer worker (SIGKILLed half way through the upload for (d)), the dev pageserver's
 * import, and a compute on the new timeline; timings from the workflow's history.
 */
import { randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { chownForPostgres } from '../common/pg-identity';
import { createPageserverClient } from '../drivers/pageserver';
import { writePgdataDone } from '../drivers/importer/status';
import { exampleComputeConfig } from '../client/example-spec';
import type { ImportStatusView } from '../client/import-client';
import { freePort } from '../dev/processes';
import { importPrefix } from '../model/import-status';
import { startProcess, type WorkerProcess } from '../dev/child-processes';
import { type Bench, DATABASE, finish, jobs, loadAverage, log, type MethodResult, MiB, pgbenchFingerprint, prefixSize, skip } from './import-common';

/**
 * The dev pageserver's import of what (a) uploaded, started and timed as the workflow starts its
 * own: the import is requested first, then the commit marker written; timed from the marker until
 * the timeline is active. (a) followed by this does what the workflow does end to end, with
 * (a)'s tools: the reference point for the workflow's end-to-end figure.
 */
export async function pageserverImportOf(ctx: Bench, prefix: string): Promise<{ seconds: number; phases?: PageserverPhases }> {
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
export function startImporter(ctx: Bench, hostId: string): Promise<WorkerProcess> {
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

export function randomNeonId(): string {
  return randomUUID().replaceAll('-', '');
}

/** A compute on the imported timeline, as a user would start one; returns what it sees. */
export async function fingerprintThroughCompute(ctx: Bench, tenantId: string, timelineId: string): Promise<string> {
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

export interface WorkflowRun {
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

export interface PageserverPhases {
  /** From the commit marker's write (as the workflow's status shows it) until the pageserver noticed it. */
  markerSeenAfterSeconds: number;
  downloadSeconds: number;
  imageSeconds: number;
}

/** The dev pageserver's timings for one import, from its log. */
export function pageserverPhases(ctx: Bench, tenantId: string, timelineId: string, markerAt: number): PageserverPhases | undefined {
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
export async function historyTimes(ctx: Bench, importId: string): Promise<{ markerAt?: number; closedAt?: number }> {
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
export async function lastAttemptStart(ctx: Bench, importId: string, activityType: string): Promise<number | undefined> {
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

/** Completed activities per type, from the workflow's history (event types are not encrypted). */
export async function completedActivities(ctx: Bench, importId: string): Promise<Record<string, number>> {
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
export async function methodWorkflow(ctx: Bench, killAfterUploadSeconds?: number): Promise<WorkflowRun> {
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
