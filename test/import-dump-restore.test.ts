import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { S3Client } from '@aws-sdk/client-s3';
import { Client, Connection } from '@temporalio/client';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { killRecordedGroup } from '../drivers/importer/run-tool';
import { readRestoreJournal } from '../drivers/importer/restore-journal';
import { createS3Client } from '../drivers/s3/client';
import { getObjectBytes, listObjects } from '../drivers/s3/objects';
import { generateLocalKey } from '../drivers/secrets/local-aes';
import { ImportClient } from '../client/import-client';
import { openClient } from '../client/context';
import { projectRoot } from '../common/paths';
import { chownForPostgres } from '../common/pg-identity';
import { freePort } from '../dev/processes';
import { importPrefix, importWorkflowId } from '../model/import-status';
import { runCli } from './helpers/cli';
import { historyTexts, recordReplayFixtureIfAsked } from './helpers/history';
import { uniqueId } from './helpers/ids';
import { importFingerprint, startImportSource, type ImportSource } from '../dev/import-source';
import { startThrowawayPostgres, type ThrowawayPostgres } from '../dev/throwaway-postgres';
import { killAllProcesses, startProcess, type WorkerProcess } from '../dev/child-processes';
import { testConfig, testEnv } from './helpers/stack';

/**
 * The dump-restore import mode on the real stack: Temporal, the control-plane worker, s3rver,
 * importer workers as separate processes (killed with SIGKILL), a real source Postgres and a real
 * destination Postgres, both with password authentication over loopback.
 */

const SOURCE_PASSWORD = 'src s3cret:/@%';
const DEST_PASSWORD = 'dst p4ss@/:% x';
const DATABASE = 'shop';
const TABLES = ['customers', 'orders', 'events'];

let source: ImportSource;
let destination: ThrowawayPostgres;
let scratchRoot: string;
let keyFile: string;
let imports: ImportClient;
let closeClient: () => Promise<void>;
let raw: Client;
let rawConnection: Connection;
let s3: S3Client;
let bucket: string;

/** A database of its own on the destination server, owned by the password-authenticated `restorer`. */
async function newDestination(name: string): Promise<{ database: string; url: (password?: string) => string; query: (sql: string) => Promise<pg.QueryResult> }> {
  const database = uniqueId(name).replaceAll('-', '_');
  await destination.query(`CREATE DATABASE ${pg.escapeIdentifier(database)} OWNER restorer`);
  return {
    database,
    url: (password = DEST_PASSWORD) => `postgresql://restorer:${encodeURIComponent(password)}@127.0.0.1:${destination.port}/${database}`,
    query: (sql) => destination.query(sql, undefined, database),
  };
}

type OnFinished = (fn: () => Promise<void> | void) => void;

function newPool(onTestFinished: OnFinished) {
  const queue = uniqueId('importers');
  const procs: WorkerProcess[] = [];
  const importIds: string[] = [];
  onTestFinished(async () => {
    for (const p of procs) await p.kill('SIGKILL');
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
    options() {
      // A restarted worker may take a minute to poll on a loaded machine: not a lost host (that test sets its own).
      return { heartbeatTimeoutSeconds: 10, hostLostAfterSeconds: 180, claimTimeoutSeconds: 300, importerTaskQueue: queue };
    },
    cliEnv(): Record<string, string> {
      return { ...testEnv(), DURABLE_COMPUTE_IMPORT_KEY_FILE: keyFile, DURABLE_COMPUTE_IMPORTER_TASK_QUEUE: queue };
    },
    async startImporter(host: { root: string; hostId: string }): Promise<WorkerProcess> {
      const proc = await startProcess('bin/durable-compute.mjs', ['worker', 'importer'], {
        env: {
          ...testEnv(),
          DURABLE_COMPUTE_IMPORT_KEY_FILE: keyFile,
          DURABLE_COMPUTE_IMPORTER_WORKDIR: host.root,
          DURABLE_COMPUTE_IMPORTER_HOST_ID: host.hostId,
          DURABLE_COMPUTE_IMPORTER_TASK_QUEUE: queue,
          DURABLE_COMPUTE_IMPORTER_MEMORY_MB: '512',
          DURABLE_COMPUTE_IMPORTER_CPUS: '2',
        },
        readyLine: /importer worker ready/,
        timeoutMs: 180_000,
      });
      procs.push(proc);
      return proc;
    },
  };
}

function newHost(name: string): { root: string; hostId: string } {
  const root = mkdtempSync(path.join(scratchRoot, `${name}-`));
  chownForPostgres(root, false);
  return { root, hostId: uniqueId(name) };
}

async function waitFor<T>(what: string, probe: () => Promise<T | undefined> | T | undefined, timeoutMs = 180_000, intervalMs = 20): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(intervalMs);
  }
}

async function fingerprintOf(database: string): Promise<Record<string, string>> {
  const client = new pg.Client({ connectionString: destination.url(database) });
  await client.connect();
  try {
    return await importFingerprint(client);
  } finally {
    await client.end();
  }
}

/** Rows each table's COPYs inserted, committed or not (n_tup_ins), and the rows it holds. */
async function insertsAndRows(database: string): Promise<Record<string, { inserted: number; rows: number }>> {
  const out: Record<string, { inserted: number; rows: number }> = {};
  for (const t of TABLES) {
    const { rows } = await destination.query<{ ins: string; n: string }>(
      `SELECT (SELECT n_tup_ins FROM pg_stat_user_tables WHERE relname = $1)::text AS ins, (SELECT count(*) FROM ${pg.escapeIdentifier(t)})::text AS n`,
      [t],
      database,
    );
    out[t] = { inserted: Number(rows[0]!.ins), rows: Number(rows[0]!.n) };
  }
  return out;
}

async function expectSecretsAbsent(importId: string, prefix: string, secrets: string[]): Promise<void> {
  const history = await raw.workflow.getHandle(importWorkflowId(importId)).fetchHistory();
  const { texts } = historyTexts(history);
  for (const secret of secrets) expect(texts.some((t) => t.includes(secret)), 'a secret in the history').toBe(false);
  for await (const o of listObjects(s3, bucket, `${prefix}/`)) {
    const text = (await getObjectBytes(s3, bucket, o.key))!.toString('utf8');
    for (const secret of secrets) expect(text.includes(secret), o.key).toBe(false);
  }
}

/** Runs the CLI on a pseudo-terminal (util-linux `script`): its stderr is a TTY, so progress is a bar. */
async function runCliOnTerminal(args: string[], env: Record<string, string>): Promise<{ code: number; screen: string }> {
  const script = ['/usr/bin/script', '/bin/script'].find((p) => existsSync(p));
  if (!script) throw new Error('util-linux `script` is needed to run the CLI on a pseudo-terminal (Debian: apt-get install bsdutils)');
  // `script` runs a shell command: the text here is fixed, every value reaches it through the environment.
  const command = ['exec "$DC_NODE" "$DC_CLI"', ...args.map((_, i) => `"$DC_ARG_${i}"`)].join(' ');
  const argEnv = Object.fromEntries(args.map((a, i) => [`DC_ARG_${i}`, a]));
  return new Promise((resolve) => {
    execFile(
      script,
      ['--quiet', '--flush', '--return', '--command', command, '/dev/null'],
      { env: { ...process.env, ...env, ...argEnv, SHELL: '/bin/sh', DC_NODE: process.execPath, DC_CLI: path.join(projectRoot, 'bin', 'durable-compute.mjs') }, cwd: projectRoot, timeout: 120_000 },
      // eslint-disable-next-line no-control-regex
      (err, out) => resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, screen: out.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, '') }),
    );
  });
}

beforeAll(async () => {
  scratchRoot = mkdtempSync(path.join(os.tmpdir(), 'dc-dr-'));
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
  source = await startImportSource({ password: SOURCE_PASSWORD, database: DATABASE, size: { customers: 10_000, orders: 50_000, events: 150_000, eventPayloadRepeat: 2 } });
  destination = await startThrowawayPostgres();
  writeFileSync(path.join(destination.dataDir, 'pg_hba.conf'), 'local all all trust\nhost all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n');
  chownForPostgres(path.join(destination.dataDir, 'pg_hba.conf'), false);
  await destination.query('SELECT pg_reload_conf()');
  await destination.query(`CREATE ROLE restorer LOGIN PASSWORD ${pg.escapeLiteral(DEST_PASSWORD)}`);
}, 300_000);

afterAll(async () => {
  await killAllProcesses();
  for (const hostDir of scratchRoot ? readdirSync(scratchRoot, { withFileTypes: true }).filter((d) => d.isDirectory()) : []) {
    for (const work of readdirSync(path.join(scratchRoot, hostDir.name), { withFileTypes: true }).filter((d) => d.isDirectory())) {
      const dir = path.join(scratchRoot, hostDir.name, work.name);
      for (const f of readdirSync(dir)) if (f.endsWith('.pid')) await killRecordedGroup(path.join(dir, f));
    }
  }
  await closeClient?.();
  await rawConnection?.close();
  s3?.destroy();
  await source?.server.stop();
  await destination?.stop();
  if (scratchRoot) rmSync(scratchRoot, { recursive: true, force: true });
}, 180_000);

describe.concurrent('dump-restore import on the real stack', () => {
  it('imports through the CLI into a running database under a chosen --s3-prefix: same data, each table copied once, status and secrets right', async ({ onTestFinished }) => {
    const pool = newPool(onTestFinished);
    const importId = pool.importId('dr-happy');
    const dest = await newDestination('happy');
    await pool.startImporter(newHost('dr-happy'));
    const dir = mkdtempSync(path.join(scratchRoot, 'files-'));
    writeFileSync(path.join(dir, 'source'), `${source.url()}\n`);
    writeFileSync(path.join(dir, 'destination'), `${dest.url()}\n`);
    const prefix = `custom/${importId}`;
    const started = await runCli(
      ['import', 'start', '--mode', 'dump-restore', '--import-id', importId, '--source-file', path.join(dir, 'source'), '--destination-file', path.join(dir, 'destination'), '--s3-prefix', prefix, '--jobs', '2', '--wait', '--json'],
      { env: pool.cliEnv(), timeoutMs: 300_000 },
    );
    expect(started.stderr).not.toContain('Error');
    expect(started.code).toBe(0);
    const done = JSON.parse(started.stdout) as Awaited<ReturnType<ImportClient['status']>>;
    expect(done).toMatchObject({ phase: 'done', mode: 'dump-restore', s3_prefix: prefix, error: null, database: dest.database, destination: expect.stringContaining('restorer@127.0.0.1') });
    expect(done.steps.map((s) => s.name)).toEqual(['prepareImportPrefix', 'claimImportHost', 'checkDumpRestoreEndpoints', 'dumpSource', 'restoreIntoDestination', 'writeDumpRestoreStatus']);
    expect(done.restore).toMatchObject({ tables_total: 3, tables_done: 3, tables_kept: 0, tables_redone: 0, attempts: 1 });
    expect(done.restore!.entries_done).toBe(done.restore!.entries_total);
    expect(done.restore!.bytes_done).toBe(done.restore!.bytes_total);
    expect(done.progress).toMatchObject({ tablesDone: 3, tablesTotal: 3 });

    expect(await fingerprintOf(dest.database)).toEqual(source.fingerprint);
    // Every table was copied exactly once.
    for (const [table, n] of Object.entries(await insertsAndRows(dest.database))) expect(n.inserted, table).toBe(n.rows);

    // Neon's layout under the chosen prefix; nothing under the default one.
    expect(JSON.parse((await getObjectBytes(s3, bucket, `${prefix}/status/fast_import`))!.toString('utf8'))).toEqual({ command: 'dump-restore', done: true });
    const spec = JSON.parse((await getObjectBytes(s3, bucket, `${prefix}/spec.json`))!.toString('utf8')) as Record<string, unknown>;
    expect(Object.keys(spec).sort()).toEqual(['destination_connstring_ciphertext_base64', 'encryption_secret', 'source_connstring_ciphertext_base64']);
    expect(await getObjectBytes(s3, bucket, `${importPrefix(importId)}/spec.json`)).toBeUndefined();
    await expectSecretsAbsent(importId, prefix, [SOURCE_PASSWORD, encodeURIComponent(SOURCE_PASSWORD), DEST_PASSWORD, encodeURIComponent(DEST_PASSWORD)]);

    // `import status` on a terminal draws the bar with the tables.
    const onTerminal = await runCliOnTerminal(['import', 'status', '--import-id', importId], pool.cliEnv());
    expect(onTerminal.code).toBe(0);
    expect(onTerminal.screen).toMatch(/done\s+\|[█░]+\| 100% [\d.]+ MiB \/ [\d.]+ MiB, 3\/3 tables/);
    expect(onTerminal.screen).toMatch(/restore: +3\/3 tables/);
    await recordReplayFixtureIfAsked('import-dump-restore', importWorkflowId(importId));
  }, 300_000);

  it('a killed importer worker mid data phase: finished tables are not restored again, the table in flight is truncated and redone, the data is the source\'s', async ({ onTestFinished }) => {
    const pool = newPool(onTestFinished);
    const importId = pool.importId('dr-kill');
    const dest = await newDestination('kill');
    const host = newHost('dr-kill');
    let worker = await pool.startImporter(host);
    await imports.startDumpRestore({ importId, sourceConnstring: source.url(), destinationConnstring: dest.url(), jobs: 2, options: pool.options() });
    const workdir = await waitFor('the import directory', () => readdirSync(host.root, { withFileTypes: true }).find((d) => d.isDirectory())?.name);
    const dir = path.join(host.root, workdir);
    const journalFile = path.join(dir, 'restore-journal.jsonl');
    // The tables' data entries, by their list files (named data-<dump id>.list), and what each is.
    const tableOf = (id: number): string | undefined => {
      const file = path.join(dir, 'restore-lists', `data-${id}.list`);
      const line = existsSync(file) ? readFileSync(file, 'utf8') : '';
      return / TABLE DATA public (\w+) /.exec(line)?.[1];
    };
    // Wait until at least one table is done and another is being copied, then freeze every
    // running pg_restore (as a dying VM would leave them) and kill the worker.
    const state = await waitFor(
      'one table done and one in flight',
      () => {
        const records = readRestoreJournal(journalFile);
        const done = new Set(records.filter((r) => r.t === 'done').flatMap((r) => r.ids ?? []));
        const started = records.filter((r) => r.t === 'start').flatMap((r) => r.ids ?? []);
        const doneTables = [...done].map(tableOf).filter((t): t is string => t !== undefined);
        const inFlight = started.filter((id) => !done.has(id)).map(tableOf).filter((t): t is string => t !== undefined);
        return doneTables.length >= 1 && inFlight.length >= 1 ? { doneTables, inFlight } : undefined;
      },
      240_000,
      5,
    );
    for (const f of readdirSync(dir).filter((n) => /^pg_restore-item-\d+\.pid$/.test(n))) {
      try {
        process.kill(-(JSON.parse(readFileSync(path.join(dir, f), 'utf8')) as { pid: number }).pid, 'SIGSTOP');
      } catch {
        /* that one just ended */
      }
    }
    await worker.kill('SIGKILL');
    // Its successor on the same disk resumes the restore.
    worker = await pool.startImporter(host);
    const done = await imports.wait(importId, { timeoutMs: 240_000, intervalMs: 200 });

    expect(await fingerprintOf(dest.database)).toEqual(source.fingerprint);
    expect(done.restore!.attempts).toBeGreaterThanOrEqual(2);
    expect(done.restore!.tables_kept).toBeGreaterThanOrEqual(state.doneTables.length);
    expect(done.restore!.tables_redone).toBeGreaterThanOrEqual(1);
    const counts = await insertsAndRows(dest.database);
    // A table finished before the kill was copied once: its inserts are its rows.
    for (const t of state.doneTables) expect(counts[t]!.inserted, `${t} (finished before the kill)`).toBe(counts[t]!.rows);
    // The table in flight was copied again from empty: every row is there once, whatever the first copy left.
    for (const t of state.inFlight) {
      expect(counts[t]!.rows, t).toBe(Number(source.fingerprint[t]!.split(':')[0]));
      expect(counts[t]!.inserted, `${t} (in flight at the kill)`).toBeGreaterThanOrEqual(counts[t]!.rows);
    }
  }, 400_000);

  it('a killed importer worker inside a large table copied in batches: the resumed restore sends only the batches not committed, no truncate, rows exactly the source\'s', async ({ onTestFinished }) => {
    const pool = newPool(onTestFinished);
    const importId = pool.importId('dr-batch-kill');
    const dest = await newDestination('batchkill');
    const host = newHost('dr-batch-kill');
    let worker = await pool.startImporter(host);
    // events (the largest table) goes in batches of 256 KiB of COPY data; the small tables through pg_restore.
    await imports.startDumpRestore({ importId, sourceConnstring: source.url(), destinationConnstring: dest.url(), jobs: 2, batches: { splitTablesLargerThan: 1024 * 1024, batchBytes: 256 * 1024 }, options: pool.options() });
    const workdir = await waitFor('the import directory', () => readdirSync(host.root, { withFileTypes: true }).find((d) => d.isDirectory())?.name);
    const dir = path.join(host.root, workdir);
    const batchedEntry = () => {
      const lists = path.join(dir, 'restore-lists');
      const name = existsSync(lists) ? readdirSync(lists).find((n) => /^batched-\d+\.list$/.test(n) && / TABLE DATA public events /.test(readFileSync(path.join(lists, n), 'utf8'))) : undefined;
      return name ? Number(/\d+/.exec(name)![0]) : undefined;
    };
    const committed = async (entry: number) =>
      (await dest.query(`SELECT start_offset::float8 AS s, end_offset::float8 AS e FROM _durable_compute_import.copied_batches WHERE entry_id = ${entry} ORDER BY 1`).catch(() => ({ rows: [] }))).rows as { s: number; e: number }[];
    // Wait until some batches of events committed, then freeze every running pg_restore and psql (a dying VM) and kill the worker.
    const entry = await waitFor('events copied in batches', batchedEntry, 240_000, 5);
    await waitFor('four batches of events committed', async () => ((await committed(entry)).length >= 4 ? true : undefined), 240_000, 5);
    for (const f of readdirSync(dir).filter((n) => n.endsWith('.pid'))) {
      try {
        process.kill(-(JSON.parse(readFileSync(path.join(dir, f), 'utf8')) as { pid: number }).pid, 'SIGSTOP');
      } catch {
        /* that one just ended */
      }
    }
    await worker.kill('SIGKILL');
    await sleep(1000); // a COMMIT already sent completes
    const before = await committed(entry);
    const rowsAtKill = Number((await dest.query('SELECT count(*) AS n FROM events')).rows[0].n);
    const journal = readRestoreJournal(path.join(dir, 'restore-journal.jsonl'));
    expect(journal.some((r) => r.t === 'done' && r.ids?.includes(entry)), 'events was still in flight at the kill').toBe(false);
    expect(rowsAtKill).toBeGreaterThan(0);
    worker = await pool.startImporter(host);
    const done = await imports.wait(importId, { timeoutMs: 240_000, intervalMs: 200 });

    // Rows exactly right: counts and content checksums of every table, sequences, indexes, the view.
    expect(await fingerprintOf(dest.database)).toEqual(source.fingerprint);
    expect(done.restore!.attempts).toBeGreaterThanOrEqual(2);
    expect(done.restore!.tables_resumed).toBe(1);
    // The committed batches were not sent again: the resumed attempt kept exactly their bytes...
    expect(done.restore!.batch_bytes_kept).toBe(before.reduce((n, b) => n + b.e - b.s, 0));
    // ...and events took at most the batches in flight at the kill on top of its rows (inserts of aborted batches count too), far fewer than were committed.
    const counts = await insertsAndRows(dest.database);
    expect(counts.events!.rows).toBe(Number(source.fingerprint.events!.split(':')[0]));
    expect(counts.events!.inserted - counts.events!.rows).toBeLessThan(rowsAtKill);
    // The progress table is gone once the data is in.
    expect((await dest.query(`SELECT count(*)::int AS n FROM pg_namespace WHERE nspname = '_durable_compute_import'`)).rows[0].n).toBe(0);
  }, 400_000);

  it('an importer host lost for good mid data phase is replaced: another host dumps again and restores with --clean over what the lost one left, the data is the source\'s', async ({ onTestFinished }) => {
    const pool = newPool(onTestFinished);
    const importId = pool.importId('dr-lost');
    const dest = await newDestination('lost');
    const first = newHost('dr-lost-a');
    const worker = await pool.startImporter(first);
    await imports.startDumpRestore({ importId, sourceConnstring: source.url(), destinationConnstring: dest.url(), jobs: 2, batches: { splitTablesLargerThan: 1024 * 1024, batchBytes: 256 * 1024 }, options: { ...pool.options(), hostLostAfterSeconds: 10 } });
    const dir = path.join(first.root, await waitFor('the import directory', () => readdirSync(first.root, { withFileTypes: true }).find((d) => d.isDirectory())?.name));
    // The first host's VM dies once the data phase began (some table data started): worker and tools killed, never back.
    await waitFor('the data phase', () => (readRestoreJournal(path.join(dir, 'restore-journal.jsonl')).filter((r) => r.t === 'start').length >= 2 ? true : undefined), 240_000, 5);
    for (const f of readdirSync(dir).filter((n) => n.endsWith('.pid'))) {
      try {
        process.kill(-(JSON.parse(readFileSync(path.join(dir, f), 'utf8')) as { pid: number }).pid, 'SIGKILL');
      } catch {
        /* that one just ended */
      }
    }
    await worker.kill('SIGKILL');
    const second = newHost('dr-lost-b');
    await pool.startImporter(second);
    const done = await imports.wait(importId, { timeoutMs: 300_000, intervalMs: 200 });

    expect(await fingerprintOf(dest.database)).toEqual(source.fingerprint);
    expect(done.local_run).toBe(2);
    expect(done.host).toBe(second.hostId);
    expect(done.host_changes).toEqual([expect.objectContaining({ from: first.hostId, to: second.hostId, reason: expect.stringMatching(/no answer from host .* for 10 s during restore/) })]);
    expect(done.steps.filter((x) => x.name === 'dumpSource')).toHaveLength(2);
    // Each table holds its rows once, whatever the lost host had committed.
    for (const [table, n] of Object.entries(await insertsAndRows(dest.database))) expect(n.rows, table).toBe(Number(source.fingerprint[table]!.split(':')[0]));
  }, 400_000);

  it('refuses bad input with clear errors: an unreachable source or destination (named, no password), a destination holding a table of the same name (unless --clean), a bad --s3-prefix', async ({ onTestFinished }) => {
    const pool = newPool(onTestFinished);
    await pool.startImporter(newHost('dr-bad'));
    const closedPort = await freePort();

    const noSource = pool.importId('dr-nosrc');
    const dest1 = await newDestination('nosrc');
    await imports.startDumpRestore({ importId: noSource, sourceConnstring: `postgresql://importer:${encodeURIComponent(SOURCE_PASSWORD)}@127.0.0.1:${closedPort}/shop`, destinationConnstring: dest1.url(), options: pool.options() });
    const e1 = await imports.wait(noSource, { timeoutMs: 120_000 }).then(() => undefined, (err: Error) => err.message);
    expect(e1).toMatch(/the source database postgresql:\/\/importer@127\.0\.0\.1:\d+\/shop is unreachable/);
    expect(e1).not.toContain('destination database');

    const noDest = pool.importId('dr-nodst');
    await imports.startDumpRestore({ importId: noDest, sourceConnstring: source.url(), destinationConnstring: `postgresql://restorer:${encodeURIComponent(DEST_PASSWORD)}@127.0.0.1:${closedPort}/x`, options: pool.options() });
    const e2 = await imports.wait(noDest, { timeoutMs: 120_000 }).then(() => undefined, (err: Error) => err.message);
    expect(e2).toMatch(/the destination database postgresql:\/\/restorer@127\.0\.0\.1:\d+\/x is unreachable/);

    const wrongPassword = pool.importId('dr-badpw');
    await imports.startDumpRestore({ importId: wrongPassword, sourceConnstring: source.url(), destinationConnstring: dest1.url('not the password'), options: pool.options() });
    const e3 = await imports.wait(wrongPassword, { timeoutMs: 120_000 }).then(() => undefined, (err: Error) => err.message);
    expect(e3).toMatch(/the destination database .* refused the import: .*password authentication failed/);
    for (const e of [e1, e2, e3]) {
      for (const secret of [SOURCE_PASSWORD, encodeURIComponent(SOURCE_PASSWORD), DEST_PASSWORD, encodeURIComponent(DEST_PASSWORD), 'not the password']) expect(e).not.toContain(secret);
    }

    // A destination that already has a `customers` table: refused before anything is written.
    const taken = await newDestination('taken');
    // Created by the destination's own user, as an earlier load would have: --clean may then drop it.
    await taken.query(`SET ROLE restorer; CREATE TABLE customers (id int); INSERT INTO customers VALUES (7)`);
    const refused = pool.importId('dr-taken');
    await imports.startDumpRestore({ importId: refused, sourceConnstring: source.url(), destinationConnstring: taken.url(), options: pool.options() });
    const e4 = await imports.wait(refused, { timeoutMs: 120_000 }).then(() => undefined, (err: Error) => err.message);
    expect(e4).toMatch(/already holds 1 relation\(s\) the source has too: public\.customers\. Nothing was written; give --clean/);
    const relations = await taken.query(`SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace ORDER BY 1`);
    expect(relations.rows.map((r: { relname: string }) => r.relname)).toEqual(['customers']);
    expect((await taken.query('SELECT id FROM customers')).rows).toEqual([{ id: 7 }]);
    expect(JSON.parse((await getObjectBytes(s3, bucket, `${importPrefix(refused)}/status/fast_import`))!.toString('utf8'))).toMatchObject({ command: 'dump-restore', done: false, error: expect.stringContaining('public.customers') });

    // With --clean it is replaced.
    const cleaned = pool.importId('dr-clean');
    await imports.startDumpRestore({ importId: cleaned, sourceConnstring: source.url(), destinationConnstring: taken.url(), clean: true, jobs: 2, options: pool.options() });
    await imports.wait(cleaned, { timeoutMs: 240_000 });
    expect(await fingerprintOf(taken.database)).toEqual(source.fingerprint);

    // --s3-prefix is checked before anything starts, in both modes, naming the flag.
    const dir = mkdtempSync(path.join(scratchRoot, 'files-'));
    writeFileSync(path.join(dir, 'source'), source.url());
    for (const [prefix, problem] of [['../elsewhere', 'must not contain ..'], ['imports/../x', 'must not contain ..'], ['/abs/path', 'must be relative to the bucket: no leading /']] as const) {
      const dr = await runCli(['import', 'start', '--mode', 'dump-restore', '--import-id', 'x', '--source-file', path.join(dir, 'source'), '--destination-file', path.join(dir, 'source'), '--s3-prefix', prefix], { env: pool.cliEnv() });
      expect(dr.code).not.toBe(0);
      expect(dr.stderr).toContain(`invalid --s3-prefix ${JSON.stringify(prefix)}: ${problem}`);
      const pgdata = await runCli(['import', 'start', '--import-id', 'x', '--source-file', path.join(dir, 'source'), '--tenant', '0'.repeat(32), '--timeline', '1'.repeat(32), '--s3-prefix', prefix], { env: pool.cliEnv() });
      expect(pgdata.code).not.toBe(0);
      expect(pgdata.stderr).toContain(`invalid --s3-prefix ${JSON.stringify(prefix)}: ${problem}`);
    }
  }, 600_000);
});
