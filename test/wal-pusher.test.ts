/**
 * The stock storage backend end to end on real processes: stock PostgreSQL 15 configured by the
 * backend, the detached WAL pusher it starts, three dev safekeeper processes, and the sync command.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { appendFileSync, chmodSync, cpSync, mkdirSync, mkdtempSync, openSync, closeSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findPostgres, pgBin } from '../common/pg-binaries';
import { chownForPostgres, pgSpawnIdentity } from '../common/pg-identity';
import { formatLsn, parseLsn, type Lsn } from '../model/lsn';
import { stockStorageBackend, walPusherStatus } from '../drivers/storage-backend';
import { advanceOverPages, alignedRecordEnd, checkpointRecordEnd, nextRecordStart, walFileName } from '../drivers/storage-backend/stock/local-postgres';
import { processStartTime } from '../common/process-start-time';
import { livePusherPid } from '../drivers/storage-backend/stock/pusher-files';
import { freePort } from '../dev/processes';
import { neonId } from './helpers/ids';
import { killAllProcesses, startProcess, type WorkerProcess } from '../dev/child-processes';
import { waitFor } from './helpers/wait';

const run = promisify(execFile);
const install = findPostgres({ pgBinDir: process.env.PG_BIN_DIR });
const asPostgres = pgSpawnIdentity();
const SEG = 16 * 1024 * 1024;
const PAGE = 8192;
const SUPERUSER = 'cloud_admin';

// ---- safekeepers ----------------------------------------------------------------------------

interface Sk {
  proc: WorkerProcess | undefined;
  pgPort: number;
  httpPort: number;
  args: string[];
}

interface SkStatus {
  flush_lsn: string;
  commit_lsn: string;
  timeline_start_lsn: string;
  acceptor_state: { term: number };
}

async function startSkProcess(sk: Sk): Promise<void> {
  sk.proc = await startProcess('dev/storage/safekeeper/main.ts', sk.args, { readyLine: /safekeeper ready/, timeoutMs: 60_000 });
}

async function stopSk(sk: Sk): Promise<void> {
  await sk.proc?.kill('SIGTERM');
  sk.proc = undefined;
}

async function skStatus(sk: Sk, tenantId: string, timelineId: string): Promise<SkStatus | undefined> {
  const res = await fetch(`http://127.0.0.1:${sk.httpPort}/v1/tenant/${tenantId}/timeline/${timelineId}`, { signal: AbortSignal.timeout(5000) });
  if (res.status === 404) return undefined;
  expect(res.status).toBe(200);
  return (await res.json()) as SkStatus;
}

async function skWal(sk: Sk, tenantId: string, timelineId: string, start: Lsn, end: Lsn): Promise<Buffer> {
  const res = await fetch(`http://127.0.0.1:${sk.httpPort}/v1/tenant/${tenantId}/timeline/${timelineId}/wal?start=${formatLsn(start)}&end=${formatLsn(end)}`);
  expect(res.status).toBe(200);
  return Buffer.from(await res.arrayBuffer());
}

/** The flush LSN a quorum (2 of 3) of the running safekeepers holds. */
async function quorumFlush(sks: Sk[], tenantId: string, timelineId: string): Promise<Lsn> {
  const flushes: Lsn[] = [];
  for (const sk of sks) {
    if (!sk.proc) {
      flushes.push(0n);
      continue;
    }
    const s = await skStatus(sk, tenantId, timelineId);
    flushes.push(s ? parseLsn(s.flush_lsn) : 0n);
  }
  flushes.sort((a, b) => (a > b ? -1 : a < b ? 1 : 0));
  return flushes[1]!;
}

// ---- computes -------------------------------------------------------------------------------

interface Compute {
  dataDir: string;
  socketDir: string;
  port: number;
  child: ChildProcess;
  exited: Promise<void>;
  tenantId: string;
  timelineId: string;
  client(): Promise<pg.Client>;
  postmasterPid(): number;
  logText(): string;
}

let root: string;
let template: string;
const sks: Sk[] = [];
const computes: Compute[] = [];

async function startPostgres(name: string, tenantId: string, timelineId: string): Promise<Compute> {
  const base = path.join(root, name);
  mkdirSync(base);
  const dataDir = path.join(base, 'data');
  cpSync(template, dataDir, { recursive: true });
  chmodSync(dataDir, 0o700);
  const port = await freePort();
  const safekeepers = sks.map((s) => `127.0.0.1:${s.pgPort}`);
  appendFileSync(
    path.join(dataDir, 'postgresql.conf'),
    [
      '',
      `listen_addresses = '127.0.0.1'`,
      `port = ${port}`,
      `unix_socket_directories = '${base}'`,
      'fsync = off',
      stockStorageBackend.postgresqlConf({ tenantId, timelineId, safekeepers, mode: 'Primary' }),
    ].join('\n'),
  );
  const hba = path.join(dataDir, 'pg_hba.conf');
  writeFileSync(hba, `${stockStorageBackend.hbaLines().join('\n')}\n${readFileSync(hba, 'utf8')}`);
  chownForPostgres(base);
  const logFile = path.join(base, 'postgres.log');
  const fd = openSync(logFile, 'a');
  const child = spawn(pgBin(install, 'postgres'), ['-D', dataDir], { ...asPostgres, stdio: ['ignore', fd, fd] });
  closeSync(fd);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const compute: Compute = {
    dataDir,
    socketDir: base,
    port,
    child,
    exited,
    tenantId,
    timelineId,
    async client() {
      const c = new pg.Client({ host: '127.0.0.1', port, user: SUPERUSER, database: 'postgres' });
      // Tests kill Postgres under open connections; failures still reach the queries themselves.
      c.on('error', () => undefined);
      await c.connect();
      return c;
    },
    postmasterPid: () => child.pid!,
    logText: () => readFileSync(logFile, 'utf8'),
  };
  computes.push(compute);
  await waitFor('postgres to accept connections', async () => {
    if (child.exitCode !== null) throw new Error(`postgres exited: ${compute.logText()}`);
    try {
      const c = await compute.client();
      await c.end();
      return true;
    } catch {
      return undefined;
    }
  });
  return compute;
}

/** The storage backend's post-start step (starts the WAL pusher, or finds it running). */
function afterReady(c: Compute): Promise<void> {
  return stockStorageBackend.afterPostgresReady({
    pgdata: c.dataDir,
    socketDir: c.socketDir,
    port: c.port,
    tenantId: c.tenantId,
    timelineId: c.timelineId,
    safekeepers: sks.map((s) => `127.0.0.1:${s.pgPort}`),
    superuser: SUPERUSER,
  });
}

async function startCompute(name: string, tenantId = neonId(), timelineId = neonId()): Promise<Compute> {
  const c = await startPostgres(name, tenantId, timelineId);
  await afterReady(c);
  return c;
}

/** Pids of the postmaster's children (backends, walsender, background processes). */
function childPids(ppid: number): number[] {
  const out: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(fields[1]) === ppid) out.push(Number(entry));
    } catch {
      /* gone */
    }
  }
  return out;
}

/** SIGKILL the postmaster and every backend at once: no shutdown checkpoint, nothing flushed on the way out. */
async function killCompute(c: Compute): Promise<void> {
  const pids = [c.postmasterPid(), ...childPids(c.postmasterPid())];
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
  await c.exited;
  await waitFor('backends to die', async () => (pids.every((p) => processStartTime(p) === undefined) ? true : undefined));
}

async function fastStop(c: Compute): Promise<void> {
  process.kill(c.postmasterPid(), 'SIGINT');
  await c.exited;
}

async function waitPusherGone(c: Compute): Promise<void> {
  await waitFor('the WAL pusher to exit', async () => (livePusherPid(c.dataDir) === undefined ? true : undefined), 60_000);
}

async function runSync(c: Compute): Promise<{ code: number; stdout: string; stderr: string }> {
  const [cmd, ...args] = stockStorageBackend.syncSafekeepersCommand(install.binDir);
  try {
    const r = await run(cmd!, [...args, '-D', c.dataDir], { timeout: 120_000 });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: e.code ?? -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

// ---- reading the compute's own WAL ----------------------------------------------------------

async function rawWal(dataDir: string, start: Lsn, end: Lsn): Promise<Buffer> {
  const parts: Buffer[] = [];
  let pos = start;
  while (pos < end) {
    const inSeg = Number(pos % BigInt(SEG));
    const n = Number(end - pos < BigInt(SEG - inSeg) ? end - pos : BigInt(SEG - inSeg));
    const fh = await open(path.join(dataDir, 'pg_wal', walFileName(1, pos, SEG)), 'r');
    try {
      const buf = Buffer.alloc(n);
      await fh.read(buf, 0, n, inSeg);
      parts.push(buf);
    } finally {
      await fh.close();
    }
    pos += BigInt(n);
  }
  return Buffer.concat(parts);
}

/** `n` bytes of record data from `lsn` on, skipping page headers. */
async function recordBytes(dataDir: string, lsn: Lsn, n: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  let pos = lsn;
  let need = n;
  while (need > 0) {
    if (pos % BigInt(PAGE) === 0n) {
      pos = advanceOverPages(pos, 0, PAGE, SEG) + (pos % BigInt(SEG) === 0n ? 40n : 24n);
      continue;
    }
    const room = PAGE - Number(pos % BigInt(PAGE));
    const take = Math.min(room, need);
    parts.push(await rawWal(dataDir, pos, pos + BigInt(take)));
    pos += BigInt(take);
    need -= take;
  }
  return Buffer.concat(parts);
}

/** The end LSN of transaction `xid`'s commit record, searching from `from` (an insert position before the COMMIT). */
async function commitRecordEnd(dataDir: string, from: Lsn, xid: number): Promise<Lsn> {
  let pos = from;
  if (pos % BigInt(PAGE) === 0n) pos += pos % BigInt(SEG) === 0n ? 40n : 24n;
  for (let i = 0; i < 1000; i++) {
    const header = await recordBytes(dataDir, pos, 24);
    const totLen = header.readUInt32LE(0);
    if (totLen === 0) throw new Error(`no commit record for xid ${xid} after ${formatLsn(from)}`);
    const end = alignedRecordEnd(advanceOverPages(pos, totLen, PAGE, SEG));
    const recXid = header.readUInt32LE(4);
    const info = header[16]!;
    const rmid = header[17]!;
    if (rmid === 1 /* RM_XACT_ID */ && (info & 0x70) === 0 /* XLOG_XACT_COMMIT */ && recXid === xid) return end;
    pos = nextRecordStart(end, PAGE, SEG);
  }
  throw new Error('commit record not found');
}

/** Commits one row and returns the end LSN of its commit record. */
async function commitRow(c: Compute, client: pg.Client, value: string): Promise<Lsn> {
  await client.query('BEGIN');
  await client.query('INSERT INTO t(v) VALUES ($1)', [value]);
  const r = await client.query<{ xid: string; lsn: string }>('SELECT txid_current()::text AS xid, pg_current_wal_insert_lsn()::text AS lsn');
  await client.query('COMMIT');
  return commitRecordEnd(c.dataDir, parseLsn(r.rows[0]!.lsn), Number(r.rows[0]!.xid));
}

/**
 * Runs `sql` (an autocommit write) and proves its COMMIT is stuck waiting for the synchronous
 * standby: the backend sits in wait event SyncRep and is still there 2 s later. PostgreSQL disarms
 * statement_timeout before the commit wait (finish_xact_command), so a timeout cannot show this;
 * a cancel can, and the COMMIT then returns with PostgreSQL's warning that it was not replicated.
 */
async function expectCommitBlocked(c: Compute, client: pg.Client, sql: string): Promise<void> {
  const warnings: string[] = [];
  const onNotice = (n: { message?: string }) => warnings.push(n.message ?? '');
  client.on('notice', onNotice);
  const pid = (await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
  let settled = false;
  const running = client.query(sql).finally(() => (settled = true));
  const admin = await c.client();
  try {
    const waiting = async () => {
      const r = await admin.query<{ wait_event: string | null }>('SELECT wait_event FROM pg_stat_activity WHERE pid = $1', [pid]);
      return r.rows[0]?.wait_event === 'SyncRep' ? true : undefined;
    };
    await waitFor('the COMMIT to wait for the safekeepers', waiting, 10_000);
    await sleep(2000);
    expect(settled).toBe(false);
    expect(await waiting()).toBe(true);
    await admin.query('SELECT pg_cancel_backend($1)', [pid]);
    await running;
    expect(warnings.join('\n')).toMatch(/canceling wait for synchronous replication/);
  } finally {
    await admin.end();
    client.off('notice', onNotice);
  }
}

// ---- lifecycle ------------------------------------------------------------------------------

beforeAll(async () => {
  root = mkdtempSync(path.join(os.tmpdir(), 'dc-pusher-'));
  chownForPostgres(root);
  template = path.join(root, 'template');
  await run(pgBin(install, 'initdb'), ['-D', template, '-U', SUPERUSER, '-A', 'trust', '--no-sync', '-E', 'UTF8', '--locale', 'C'], asPostgres);
  for (let i = 1; i <= 3; i++) {
    const pgPort = await freePort();
    const httpPort = await freePort();
    const sk: Sk = {
      proc: undefined,
      pgPort,
      httpPort,
      args: ['--id', String(i), '--dir', path.join(root, `sk${i}`), '--pg-port', String(pgPort), '--http-port', String(httpPort)],
    };
    sks.push(sk);
  }
  await Promise.all(sks.map((s) => startSkProcess(s)));
}, 180_000);

afterAll(async () => {
  for (const c of computes) {
    const pusher = livePusherPid(c.dataDir);
    if (c.child.exitCode === null && c.child.signalCode === null) await killCompute(c).catch(() => undefined);
    if (pusher !== undefined) {
      try {
        process.kill(pusher, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
  }
  await killAllProcesses();
  rmSync(root, { recursive: true, force: true });
});

describe('stock storage backend: WAL pusher and safekeepers', () => {
  let firstTimeline: { tenantId: string; timelineId: string; flush: Lsn } | undefined;

  it('makes every COMMIT durable on a quorum, mirrors the WAL byte for byte, and ends agreed after a fast shutdown', async () => {
    const c = await startCompute('fast');
    const pid = livePusherPid(c.dataDir);
    expect(pid).toBeDefined();
    expect(walPusherStatus(c.dataDir)).toMatchObject({ phase: 'streaming', alive: true });
    // Idempotent: a second call finds the running pusher.
    await afterReady(c);
    expect(livePusherPid(c.dataDir)).toBe(pid);

    const client = await c.client();
    try {
      await client.query('CREATE TABLE t (id serial PRIMARY KEY, v text)');
      const repl = await client.query<{ sync_state: string }>("SELECT sync_state FROM pg_stat_replication WHERE application_name = 'wal_pusher'");
      expect(repl.rows).toEqual([{ sync_state: 'sync' }]);
      let last = 0n;
      for (let i = 0; i < 3; i++) {
        const end = await commitRow(c, client, `row ${i}`);
        // The moment COMMIT returned, a quorum had flushed its commit record.
        expect(await quorumFlush(sks, c.tenantId, c.timelineId)).toBeGreaterThanOrEqual(end);
        const flushed = parseLsn((await client.query<{ l: string }>('SELECT pg_current_wal_flush_lsn()::text AS l')).rows[0]!.l);
        expect(flushed).toBeGreaterThanOrEqual(end);
        last = end;
      }
      // commit_lsn follows on a quorum.
      await waitFor('commit_lsn to cover the last commit', async () => {
        const commits = await Promise.all(sks.map(async (s) => parseLsn((await skStatus(s, c.tenantId, c.timelineId))!.commit_lsn)));
        return commits.filter((x) => x >= last).length >= 2 ? true : undefined;
      });
    } finally {
      await client.end();
    }

    await fastStop(c);
    await waitPusherGone(c);
    expect(walPusherStatus(c.dataDir)).toMatchObject({ phase: 'exited', alive: false });
    const control = await run(pgBin(install, 'pg_controldata'), ['-D', c.dataDir], asPostgres);
    const checkpoint = parseLsn(/Latest checkpoint location:\s+(\S+)/.exec(control.stdout)![1]!);
    const shutdownEnd = await checkpointRecordEnd(c.dataDir, 1, checkpoint, PAGE, SEG);
    const statuses = await Promise.all(sks.map((s) => skStatus(s, c.tenantId, c.timelineId)));
    for (const s of statuses) {
      expect(s).toBeDefined();
      // All three hold everything up to the end of the shutdown checkpoint, and know it is committed.
      expect(s!.flush_lsn).toBe(formatLsn(shutdownEnd));
      expect(s!.commit_lsn).toBe(s!.flush_lsn);
    }
    const start = parseLsn(statuses[0]!.timeline_start_lsn);
    const ours = await rawWal(c.dataDir, start, shutdownEnd);
    for (const sk of sks) {
      expect((await skWal(sk, c.tenantId, c.timelineId, start, shutdownEnd)).equals(ours)).toBe(true);
    }
    // Already agreed: sync confirms the same LSN.
    const sync = await runSync(c);
    expect(sync.stderr).not.toMatch(/error/);
    expect(sync.stdout.trim()).toBe(formatLsn(shutdownEnd));
    firstTimeline = { tenantId: c.tenantId, timelineId: c.timelineId, flush: shutdownEnd };
  });

  it('keeps acknowledged commits through SIGKILL of the postmaster and all backends; sync makes all agree', async () => {
    const c = await startCompute('sigkill');
    const client = await c.client();
    let end: Lsn;
    try {
      await client.query('CREATE TABLE t (id serial PRIMARY KEY, v text)');
      await commitRow(c, client, 'before');
      end = await commitRow(c, client, 'last acknowledged');
    } finally {
      client.end().catch(() => undefined);
    }
    await killCompute(c);
    // Nothing could be pushed after the kill that matters: the quorum already had it.
    expect(await quorumFlush(sks, c.tenantId, c.timelineId)).toBeGreaterThanOrEqual(end);

    const sync = await runSync(c);
    expect(sync.code, sync.stderr).toBe(0);
    const lsn = parseLsn(sync.stdout.trim());
    expect(lsn).toBeGreaterThanOrEqual(end);
    await waitPusherGone(c);
    const statuses = await Promise.all(sks.map((s) => skStatus(s, c.tenantId, c.timelineId)));
    for (const s of statuses) {
      expect(s!.flush_lsn).toBe(formatLsn(lsn));
      expect(s!.commit_lsn).toBe(formatLsn(lsn));
    }
    const start = parseLsn(statuses[0]!.timeline_start_lsn);
    const ours = await rawWal(c.dataDir, start, lsn);
    for (const sk of sks) expect((await skWal(sk, c.tenantId, c.timelineId, start, lsn)).equals(ours)).toBe(true);
  });

  it('blocks COMMIT while two of three safekeepers are down and resumes when one returns', async () => {
    const c = await startCompute('quorum');
    const client = await c.client();
    const waiter = await c.client();
    try {
      await client.query('CREATE TABLE t (id serial PRIMARY KEY, v text)');
      await stopSk(sks[1]!);
      await stopSk(sks[2]!);
      await expectCommitBlocked(c, client, "INSERT INTO t(v) VALUES ('cancelled while waiting')");

      // A commit that nobody cancels waits...
      let done = false;
      const pending = waiter.query("INSERT INTO t(v) VALUES ('waits for the quorum')").then(() => (done = true));
      await sleep(1000);
      expect(done).toBe(false);
      // ...until a second safekeeper is back.
      await startSkProcess(sks[1]!);
      await Promise.race([pending, sleep(30_000).then(() => Promise.reject(new Error('COMMIT did not resume')))]);
      expect(done).toBe(true);
      const flushed = parseLsn((await client.query<{ l: string }>('SELECT pg_current_wal_flush_lsn()::text AS l')).rows[0]!.l);
      const end = await commitRow(c, client, 'with two of three');
      expect(await quorumFlush(sks, c.tenantId, c.timelineId)).toBeGreaterThanOrEqual(end);

      // The third catches up too, from its peers or the pusher's buffer.
      await startSkProcess(sks[2]!);
      await waitFor('the returning safekeeper to catch up', async () => {
        const s = await skStatus(sks[2]!, c.tenantId, c.timelineId);
        return s && parseLsn(s.flush_lsn) >= flushed ? true : undefined;
      });
      // The returning safekeepers got what they missed from a peer: the pusher no longer held it.
      expect(readFileSync(path.join(c.dataDir, 'wal_pusher.log'), 'utf8')).toMatch(
        new RegExp(`safekeeper 127\\.0\\.0\\.1:${sks[1]!.pgPort}: caught up .* from 127\\.0\\.0\\.1:${sks[0]!.pgPort}`),
      );
    } finally {
      await client.end();
      await waiter.end();
      for (const sk of sks) if (!sk.proc) await startSkProcess(sk);
    }
    await fastStop(c);
    await waitPusherGone(c);
    const statuses = await Promise.all(sks.map((s) => skStatus(s, c.tenantId, c.timelineId)));
    expect(new Set(statuses.map((s) => s!.flush_lsn)).size).toBe(1);
    for (const s of statuses) expect(s!.commit_lsn).toBe(s!.flush_lsn);
  });

  it('is fenced off by a sync: a newer term stops the old pusher, so its commits block instead of forking', async () => {
    const c = await startCompute('fenced');
    const client = await c.client();
    try {
      await client.query('CREATE TABLE t (id serial PRIMARY KEY, v text)');
      const end = await commitRow(c, client, 'before the sync');
      const pusher = livePusherPid(c.dataDir)!;
      const sync = await runSync(c);
      expect(sync.code, sync.stderr).toBe(0);
      expect(parseLsn(sync.stdout.trim())).toBeGreaterThanOrEqual(end);
      await waitFor('the fenced pusher to exit', async () => (processStartTime(pusher) === undefined ? true : undefined));
      expect(walPusherStatus(c.dataDir)).toMatchObject({ phase: 'failed', alive: false });
      expect(walPusherStatus(c.dataDir)?.error).toMatch(/superseded/);
      await expectCommitBlocked(c, client, "INSERT INTO t(v) VALUES ('after the sync')");
    } finally {
      await client.end();
    }
    await killCompute(c);
  });

  it('restarts a killed pusher without losing its place', async () => {
    const c = await startCompute('pusher-restart');
    const client = await c.client();
    try {
      await client.query('CREATE TABLE t (id serial PRIMARY KEY, v text)');
      await commitRow(c, client, 'first');
      const firstPid = livePusherPid(c.dataDir)!;
      const termBefore = (await skStatus(sks[0]!, c.tenantId, c.timelineId))!.acceptor_state.term;
      process.kill(firstPid, 'SIGKILL');
      await waitFor('the pusher to die', async () => (processStartTime(firstPid) === undefined ? true : undefined));

      await expectCommitBlocked(c, client, "INSERT INTO t(v) VALUES ('while no pusher runs')");

      await afterReady(c);
      expect(livePusherPid(c.dataDir)).not.toBe(firstPid);
      expect((await skStatus(sks[0]!, c.tenantId, c.timelineId))!.acceptor_state.term).toBeGreaterThan(termBefore);
      const end = await commitRow(c, client, 'after the restart');
      expect(await quorumFlush(sks, c.tenantId, c.timelineId)).toBeGreaterThanOrEqual(end);
      expect((await client.query('SELECT count(*)::int AS n FROM t')).rows[0]).toEqual({ n: 3 });
    } finally {
      await client.end();
    }
    await fastStop(c);
    await waitPusherGone(c);
  });

  it('refuses to push from a compute whose image is older than the safekeepers’ WAL', async () => {
    expect(firstTimeline).toBeDefined();
    const { tenantId, timelineId, flush } = firstTimeline!;
    const c = await startPostgres('stale', tenantId, timelineId);
    await expect(
      afterReady(c),
    ).rejects.toThrow(/must start from a basebackup at/);
    await killCompute(c);
    for (const sk of sks) expect((await skStatus(sk, tenantId, timelineId))!.flush_lsn).toBe(formatLsn(flush));
  });

  it('fails the sync command clearly for a timeline the safekeepers do not know', async () => {
    const dir = path.join(root, 'unknown');
    mkdirSync(dir);
    writeFileSync(
      path.join(dir, 'postgresql.conf'),
      stockStorageBackend.postgresqlConf({ tenantId: neonId(), timelineId: neonId(), safekeepers: sks.map((s) => `127.0.0.1:${s.pgPort}`), mode: 'Primary' }),
    );
    const [cmd, ...args] = stockStorageBackend.syncSafekeepersCommand(install.binDir);
    const r = await run(cmd!, [...args, '-D', dir]).then(
      () => ({ code: 0, stderr: '' }),
      (e: { code: number; stderr: string }) => e,
    );
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(/unknown to the safekeepers/);
  });
});
