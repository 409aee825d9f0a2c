/**
 * Read-replica lag and promote time, on a private embedded stack (Temporal dev server, s3rver, dev
 * pageserver, 3 dev safekeepers, control-plane worker) with a stock primary and a stock Replica
 * compute, each with its own compute worker process as inside a VM. The replica streams from the
 * safekeepers (dev/storage/safekeeper/physical-replication.ts), never from the primary.
 *
 *   - single commits: one row per transaction, one at a time; the clock runs from COMMIT returning
 *     on the primary (the safekeepers already hold it) to the row being visible on the replica,
 *     polled every millisecond over an open connection;
 *   - bulk: one transaction of BENCH_REPLICA_BULK_ROWS rows, same clock;
 *   - promote: the primary terminated (fast), then `compute promote` with its terminate LSN.
 *
 * Writes bench/results/replica-lag.md.
 *   node --import tsx bench/replica-lag.ts   (BENCH_REPLICA_COMMITS=200, BENCH_REPLICA_BULK_ROWS=100000)
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { ComputeClient } from '../client/compute-client';
import { openClient } from '../client/context';
import { exampleComputeConfig } from '../client/example-spec';
import { createTimeline } from '../client/timelines';
import { freePort } from '../dev/processes';
import { stackDown, type StackEndpoints } from '../dev/stack';
import { startPrivateStack, stackConfig, stackEnv } from '../dev/private-stack';
import { percentiles, type Percentiles } from './stats';

const repoRoot = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const COMMITS = Number(process.env.BENCH_REPLICA_COMMITS ?? 200);
const BULK_ROWS = Number(process.env.BENCH_REPLICA_BULK_ROWS ?? 100_000);
const WORKFLOW_OPTIONS = { watchReportSeconds: 5, watchHeartbeatTimeoutSeconds: 20 };

async function startComputeWorker(stack: StackEndpoints, computeId: string, pgdata: string): Promise<ChildProcess> {
  const child = spawn(process.execPath, [path.join(repoRoot, 'bin/durable-compute.mjs'), 'worker', 'compute', '--compute-id', computeId, '--pgdata', pgdata, '--http-port', '0', '--http-host', '127.0.0.1'], {
    env: stackEnv(stack),
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
  return child;
}

async function connect(port: number): Promise<pg.Client> {
  const c = new pg.Client({ host: '127.0.0.1', port, user: 'alice', password: 'alice-dev-password', database: 'app' });
  await c.connect();
  return c;
}

/** Milliseconds from now until `id` is visible on the replica. */
async function visibleAfter(replica: pg.Client, id: number, timeoutMs = 60_000): Promise<number> {
  const started = performance.now();
  for (;;) {
    const r = await replica.query('select 1 from t where id = $1', [id]);
    if (r.rowCount === 1) return performance.now() - started;
    if (performance.now() - started > timeoutMs) throw new Error(`row ${id} not visible on the replica within ${timeoutMs} ms`);
    await sleep(1);
  }
}

function fmt(p: Percentiles): string {
  return [p.p50, p.p90, p.p99, p.max].map((v) => v.toFixed(1)).join(' | ');
}

async function main(): Promise<void> {
  const root = mkdtempSync(path.join(os.tmpdir(), 'dc-bench-replica-'));
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
    const specFor = async (mode: 'Primary' | 'Replica') => {
      const port = await freePort();
      const raw = exampleComputeConfig({
        tenantId,
        timelineId,
        pageserverPg: stack.pageserver.pg,
        safekeepers: stack.safekeepers.map((s) => s.pg),
        port,
        endpointId: `bench-${mode.toLowerCase()}`,
        storageAuthToken: config.storage.authToken!,
      }) as { spec: Record<string, unknown> };
      raw.spec.mode = mode;
      return { raw, port };
    };
    const pgdataFor = (name: string) => {
      mkdirSync(path.join(root, name), { mode: 0o755 });
      return path.join(root, name, 'pgdata');
    };
    const primary = await specFor('Primary');
    const replica = await specFor('Replica');
    workers.push(await startComputeWorker(stack, 'bench-primary', pgdataFor('primary')));
    workers.push(await startComputeWorker(stack, 'bench-replica', pgdataFor('replica')));
    await computes.start('bench-primary', primary.raw, WORKFLOW_OPTIONS);
    await computes.waitForRunning('bench-primary');
    const writer = await connect(primary.port);
    await writer.query('create table t (id int primary key, v text)');
    await computes.start('bench-replica', replica.raw, WORKFLOW_OPTIONS);
    await computes.waitForRunning('bench-replica');
    const reader = await connect(replica.port);

    // Warm-up: the first rows also pay for connections and caches.
    for (let id = -10; id < 0; id++) {
      await writer.query('insert into t values ($1, $2)', [id, 'warm-up']);
      await visibleAfter(reader, id);
    }
    const single: number[] = [];
    for (let id = 1; id <= COMMITS; id++) {
      await writer.query('insert into t values ($1, $2)', [id, 'x'.repeat(100)]);
      single.push(await visibleAfter(reader, id));
    }
    console.log(`single commits: p50 ${percentiles(single).p50.toFixed(1)} ms`);

    const bulkStart = performance.now();
    await writer.query(`insert into t select g, repeat('y', 100) from generate_series(1000000, ${1_000_000 + BULK_ROWS - 1}) g`);
    const bulkCommitMs = performance.now() - bulkStart;
    const bulkVisibleMs = await visibleAfter(reader, 1_000_000 + BULK_ROWS - 1, 300_000);
    const bulkBytes = (await writer.query<{ b: string }>("select pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint as b")).rows[0]!.b;
    console.log(`bulk: commit ${bulkCommitMs.toFixed(0)} ms, visible ${bulkVisibleMs.toFixed(0)} ms later`);

    const status = await computes.waitFor('bench-replica', (s) => s.replication?.lag_bytes === 0, 60_000);
    await writer.end();
    await reader.end();

    const terminated = await computes.terminate('bench-primary', 'fast');
    const promoteStarted = performance.now();
    const promoted = await computes.promote('bench-replica', { safekeepersLsn: terminated.lsn! });
    const promoteMs = performance.now() - promoteStarted;
    if (promoted.status !== 'completed') throw new Error(`promote ${promoted.status}`);
    const after = await connect(replica.port);
    await after.query("insert into t values (0, 'after the promote')");
    await after.end();

    const s = percentiles(single);
    const lines = [
      '## Read replica lag (bench/replica-lag.ts)',
      '',
      `${new Date().toISOString()}, ${os.cpus().length} cores. A stock primary and a stock Replica compute on the embedded stack; the replica streams`,
      "from the dev safekeepers (only WAL up to their commit LSN), not from the primary. Clock: from COMMIT returning on the primary",
      '(a quorum of safekeepers holds it) to the row being visible on the replica, polled every 1 ms. The path: the pusher\'s next commit frame',
      "raises the safekeepers' commit LSN, the safekeeper's sender sees it within 5 ms (it polls), the walreceiver writes and flushes, the startup process replays.",
      '',
      '| what | p50 ms | p90 ms | p99 ms | max ms |',
      '|---|---:|---:|---:|---:|',
      `| single-row commit, ${COMMITS} one after another | ${fmt(s)} |`,
      `| one transaction of ${BULK_ROWS} rows (commit took ${bulkCommitMs.toFixed(0)} ms) | ${bulkVisibleMs.toFixed(1)} | | | |`,
      '',
      `The replica's status after the writes: replay ${status.replication!.replay_lsn}, safekeepers' commit ${status.replication!.commit_lsn}, lag ${status.replication!.lag_bytes} bytes`,
      `(WAL written in all: ${(Number(bulkBytes) / 1024 / 1024).toFixed(0)} MiB of LSN space).`,
      '',
      `Promote after a fast terminate of the primary (\`compute promote --safekeepers-lsn ${terminated.lsn}\`): ${promoteMs.toFixed(0)} ms end to end;`,
      `catch-up ${promoted.lsn_wait_time_ms} ms, stop the standby and start it as the primary with the WAL pusher ${promoted.pg_promote_time_ms} ms,`,
      `roles and databases ${promoted.reconfigure_time_ms} ms.`,
      '',
    ];
    writeFileSync(path.join(repoRoot, 'bench', 'results', 'replica-lag.md'), lines.join('\n'));
    console.log(lines.join('\n'));
    failed = false;
  } finally {
    // Postgres outlives its worker (as in a VM): stop it through the workflow first.
    for (const id of ['bench-replica', 'bench-primary']) await computes.terminate(id, 'immediate').catch(() => undefined);
    for (const w of workers) w.kill('SIGTERM');
    await close();
    await stackDown(path.join(root, 'stack'));
    if (failed) console.error(`logs kept in ${root}`);
    else rmSync(root, { recursive: true, force: true });
  }
}

await main();
