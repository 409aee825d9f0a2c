/**
 * Dump-restore import benchmark: a pgbench database copied from a source Postgres into a
 * destination Postgres, Neon's way against the durable workflow's.
 *
 *   node --import tsx bench/import-dump-restore.ts     (or BENCH=import-dump-restore npm run bench)
 *
 *   (a) Neon fast_import's dump-restore: `pg_dump -Fd -jN` then `pg_restore -jN` with its options,
 *       one uninterrupted run (Neon starts over after any failure)
 *   (b) `import start --mode dump-restore`: the workflow (Temporal, control-plane worker, one
 *       importer worker process): check, the same pg_dump, the restore table by table
 *   (c) (b) again with the importer's VM "dying" half way through the data phase (by the time (b)'s
 *       data phase took): the worker and its pg_restore processes SIGKILLed, the worker restarted
 *       at once; the resumed restore keeps finished tables and copies the one in flight again
 *
 * Re-copied data is measured in the destination: rows inserted (pg_stat_user_tables.n_tup_ins,
 * which counts rolled-back inserts too) beyond the rows the tables hold.
 *
 * CPU seconds, as the machine is shared and wall time moves with other work: the two Postgres
 * servers' ended backends (their postmaster's reaped children) and this process's reaped children
 * (pg_dump and pg_restore in (a); the importer worker with its pg_dump, pg_restore and psql in (b)
 * and (c)). The Temporal server, control-plane worker and servers' background processes are not in it.
 *
 * BENCH_DR_SCALE  pgbench scale factor (default 100, about 1.5 GB)
 * BENCH_DR_JOBS   parallel jobs (default 2)
 * BENCH_DR_OUT    results file (default bench/results/import-dump-restore.md)
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import pg from 'pg';
import { COMMON_DUMP_RESTORE_OPTIONS } from '../drivers/importer/dump-restore';
import { readRestoreJournal } from '../drivers/importer/restore-journal';
import { generateLocalKey } from '../drivers/secrets/local-aes';
import { openClient } from '../client/context';
import { ImportClient, type ImportStatusView } from '../client/import-client';
import { loadConfig } from '../common/config';
import { projectRoot } from '../common/paths';
import { findPostgres, pgBin } from '../common/pg-binaries';
import { chownForPostgres } from '../common/pg-identity';
import { devPayloadKeyFile, devS3Credentials, devStorageTokenFile, stackDown } from '../dev/stack';
import { startThrowawayPostgres, type ThrowawayPostgres } from '../dev/throwaway-postgres';
import { startProcess, type WorkerProcess } from '../dev/child-processes';
import { buildCli } from '../deploy/build';
import type { Client } from '@temporalio/client';
import proto from '@temporalio/proto';
import { importWorkflowId } from '../model/import-status';
import { startPrivateStack, stackEnv } from '../dev/private-stack';

const run = promisify(execFile);
const MiB = 1024 * 1024;
const scale = Number(process.env.BENCH_DR_SCALE ?? 100);
const jobs = Number(process.env.BENCH_DR_JOBS ?? 2);
const outFile = process.env.BENCH_DR_OUT ?? path.join(projectRoot, 'bench', 'results', 'import-dump-restore.md');
const TABLES = ['pgbench_accounts', 'pgbench_branches', 'pgbench_tellers', 'pgbench_history'];

/** User + system CPU seconds of a process and its reaped children (/proc/<pid>/stat fields 14-17). */
function cpuOf(pid: number | 'self'): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // fields[0] is field 3 (state): utime, stime, cutime, cstime are fields 14-17.
  return [11, 12, 13, 14].reduce((n, i) => n + Number(fields[i]), 0) / 100;
}

function postmasterPid(server: ThrowawayPostgres): number {
  return Number(readFileSync(path.join(server.dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
}

function log(line: string): void {
  console.log(`${new Date().toISOString()} ${line}`);
}

async function fingerprint(server: ThrowawayPostgres, database: string): Promise<string> {
  const { rows } = await server.query<{ f: string }>(
    `SELECT (SELECT count(*) FROM pgbench_accounts) || '/' || (SELECT sum(abalance) + sum(aid) FROM pgbench_accounts)
      || '/' || (SELECT count(*) FROM pgbench_branches) || '/' || (SELECT count(*) FROM pgbench_tellers)
      || '/' || (SELECT count(*) FROM pg_indexes WHERE tablename LIKE 'pgbench_%') AS f`,
    undefined,
    database,
  );
  return rows[0]!.f;
}

/** Rows inserted into the destination's tables (rolled-back ones included) and rows they hold. */
async function insertedAndHeld(server: ThrowawayPostgres, database: string): Promise<{ inserted: number; held: number }> {
  let inserted = 0;
  let held = 0;
  for (const t of TABLES) {
    const { rows } = await server.query<{ ins: string; n: string }>(
      `SELECT (SELECT n_tup_ins FROM pg_stat_user_tables WHERE relname = $1)::text AS ins, (SELECT count(*) FROM ${pg.escapeIdentifier(t)})::text AS n`,
      [t],
      database,
    );
    inserted += Number(rows[0]!.ins);
    held += Number(rows[0]!.n);
  }
  return { inserted, held };
}

interface Row {
  method: string;
  seconds: number;
  dumpSeconds?: number;
  restoreSeconds?: number;
  dataSeconds?: number;
  recopiedRows: number;
  heldRows: number;
  cpuSeconds: number;
  note: string;
}

/** Gaps of more than `minMs` between consecutive history events, as "A → B 1.2 s". */
async function historyPauses(client: Client, workflowId: string, minMs: number): Promise<string[]> {
  const events = (await client.workflow.getHandle(workflowId).fetchHistory()).events ?? [];
  type Event = (typeof events)[number];
  const at = (e: Event) => Number(e.eventTime!.seconds) * 1000 + Math.floor((e.eventTime!.nanos ?? 0) / 1e6);
  const name = (e: Event) => String(proto.temporal.api.enums.v1.EventType[e.eventType!] ?? e.eventType).replace(/^EVENT_TYPE_/, '');
  const pauses: string[] = [];
  for (let i = 1; i < events.length; i++) {
    const gap = at(events[i]!) - at(events[i - 1]!);
    if (gap > minMs) pauses.push(`${name(events[i - 1]!)} → ${name(events[i]!)} ${(gap / 1000).toFixed(1)} s`);
  }
  return pauses;
}

async function main(): Promise<void> {
  const install = findPostgres({ pgBinDir: process.env.PG_BIN_DIR });
  const root = mkdtempSync(path.join(os.tmpdir(), 'dc-bench-dr-'));
  chownForPostgres(root, false);
  const stackDir = path.join(root, 'stack');
  mkdirSync(stackDir, { recursive: true, mode: 0o755 });
  let source: ThrowawayPostgres | undefined;
  let dest: ThrowawayPostgres | undefined;
  const workers: WorkerProcess[] = [];
  const closers: (() => Promise<void>)[] = [];
  try {
    log('starting a private dev stack...');
    const stack = await startPrivateStack(stackDir);
    const keyFile = path.join(root, 'import.key');
    writeFileSync(keyFile, `${generateLocalKey()}\n`, { mode: 0o600 });
    const env = { ...stackEnv(stack), DURABLE_COMPUTE_IMPORT_KEY_FILE: keyFile, ...(process.env.PG_BIN_DIR ? { PG_BIN_DIR: process.env.PG_BIN_DIR } : {}) };
    const config = loadConfig(env, {
      temporal: stack.temporal,
      s3: { ...stack.s3, ...devS3Credentials() },
      pageserver: stack.pageserver,
      safekeepers: stack.safekeepers,
      payloadKeyFile: devPayloadKeyFile(stackDir),
      storageAuthTokenFile: devStorageTokenFile(stackDir),
    });
    const opened = await openClient(config);
    closers.push(opened.close);
    const imports = new ImportClient(opened.client, config.temporal.controlPlaneTaskQueue, config.imports);

    const tuned = { shared_buffers: "'512MB'", max_wal_size: "'4GB'", checkpoint_timeout: "'30min'" };
    source = await startThrowawayPostgres(tuned);
    dest = await startThrowawayPostgres(tuned);
    await source.query('CREATE DATABASE bench');
    log(`pgbench -i -s ${scale}...`);
    await run(pgBin(install, 'pgbench'), ['-i', '-q', '-s', String(scale), '-h', '127.0.0.1', '-p', String(source.port), '-U', 'postgres', 'bench'], { maxBuffer: 64 * MiB });
    const sourceFp = await fingerprint(source, 'bench');
    const sourceBytes = Number((await source.query<{ n: string }>("SELECT pg_database_size('bench') AS n")).rows[0]!.n);
    log(`source ready: ${(sourceBytes / MiB).toFixed(0)} MiB, ${sourceFp}`);
    const sourceUrl = `postgresql://postgres@127.0.0.1:${source.port}/bench`;
    const rows: Row[] = [];
    const cpuNow = () => cpuOf('self') + cpuOf(postmasterPid(source!)) + cpuOf(postmasterPid(dest!));
    const settle = async () => {
      await dest!.query('CHECKPOINT');
      await source!.query('CHECKPOINT');
    };

    // (a) Neon's way.
    {
      await dest.query('CREATE DATABASE plain');
      await settle();
      const dumpDir = path.join(root, 'plain-dump');
      const cpu0 = cpuNow();
      const t0 = performance.now();
      await run(pgBin(install, 'pg_dump'), ['--format=directory', `--jobs=${jobs}`, ...COMMON_DUMP_RESTORE_OPTIONS, '--no-sync', '--file', dumpDir, '--dbname', sourceUrl]);
      const t1 = performance.now();
      await run(pgBin(install, 'pg_restore'), [`--jobs=${jobs}`, ...COMMON_DUMP_RESTORE_OPTIONS, '--dbname', dest.url('plain'), dumpDir]);
      const t2 = performance.now();
      const cpuSeconds = cpuNow() - cpu0;
      if ((await fingerprint(dest, 'plain')) !== sourceFp) throw new Error('the plain pipeline copied different data');
      const n = await insertedAndHeld(dest, 'plain');
      rows.push({ method: "(a) Neon's way: pg_dump -Fd -j, then pg_restore -j", seconds: (t2 - t0) / 1000, dumpSeconds: (t1 - t0) / 1000, restoreSeconds: (t2 - t1) / 1000, recopiedRows: n.inserted - n.held, heldRows: n.held, cpuSeconds, note: '' });
      rmSync(dumpDir, { recursive: true, force: true });
      await dest.query('DROP DATABASE plain');
      log(`(a) ${rows.at(-1)!.seconds.toFixed(1)} s`);
    }

    // The importer runs in its production form, the CLI bundle: a restart after the kill costs
    // what it costs on an importer host, not a TypeScript compile under tsx.
    const cliBundle = path.join(await buildCli(path.join(root, 'dist')), 'durable-compute.cjs');
    // Each run has its importer pool of one on a queue of its own: no other run's worker takes its work.
    const startImporter = async (hostRoot: string, queue: string) => {
      const w = await startProcess(cliBundle, ['worker', 'importer'], {
        env: { ...env, DURABLE_COMPUTE_IMPORTER_TASK_QUEUE: queue, DURABLE_COMPUTE_IMPORTER_WORKDIR: hostRoot, DURABLE_COMPUTE_IMPORTER_HOST_ID: path.basename(hostRoot), DURABLE_COMPUTE_IMPORTER_CPUS: String(jobs) },
        readyLine: /importer worker ready/,
        timeoutMs: 120_000,
      });
      workers.push(w);
      return w;
    };
    const journalOf = (hostRoot: string): string | undefined => {
      const dir = readdirSync(hostRoot, { withFileTypes: true }).find((d) => d.isDirectory());
      return dir ? path.join(hostRoot, dir.name, 'restore-journal.jsonl') : undefined;
    };
    /** When the data phase started and ended, as the journal shows (polled). */
    const watchDataPhase = (hostRoot: string) => {
      const seen: { dataStart?: number; dataEnd?: number } = {};
      let stop = false;
      const loop = (async () => {
        while (!stop) {
          try {
            look();
          } catch {
            /* the directory went away between two reads: the import ended */
          }
          await sleep(50);
        }
      })();
      function look() {
        const file = journalOf(hostRoot);
        const records = file && existsSync(file) ? readRestoreJournal(file) : [];
        const starts = records.filter((r) => r.t === 'start');
        // The first start is pre-data (one batch); the data phase begins with the second.
        if (seen.dataStart === undefined && starts.length >= 2) seen.dataStart = performance.now();
        // Post-data begins once every table is done: its first list file appears.
        if (seen.dataStart !== undefined && seen.dataEnd === undefined) {
          const lists = file ? path.join(path.dirname(file), 'restore-lists') : '';
          if (lists && existsSync(lists) && readdirSync(lists).some((n) => n.startsWith('post-'))) seen.dataEnd = performance.now();
        }
      }
      return { seen, stop: async () => ((stop = true), await loop) };
    };

    const runImport = async (name: string, killAt?: number): Promise<{ seconds: number; cpuSeconds: number; status: ImportStatusView; dataSeconds?: number; killedAfter?: number }> => {
      await dest!.query(`CREATE DATABASE ${name}`);
      await settle();
      const hostRoot = path.join(root, `host-${name}`);
      mkdirSync(hostRoot, { recursive: true, mode: 0o755 });
      const queue = `bench-dr-${name}`;
      let worker = await startImporter(hostRoot, queue);
      const watch = watchDataPhase(hostRoot);
      const cpu0 = cpuNow();
      const importId = `bench-${name}-${Date.now()}`;
      const t0 = performance.now();
      await imports.startDumpRestore({ importId, sourceConnstring: sourceUrl, destinationConnstring: dest!.url(name), jobs, options: { importerTaskQueue: queue, heartbeatTimeoutSeconds: 30 } });
      let killedAfter: number | undefined;
      if (killAt !== undefined) {
        const deadline = performance.now() + 3600_000;
        while (watch.seen.dataStart === undefined) {
          if (performance.now() > deadline) throw new Error(`${name}: the data phase never began`);
          await sleep(20);
        }
        await sleep(killAt * 1000);
        killedAfter = (performance.now() - watch.seen.dataStart) / 1000;
        // The VM dies: the worker and every pg_restore it ran.
        const file = journalOf(hostRoot);
        if (!file) throw new Error(`${name}: the import ended before the kill; use a larger BENCH_DR_SCALE`);
        for (const f of readdirSync(path.dirname(file)).filter((n) => n.endsWith('.pid'))) {
          try {
            process.kill(-(JSON.parse(readFileSync(path.join(path.dirname(file), f), 'utf8')) as { pid: number }).pid, 'SIGKILL');
          } catch {
            /* already gone */
          }
        }
        await worker.kill('SIGKILL');
        log(`(${name}) killed ${killedAfter.toFixed(1)} s into the data phase; restarting the importer`);
        worker = await startImporter(hostRoot, queue);
      }
      const status = await imports.wait(importId, { timeoutMs: 4 * 3600 * 1000, intervalMs: 500 });
      const seconds = (performance.now() - t0) / 1000;
      // Where a run waited rather than worked: the workflow's pauses of over half a second.
      const pauses = await historyPauses(opened.client, importWorkflowId(importId), 500);
      log(`(${name}) pauses in the workflow's history: ${pauses.length ? pauses.join('; ') : 'none over 0.5 s'}`);
      await watch.stop();
      await worker.kill('SIGKILL');
      await sleep(200); // reaped: its CPU is in this process's children's
      const cpuSeconds = cpuNow() - cpu0;
      const dataSeconds = watch.seen.dataStart !== undefined && watch.seen.dataEnd !== undefined ? (watch.seen.dataEnd - watch.seen.dataStart) / 1000 : undefined;
      if ((await fingerprint(dest!, name)) !== sourceFp) throw new Error(`${name}: the import copied different data`);
      return { seconds, cpuSeconds, status, dataSeconds, killedAfter };
    };

    // (b) uninterrupted.
    const b = await runImport('durable');
    const nb = await insertedAndHeld(dest, 'durable');
    const stepMs = (s: ImportStatusView, name: string) => (s.steps.find((x) => x.name === name)?.ms ?? 0) / 1000;
    rows.push({
      method: '(b) import start --mode dump-restore',
      seconds: b.seconds,
      dumpSeconds: stepMs(b.status, 'dumpSource'),
      restoreSeconds: stepMs(b.status, 'restoreIntoDestination'),
      dataSeconds: b.dataSeconds,
      recopiedRows: nb.inserted - nb.held,
      heldRows: nb.held,
      cpuSeconds: b.cpuSeconds,
      note: `${b.status.restore!.tables_done}/${b.status.restore!.tables_total} tables, ${b.status.restore!.entries_total} TOC entries`,
    });
    log(`(b) ${b.seconds.toFixed(1)} s, data phase ${b.dataSeconds?.toFixed(1)} s; steps ${b.status.steps.map((x) => `${x.name} ${(x.ms / 1000).toFixed(1)}`).join(', ')}`);
    await dest.query('DROP DATABASE durable');

    // (c) killed half way through the data phase.
    const half = (b.dataSeconds ?? 10) / 2;
    const c = await runImport('killed', half);
    const nc = await insertedAndHeld(dest, 'killed');
    const r = c.status.restore!;
    rows.push({
      method: '(c) (b) with the importer killed half way through the data phase',
      seconds: c.seconds,
      dumpSeconds: stepMs(c.status, 'dumpSource'),
      restoreSeconds: stepMs(c.status, 'restoreIntoDestination'),
      recopiedRows: nc.inserted - nc.held,
      heldRows: nc.held,
      cpuSeconds: c.cpuSeconds,
      note: `killed ${c.killedAfter!.toFixed(1)} s into the data phase; ${r.tables_kept} tables kept, ${r.tables_resumed ?? 0} resumed inside (${((r.batch_bytes_kept ?? 0) / MiB).toFixed(0)} MiB of COPY data kept, ${((r.batch_bytes_sent ?? 0) / MiB).toFixed(0)} MiB sent after the kill), ${r.tables_redone} truncated and redone, ${r.attempts} attempts`,
    });
    log(`(c) ${c.seconds.toFixed(1)} s`);

    const a = rows[0]!;
    const lines = [
      '## Dump-restore import (bench/import-dump-restore.ts)',
      '',
      `pgbench scale ${scale} (${(sourceBytes / MiB).toFixed(0)} MiB source database), ${jobs} jobs, ${os.cpus().length} CPUs shared with other work; source and destination are local Postgres 15 servers on loopback. Run ${new Date().toISOString()}.`,
      '',
      '| method | total s | dump s | restore s | CPU s | rows re-copied | note |',
      '|---|---:|---:|---:|---:|---:|---|',
      ...rows.map(
        (x) =>
          `| ${x.method} | ${x.seconds.toFixed(1)} | ${x.dumpSeconds?.toFixed(1) ?? '-'} | ${x.restoreSeconds?.toFixed(1) ?? '-'} | ${x.cpuSeconds.toFixed(1)} | ${x.recopiedRows} of ${x.heldRows} (${((100 * x.recopiedRows) / Math.max(1, x.heldRows)).toFixed(1)} %) | ${x.note} |`,
      ),
      '',
      `- uninterrupted / Neon's way: **${(b.seconds / a.seconds).toFixed(3)}×** wall (target ≤ 1.05×), ${(b.cpuSeconds / a.cpuSeconds).toFixed(3)}× CPU`,
      `- killed / uninterrupted: **${(c.seconds / b.seconds).toFixed(3)}×** wall (target ≤ 1.2×), ${(c.cpuSeconds / b.cpuSeconds).toFixed(3)}× CPU; Neon's way, killed at the same point, would start over: an estimated ${((a.seconds + stepMs(b.status, 'dumpSource') + half) / a.seconds).toFixed(2)}× its uninterrupted run (its run, plus the dump and half a data phase lost)`,
      `- data re-copied by the resumed run: ${nc.inserted - nc.held} rows of ${nc.held} (${((100 * (nc.inserted - nc.held)) / Math.max(1, nc.held)).toFixed(1)} %): the rows of the batches in flight at the kill, which rolled back. The ${((r.batch_bytes_kept ?? 0) / MiB).toFixed(0)} MiB of COPY data committed before the kill were not sent again, and tables finished before it were not copied again.`,
      `- (b)'s data phase took ${b.dataSeconds?.toFixed(1) ?? '?'} s; (c) was killed that long / 2 after its data phase began.`,
      '- "total" of (b) and (c) runs from `import start` to the workflow reporting done: it includes the prefix and spec write, the host claim and the source/destination check.',
      `- pgbench_accounts holds 99 % of the rows. A table whose dump file is 4 MiB or more (pgbench_accounts) is copied in batches of 32 MiB of COPY data, ${jobs} at a time in as many sessions, each committed with its byte range in a progress table of the destination; the small tables go through pg_restore -L as before.`,
      '',
    ];
    writeFileSync(outFile, lines.join('\n'));
    log(`wrote ${outFile}`);
  } finally {
    for (const w of workers) await w.kill('SIGKILL').catch(() => undefined);
    for (const close of closers) await close().catch(() => undefined);
    await source?.stop();
    await dest?.stop();
    await stackDown(stackDir).catch(() => undefined);
    rmSync(root, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
