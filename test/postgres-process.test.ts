import { spawn } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  symlinkSync,
  truncateSync,
  writeFileSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ApplicationFailure } from '@temporalio/common';
import { MockActivityEnvironment } from '@temporalio/testing';
import pg from 'pg';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { createComputePostgres, PostgresFailure } from '../drivers/postgres';
import { writePostgresqlConf } from '../drivers/postgres/config';
import { runInitdb } from '../drivers/postgres/initdb';
import {
  assertIncarnation,
  dangerousPgdataReason,
  markBasebackupComplete,
  pgdataLooksIntact,
  pgdataMarkerPath,
  prepareFreshPgdata,
} from '../drivers/postgres/pgdata';
import { findRunningPostmaster, isProcessAlive, readPostmasterPid, startPostmaster, waitForPostmasterExit } from '../drivers/postgres/process';
import { resolveServerUser } from '../drivers/postgres/server-user';
import { findPostgres } from '../common/pg-binaries';
import { projectRoot, tsNodeArgs } from '../common/paths';
import { freePort } from '../dev/processes';
import { parseComputeConfig, type ComputeSpec } from '../model/compute-spec';

const pgBinDir = findPostgres({ pgBinDir: process.env.PG_BIN_DIR }).binDir;
const owner = resolveServerUser();
const ADMIN = 'cloud_admin';

const roots: string[] = [];
const pgdatas: string[] = [];

/** A temp directory the server user can use (tests may run as root; Postgres then runs as `postgres`). */
function scratchRoot(): string {
  const root = mkdtempSync(path.join(os.tmpdir(), 'dc-pgproc-'));
  chmodSync(root, 0o755);
  if (owner) chownSync(root, owner.uid, owner.gid);
  roots.push(root);
  return root;
}

function specFor(port: number, socketDir: string, extraSettings: { name: string; value: string; vartype: string }[] = []): ComputeSpec {
  const parsed = parseComputeConfig({
    format_version: 1,
    suspend_timeout_seconds: 300,
    tenant_id: '3aa8fcc61f6d357410b7de754b1d9001',
    timeline_id: 'de200bd42b49cc1814412c7e592dd6e9',
    pageserver_connstring: 'postgresql://127.0.0.1:1',
    safekeeper_connstrings: ['127.0.0.1:2'],
    cluster: {
      roles: [],
      databases: [],
      settings: [
        { name: 'listen_addresses', value: '127.0.0.1', vartype: 'string' },
        { name: 'port', value: String(port), vartype: 'integer' },
        { name: 'unix_socket_directories', value: socketDir, vartype: 'string' },
        { name: 'fsync', value: 'off', vartype: 'bool' },
        { name: 'shared_buffers', value: '1024', vartype: 'integer' },
        { name: 'max_connections', value: '20', vartype: 'integer' },
        ...extraSettings,
      ],
    },
  });
  if (!parsed.ok) throw new Error(parsed.errors.join('; '));
  return parsed.config.spec;
}

/** A fresh PGDATA with an initdb'd cluster and compute_ctl's postgresql.conf for `spec`, like after a base backup. */
async function scratchCompute(extraSettings: { name: string; value: string; vartype: string }[] = []) {
  const root = scratchRoot();
  const pgdata = path.join(root, 'pgdata');
  pgdatas.push(pgdata);
  await prepareFreshPgdata(pgdata, { owner });
  await runInitdb({ pgBinDir, pgdata, superuser: ADMIN, owner });
  const port = await freePort();
  const spec = specFor(port, root, extraSettings);
  await writePostgresqlConf(pgdata, spec, { owner });
  await markBasebackupComplete(pgdata, { lsn: '0/0' }, { owner });
  const activities = createComputePostgres({ pgBinDir, pgdata, admin: { user: ADMIN }, stopTimeoutMs: 30_000 });
  return { root, pgdata, port, spec, activities, logPath: `${pgdata}.log` };
}

async function query(port: number, sql: string): Promise<pg.QueryResult> {
  const client = new pg.Client({ host: '127.0.0.1', port, user: ADMIN, database: 'postgres' });
  await client.connect();
  try {
    return await client.query(sql);
  } finally {
    await client.end();
  }
}

async function expectFailure(promise: Promise<unknown>, type: string, nonRetryable: boolean): Promise<ApplicationFailure> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ApplicationFailure);
  const failure = err as ApplicationFailure;
  expect(failure.type).toBe(type);
  expect(failure.nonRetryable).toBe(nonRetryable);
  return failure;
}

/** Polls `condition` every 50 ms until it holds or `timeoutMs` passes. */
async function eventually(condition: () => Promise<boolean>, what: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

/** Every process (postmaster and its children) whose working directory is `pgdata`. */
function processesIn(pgdata: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readlinkSync(`/proc/${entry}/cwd`) === pgdata) {
        const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
        if (stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z') pids.push(Number(entry));
      }
    } catch {
      // gone meanwhile, or not ours to read
    }
  }
  return pids;
}

afterEach(async () => {
  // Kill whatever a failed test left running in our data directories.
  for (const pgdata of pgdatas) {
    const running = await findRunningPostmaster(pgdata);
    if (running) process.kill(running.pid, 'SIGQUIT');
  }
});

afterAll(async () => {
  for (const pgdata of pgdatas) {
    for (const pid of processesIn(pgdata)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }
  for (const root of roots) rmSync(root, { recursive: true, force: true });
});

describe('PGDATA', () => {
  it('refuses dangerous paths', async () => {
    for (const [p, reason] of [
      ['/', /two levels below/],
      ['relative/pgdata', /absolute path/],
      [os.homedir(), /home directory|two levels/],
      ['/usr/lib/postgresql', /system directory \/usr/],
      [path.dirname(process.cwd()), /working directory|two levels/],
    ] as const) {
      expect(dangerousPgdataReason(p), p).toMatch(reason);
      await expectFailure(prepareFreshPgdata(p), PostgresFailure.UnsafePgdata, true);
    }
  });

  it('refuses a non-empty directory it did not create, a symlink and a file; adopts an empty one', async () => {
    const root = scratchRoot();
    const foreign = path.join(root, 'someone-elses-data');
    mkdirSync(foreign);
    writeFileSync(path.join(foreign, 'precious.txt'), 'keep me');
    const failure = await expectFailure(prepareFreshPgdata(foreign), PostgresFailure.UnsafePgdata, true);
    expect(failure.message).toMatch(/did not create/);
    expect(readFileSync(path.join(foreign, 'precious.txt'), 'utf8')).toBe('keep me');

    const link = path.join(root, 'link');
    symlinkSync(foreign, link);
    expect((await expectFailure(prepareFreshPgdata(link), PostgresFailure.UnsafePgdata, true)).message).toMatch(/symbolic link/);
    writeFileSync(path.join(root, 'file'), 'x');
    expect((await expectFailure(prepareFreshPgdata(path.join(root, 'file')), PostgresFailure.UnsafePgdata, true)).message).toMatch(/not a directory/);

    const empty = path.join(root, 'empty');
    mkdirSync(empty);
    expect(await prepareFreshPgdata(empty)).toEqual({ pgdata: empty, wiped: true });
    expect(existsSync(pgdataMarkerPath(empty))).toBe(true);
  });

  it('wipes its own PGDATA to an empty 0700 directory, and knows an intact one from a wiped or half-written one', async () => {
    const { pgdata } = await scratchCompute();
    expect(await pgdataLooksIntact(pgdata)).toMatchObject({ intact: true, problems: [], basebackup: { lsn: '0/0' } });

    truncateSync(path.join(pgdata, 'global', 'pg_control'), 100);
    expect((await pgdataLooksIntact(pgdata)).problems).toEqual(['global/pg_control has 100 bytes, not 8192']);

    expect(await prepareFreshPgdata(pgdata, { owner, incarnation: 'start-2' })).toEqual({ pgdata, wiped: true });
    const { mode, uid } = statSync(pgdata);
    expect(mode & 0o777).toBe(0o700);
    if (owner) expect(uid).toBe(owner.uid);
    const check = await pgdataLooksIntact(pgdata);
    expect(check.intact).toBe(false);
    expect(check.problems).toEqual([
      'PG_VERSION is missing',
      'global/pg_control is missing',
      '.durable-compute-basebackup-complete is missing (the base backup never finished unpacking)',
    ]);
    await assertIncarnation(pgdata, 'start-2');
    await expectFailure(assertIncarnation(pgdata, 'start-1'), PostgresFailure.PgdataLost, true);

    rmSync(pgdata, { recursive: true });
    expect(await pgdataLooksIntact(pgdata)).toEqual({ intact: false, problems: [`${pgdata} does not exist`] });
    await expectFailure(assertIncarnation(pgdata, 'start-2'), PostgresFailure.PgdataLost, true);
  });
});

describe('the postmaster', () => {
  it('starts detached in its own session, is ready via postmaster.pid, and a second start finds it', async () => {
    const { pgdata, port, activities } = await scratchCompute();
    const started = await activities.startPostgres();
    expect(started).toMatchObject({ alreadyRunning: false, port });
    const pidFile = await readPostmasterPid(pgdata);
    expect(pidFile).toMatchObject({ pid: started.pid, status: 'ready', port });
    // Own session and process group: a terminal's Ctrl-C or the worker's group kill does not reach it.
    const stat = readFileSync(`/proc/${started.pid}/stat`, 'utf8');
    const [, , pgrp, session] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    expect(Number(pgrp)).toBe(started.pid);
    expect(Number(session)).toBe(started.pid);
    expect((await query(port, 'SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);

    const again = await activities.startPostgres();
    expect(again).toMatchObject({ pid: started.pid, alreadyRunning: true });
    expect(await activities.postmasterStatus()).toEqual({ running: true, pid: started.pid, status: 'ready', port });
    await activities.stopPostgres({ mode: 'immediate' });
  });

  it('outlives the process that started it; kill -9 is then noticed by polling, and a restart over the stale postmaster.pid works', async () => {
    const { pgdata, port, activities, logPath } = await scratchCompute();
    // Another Node process starts Postgres and exits, as a compute worker that restarts would.
    const script = `
      const { startPostmaster } = await import(${JSON.stringify(path.join(projectRoot, 'drivers/postgres/process.ts'))});
      const started = await startPostmaster({ pgBinDir: ${JSON.stringify(pgBinDir)}, pgdata: ${JSON.stringify(pgdata)}, owner: ${JSON.stringify(owner ?? null)} ?? undefined });
      console.log(JSON.stringify(started));
    `;
    const starter = spawn(process.execPath, [...tsNodeArgs(), '--input-type=module', '--eval', script], { cwd: projectRoot, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    starter.stdout.on('data', (d: Buffer) => (out += d.toString()));
    starter.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const code = await new Promise<number | null>((resolve) => starter.on('exit', resolve));
    expect(code, out).toBe(0);
    const { pid } = JSON.parse(out.trim().split('\n').pop()!) as { pid: number };

    const found = await findRunningPostmaster(pgdata);
    expect(found).toMatchObject({ pid, ourChild: false, status: 'ready' });
    expect((await query(port, 'SELECT 2 AS two')).rows).toEqual([{ two: 2 }]);

    const ticks: number[] = [];
    const exitPromise = waitForPostmasterExit({ pid, pgdata, pollMs: 50 }, (ms) => ticks.push(ms));
    await eventually(async () => ticks.length >= 2, 'the wait to poll');
    process.kill(pid, 'SIGKILL');
    const exit = await exitPromise;
    expect(exit).toMatchObject({ pid, exitCode: null, signal: null, message: `postmaster exited unexpectedly (pid ${pid})` });
    expect(exit.logTail).toContain('database system is ready to accept connections');
    expect(ticks.length).toBeGreaterThan(0);
    expect(await findRunningPostmaster(pgdata)).toBeUndefined();
    expect(existsSync(path.join(pgdata, 'postmaster.pid'))).toBe(true); // stale

    // The killed postmaster's children notice its death and leave, and init reaps the orphaned
    // postmaster (until then its zombie pid still "owns" the socket lock file); then a start succeeds.
    await eventually(async () => processesIn(pgdata).length === 0, 'orphaned backends to exit');
    await eventually(async () => !existsSync(`/proc/${pid}`), 'init to reap the killed postmaster', 60_000);
    const restarted = await activities.startPostgres();
    expect(restarted.alreadyRunning).toBe(false);
    expect(restarted.pid).not.toBe(pid);
    expect(readFileSync(logPath, 'utf8')).toContain('database system was interrupted');
    await activities.stopPostgres({ mode: 'fast' });
  });

  it('reports kill -9 of its own child with the signal, and the watch returns at once', async () => {
    const { activities } = await scratchCompute();
    const { pid } = await activities.startPostgres();
    const watch = activities.watchPostgres({ reportAfterSeconds: 60, lastActive: null });
    await sleep(300);
    process.kill(pid, 'SIGKILL');
    const started = Date.now();
    const result = await watch;
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(result.exited).toBe(true);
    expect(result.exit).toMatchObject({ pid, exitCode: null, signal: 'SIGKILL', message: `postmaster was killed by SIGKILL (pid ${pid})` });
  });

  it('fails at once, with the exit status and the log tail, when the configuration is broken', async () => {
    const { activities, pgdata } = await scratchCompute([{ name: 'shared_buffers', value: 'plenty', vartype: 'enum' }]);
    const started = Date.now();
    const failure = await expectFailure(activities.startPostgres(), PostgresFailure.StartFailed, true);
    expect(Date.now() - started).toBeLessThan(20_000);
    expect(failure.message).toMatch(/postmaster exited before it was ready with code 1/);
    expect(failure.message).toMatch(/invalid value for parameter "shared_buffers": "plenty"/);
    expect(failure.details?.[0]).toMatchObject({ exitCode: 1, signal: null });
    expect(await findRunningPostmaster(pgdata)).toBeUndefined();
  });

  it('times out (retryably) when not ready in time, leaving Postgres to a retried start', async () => {
    const { activities, pgdata } = await scratchCompute();
    const failure = await expectFailure(
      startPostmaster({ pgBinDir, pgdata, owner, timeoutMs: 1 }),
      PostgresFailure.StartTimeout,
      false,
    );
    expect(failure.message).toMatch(/not ready after/);
    const retried = await activities.startPostgres();
    expect(retried.alreadyRunning).toBe(true);
    await activities.stopPostgres({ mode: 'fast' });
  });

  it('stops in each mode with the matching signal, and stopping a stopped Postgres is a no-op', async () => {
    const { activities, logPath } = await scratchCompute();
    for (const [mode, logLine] of [
      ['fast', 'received fast shutdown request'],
      ['immediate', 'received immediate shutdown request'],
      ['smart', 'received smart shutdown request'],
    ] as const) {
      const { pid } = await activities.startPostgres();
      const stopped = await activities.stopPostgres({ mode });
      expect(stopped).toMatchObject({ wasRunning: true, pid, exit: { pid, signal: null } });
      expect(stopped.exit?.exitCode).toBe(0);
      expect(readFileSync(logPath, 'utf8')).toContain(logLine);
      expect(await isProcessAlive(pid)).toBe(false);
    }
    expect(await activities.stopPostgres({ mode: 'fast' })).toEqual({ wasRunning: false });
    await expectFailure(activities.stopPostgres({ mode: 'gentle' as never }), PostgresFailure.InvalidSpec, true);
  });

  it('fails non-retryably when the postgres binary is missing', async () => {
    const { pgdata } = await scratchCompute();
    const failure = await expectFailure(startPostmaster({ pgBinDir: path.join(os.tmpdir(), 'no-such-bin'), pgdata }), PostgresFailure.BinaryMissing, true);
    expect(failure.message).toMatch(/no-such-bin\/postgres is missing or not executable/);
  });

  it('preparePgdata stops a leftover postmaster before wiping; later steps check the incarnation', async () => {
    const { activities, pgdata, spec } = await scratchCompute();
    const { pid } = await activities.startPostgres();
    const prepared = await activities.preparePgdata({ incarnation: 'start-7' });
    expect(prepared).toEqual({ pgdata, wiped: true, stoppedPid: pid });
    expect(await isProcessAlive(pid)).toBe(false);
    expect(readdirSync(pgdata)).toEqual(['.durable-compute-incarnation']);
    expect(await activities.watchPostgres({ reportAfterSeconds: 5, lastActive: null })).toMatchObject({ exited: true, exit: { message: `postmaster is not running on ${pgdata}` } });
    await expectFailure(activities.reconfigurePostgres({ spec }), PostgresFailure.NotRunning, true);

    await activities.writePostgresConfig({ incarnation: 'start-7', spec });
    expect(readFileSync(path.join(pgdata, 'postgresql.conf'), 'utf8')).toContain("include_if_exists = 'compute_ctl_temp_override.conf'");
    expect(await activities.prepareStartupFiles({ incarnation: 'start-7', spec, extraHbaLines: ['local all all trust'] })).toEqual({ hbaLinesAdded: 2, standby: false });
    await expectFailure(activities.writePostgresConfig({ incarnation: 'start-6', spec }), PostgresFailure.PgdataLost, true);
    await expectFailure(activities.startPostgres({ incarnation: 'start-6' }), PostgresFailure.PgdataLost, true);
    expect(await activities.checkPgdata({ incarnation: 'start-7' })).toMatchObject({ intact: false });
    await expectFailure(activities.writePostgresConfig({ incarnation: 'start-7', spec: { ...spec, tenant_id: 'nope' } }), PostgresFailure.InvalidSpec, true);
  });

  it('heartbeats while waiting for ready, and a cancelled watch stops promptly', async () => {
    const { activities } = await scratchCompute();
    const env = new MockActivityEnvironment();
    const beats: unknown[] = [];
    env.on('heartbeat', (d: unknown) => beats.push(d));
    await env.run(activities.startPostgres, {});
    expect(beats.length).toBeGreaterThan(0);
    expect(beats[0]).toHaveProperty('waitingForReadyMs');
    const watchEnv = new MockActivityEnvironment();
    const watchBeats: unknown[] = [];
    watchEnv.on('heartbeat', (d: unknown) => watchBeats.push(d));
    const watch = watchEnv.run(activities.watchPostgres, { reportAfterSeconds: 60, lastActive: null });
    await eventually(async () => watchBeats.length >= 2, 'watch heartbeats', 20_000);
    watchEnv.cancel();
    const started = Date.now();
    await expect(watch).rejects.toThrow();
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(watchBeats[0]).toHaveProperty('lastActive');

    // Each beat that reaches the server is a billed action: the watch beats every half heartbeat
    // timeout, not on every 500 ms sample (which would be about 7 beats here).
    const quietEnv = new MockActivityEnvironment({ heartbeatTimeoutMs: 2000 });
    const quietBeats: number[] = [];
    const quietStarted = Date.now();
    quietEnv.on('heartbeat', () => quietBeats.push(Date.now() - quietStarted));
    const round = await quietEnv.run(activities.watchPostgres, { reportAfterSeconds: 3.2, lastActive: null });
    expect(round).toMatchObject({ exited: false });
    expect(quietBeats.length).toBeGreaterThanOrEqual(2);
    expect(quietBeats.length).toBeLessThanOrEqual(4);
    expect(quietBeats[0]).toBeGreaterThanOrEqual(900);
    await activities.stopPostgres({ mode: 'fast' });
  });
});
