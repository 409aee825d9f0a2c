/**
 * Computes for the chaos rows: timelines, PGDATA directories, compute workers (with failpoints and
 * the release directory), and the writer client that counts the commits it saw acknowledged.
 */
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { exampleComputeConfig } from '../../client/example-spec';
import { createTimeline } from '../../client/timelines';
import { freePort } from '../../dev/processes';
import { startProcess, type WorkerProcess } from '../../dev/child-processes';
import type { ChaosStack } from './chaos-stack';

/**
 * Short watch rounds so a dead Postgres is noticed within seconds; a heartbeat timeout long enough
 * for a killed compute worker to be replaced on this loaded 2-core machine (a worker takes about
 * 10 s to start here): with the tests' 5 s, the watch's retry times out waiting for the new worker.
 */
export const CHAOS_WORKFLOW_OPTIONS = { watchReportSeconds: 3, watchHeartbeatTimeoutSeconds: 30 };

export const newId = (prefix: string) => `${prefix}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 7)}`;
export const newNeonId = () => [...crypto.getRandomValues(new Uint8Array(16))].map((b) => b.toString(16).padStart(2, '0')).join('');

export interface ChaosCompute {
  computeId: string;
  pgdata: string;
  port: number;
  spec: Record<string, unknown>;
  tenantId: string;
  timelineId: string;
  /** Where a paused failpoint is let go: a file named after it. */
  releaseDir: string;
}

const dirs: string[] = [];

export async function newTimeline(stack: ChaosStack): Promise<{ tenantId: string; timelineId: string }> {
  const tenantId = newNeonId();
  const timelineId = newNeonId();
  await createTimeline(stack.config.storage, tenantId, { new_timeline_id: timelineId, pg_version: 15 });
  return { tenantId, timelineId };
}

export async function newCompute(stack: ChaosStack, timeline: { tenantId: string; timelineId: string }, name: string): Promise<ChaosCompute> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'dc-chaos-compute-'));
  chmodSync(dir, 0o755);
  dirs.push(dir);
  const releaseDir = path.join(dir, 'release');
  mkdirSync(releaseDir);
  const port = await freePort();
  const computeId = newId(name);
  const spec = exampleComputeConfig({
    ...timeline,
    pageserverPg: stack.endpoints.pageserver.pg,
    safekeepers: stack.endpoints.safekeepers.map((sk) => sk.pg),
    port,
    endpointId: newId('ep'),
    storageAuthToken: stack.config.storage.authToken,
  });
  return { computeId, pgdata: path.join(dir, 'pgdata'), port, spec, ...timeline, releaseDir };
}

export function release(compute: ChaosCompute, failpoint: string): void {
  writeFileSync(path.join(compute.releaseDir, failpoint), '');
}

export function startComputeWorker(stack: ChaosStack, compute: ChaosCompute, failpoints: string[] = []): Promise<WorkerProcess> {
  const armed: Record<string, string> = failpoints.length
    ? { DURABLE_COMPUTE_FAILPOINTS: failpoints.join(','), DURABLE_COMPUTE_ENABLE_FAILPOINTS: '1', DURABLE_COMPUTE_FAILPOINT_RELEASE_DIR: compute.releaseDir }
    : {};
  return startProcess(
    'bin/durable-compute.mjs',
    ['worker', 'compute', '--compute-id', compute.computeId, '--pgdata', compute.pgdata, '--http-port', '0', '--http-host', '127.0.0.1'],
    { env: { ...stack.env, ...armed }, readyLine: /compute worker ready/, timeoutMs: 300_000 },
  );
}

/** How often each startup step finished, per worker output, in order of appearance. */
export function stepsDone(outputs: string[]): string[] {
  return outputs.flatMap((o) => [...o.matchAll(/startup step (\w+) done/g)].map((m) => m[1]!));
}

export interface WriterResult {
  acknowledged: number[];
  /** Commits sent whose answer never came (the connection died): either outcome is correct. */
  unknown: number[];
  errors: number;
}

/** A client inserting one row per commit, autocommit, reconnecting on errors, until stopped. */
export function startWriter(compute: ChaosCompute, table: string): { stop: () => Promise<WriterResult> } {
  let running = true;
  const result: WriterResult = { acknowledged: [], unknown: [], errors: 0 };
  const connect = async () => {
    const client = new pg.Client({ host: '127.0.0.1', port: compute.port, user: 'alice', password: 'alice-dev-password', database: 'app', connectionTimeoutMillis: 3000 });
    client.on('error', () => undefined);
    await client.connect();
    await client.query(`CREATE TABLE IF NOT EXISTS ${pg.escapeIdentifier(table)} (id int PRIMARY KEY, at timestamptz DEFAULT now())`);
    return client;
  };
  const loop = (async () => {
    let next = 1;
    let client: pg.Client | undefined;
    while (running) {
      try {
        client ??= await connect();
        const id = next++;
        try {
          await client.query(`INSERT INTO ${pg.escapeIdentifier(table)} (id) VALUES ($1)`, [id]);
          result.acknowledged.push(id);
        } catch (err) {
          result.unknown.push(id);
          throw err;
        }
        await sleep(20);
      } catch {
        result.errors += 1;
        await client?.end().catch(() => undefined);
        client = undefined;
        await sleep(250);
      }
    }
    await client?.end().catch(() => undefined);
  })();
  return {
    async stop() {
      running = false;
      await loop;
      return result;
    },
  };
}

/** The ids in `table` on a running compute. */
export async function rowsIn(compute: ChaosCompute, table: string): Promise<Set<number>> {
  const client = new pg.Client({ host: '127.0.0.1', port: compute.port, user: 'alice', password: 'alice-dev-password', database: 'app' });
  await client.connect();
  try {
    const { rows } = await client.query<{ id: number }>(`SELECT id FROM ${pg.escapeIdentifier(table)}`);
    return new Set(rows.map((r) => r.id));
  } finally {
    await client.end();
  }
}

function livePid(file: string, command: string): number | undefined {
  try {
    const pid = Number.parseInt(readFileSync(file, 'utf8').split('\n')[0] ?? '', 10);
    if (!Number.isInteger(pid) || pid <= 0) return undefined;
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(command) ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** Stops what a compute left running (postmaster, WAL pusher) and removes its directory. */
export async function cleanupCompute(compute: ChaosCompute): Promise<void> {
  for (const [file, signal, command] of [
    ['postmaster.pid', 'SIGQUIT', 'postgres'],
    ['wal_pusher.pid', 'SIGKILL', 'wal-pusher'],
  ] as const) {
    const pid = livePid(path.join(compute.pgdata, file), command);
    if (pid === undefined) continue;
    process.kill(pid, signal);
    for (let i = 0; i < 100 && livePid(path.join(compute.pgdata, file), command) === pid; i++) await sleep(100);
  }
  rmSync(path.dirname(compute.pgdata), { recursive: true, force: true });
}
