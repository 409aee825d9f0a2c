import { writeFileAtomicSync } from '../../common/atomic-write';
import { execFile, execFileSync, spawn } from 'node:child_process';
import { childEnv, pgServerChildEnv } from '../../common/child-env';
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import pg from 'pg';
import { pgBin, type PgInstallation } from '../../common/pg-binaries';
import { chownForPostgres, pgSpawnIdentity } from '../../common/pg-identity';
import { bulkLoadSettings, type HostResources } from './bulk-load-settings';

/**
 * The importer's throwaway Postgres: initdb'd into `<workdir>/pgdata`, reachable only through a
 * private unix socket directory and a loopback port, tuned for a bulk load, and finally shut down
 * cleanly so its pg_control describes a consistent data directory.
 *
 * Every step is idempotent: an initialized data directory is reused, a running server is kept,
 * and a server that crashed is recovered and stopped cleanly.
 */

export const SCRATCH_SUPERUSER = 'cloud_admin';

const run = promisify(execFile);

export interface ScratchPaths {
  workdir: string;
  pgdata: string;
  socketDir: string;
  logFile: string;
  stateFile: string;
  initializedMarker: string;
}

export function scratchPaths(workdir: string): ScratchPaths {
  return {
    workdir,
    pgdata: path.join(workdir, 'pgdata'),
    socketDir: path.join(workdir, 'run'),
    logFile: path.join(workdir, 'postgres.log'),
    stateFile: path.join(workdir, 'scratch.json'),
    initializedMarker: path.join(workdir, 'pgdata.initialized'),
  };
}

interface ScratchState {
  port: number;
  /** Password of the superuser over TCP; the unix socket trusts the (private) directory's owner. */
  password: string;
  locale: string;
}

export interface ScratchConnection {
  socketDir: string;
  port: number;
  user: string;
}

function readState(paths: ScratchPaths): ScratchState | undefined {
  try {
    return JSON.parse(readFileSync(paths.stateFile, 'utf8')) as ScratchState;
  } catch {
    return undefined;
  }
}

function writeState(paths: ScratchPaths, state: ScratchState): void {
  writeFileAtomicSync(paths.stateFile, JSON.stringify(state), { mode: 0o600 });
}

async function portIsFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen({ host: '127.0.0.1', port, exclusive: true }, () => server.close(() => resolve(true)));
  });
}

async function freeLoopbackPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen({ host: '127.0.0.1', port: 0 }, () => {
      const addr = server.address();
      server.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no free port'))));
    });
  });
}

/** C.UTF-8 where the C library has it (as the reference asks), else plain C. */
function chooseLocale(): string {
  try {
    const out = execFileSync('locale', ['-a'], { encoding: 'utf8', timeout: 10_000, stdio: ['ignore', 'pipe', 'ignore'], env: childEnv() });
    if (out.split('\n').some((l) => /^c\.utf-?8$/i.test(l.trim()))) return 'C.UTF-8';
  } catch {
    /* no locale tool: fall back */
  }
  return 'C';
}

function logTail(file: string, lines = 15): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

/** initdb into `<workdir>/pgdata` unless a completed earlier initdb is there. */
export async function initScratchDataDir(install: PgInstallation, workdir: string): Promise<{ reused: boolean }> {
  const paths = scratchPaths(workdir);
  mkdirSync(workdir, { recursive: true, mode: 0o700 });
  if (existsSync(paths.initializedMarker) && existsSync(path.join(paths.pgdata, 'PG_VERSION')) && readState(paths)) {
    return { reused: true };
  }
  // A data directory without the marker is the remains of an interrupted initdb.
  rmSync(paths.pgdata, { recursive: true, force: true });
  rmSync(paths.initializedMarker, { force: true });
  mkdirSync(paths.socketDir, { recursive: true, mode: 0o700 });
  chownForPostgres(workdir, false);
  chownForPostgres(paths.socketDir, false);
  const state: ScratchState = { port: await freeLoopbackPort(), password: randomBytes(24).toString('hex'), locale: chooseLocale() };
  const pwfile = path.join(workdir, 'initdb.pwfile');
  writeFileSync(pwfile, `${state.password}\n`, { mode: 0o600 });
  chownForPostgres(pwfile, false);
  try {
    await run(
      pgBin(install, 'initdb'),
      [
        '-D', paths.pgdata,
        '-U', SCRATCH_SUPERUSER,
        '-E', 'UTF8',
        '--locale', state.locale,
        '--auth-local', 'trust',
        '--auth-host', 'scram-sha-256',
        '--pwfile', pwfile,
        '--no-sync',
      ],
      { ...pgSpawnIdentity(), env: pgServerChildEnv({ LC_ALL: 'C' }), timeout: 600_000 },
    );
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`initdb into ${paths.pgdata} failed: ${(e.stderr || e.message).trim()}`);
  } finally {
    rmSync(pwfile, { force: true });
  }
  writeState(paths, state);
  writeFileSync(paths.initializedMarker, new Date().toISOString());
  return { reused: false };
}

async function pgCtlStatus(install: PgInstallation, pgdata: string): Promise<'running' | 'stopped'> {
  try {
    await run(pgBin(install, 'pg_ctl'), ['status', '-D', pgdata], { ...pgSpawnIdentity(), timeout: 30_000 });
    return 'running';
  } catch (err) {
    // pg_ctl status exits 3 when no server runs, 4 when the directory is not a data directory.
    const code = (err as { code?: number }).code;
    if (code === 3) return 'stopped';
    throw new Error(`pg_ctl status -D ${pgdata} failed: ${(err as Error).message}`);
  }
}

async function canConnect(conn: ScratchConnection, database = 'postgres'): Promise<boolean> {
  const client = new pg.Client({ host: conn.socketDir, port: conn.port, user: conn.user, database, connectionTimeoutMillis: 5000 });
  try {
    await client.connect();
    await client.query('SELECT 1');
    return true;
  } catch {
    return false;
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** Starts the scratch server with the bulk-load settings unless it already runs. */
export async function ensureScratchRunning(opts: {
  install: PgInstallation;
  workdir: string;
  resources: HostResources;
  restoreJobs: number;
  signal?: AbortSignal;
  startTimeoutMs?: number;
}): Promise<ScratchConnection & { started: boolean }> {
  const paths = scratchPaths(opts.workdir);
  const state = readState(paths);
  if (!state || !existsSync(paths.initializedMarker)) throw new Error(`The scratch data directory in ${opts.workdir} is not initialized`);
  const conn = { socketDir: paths.socketDir, port: state.port, user: SCRATCH_SUPERUSER };
  // sockaddr_un holds 107 bytes: Postgres refuses a longer socket path at startup.
  if (Buffer.byteLength(path.join(paths.socketDir, '.s.PGSQL.65535')) > 107) {
    throw new Error(`The work directory ${opts.workdir} is too long for a unix socket path (${paths.socketDir}/.s.PGSQL.<port> must fit in 107 bytes); use a shorter one`);
  }
  if ((await pgCtlStatus(opts.install, paths.pgdata)) === 'running') {
    // Our own server: give it the usual time to finish starting (e.g. after a crash recovery).
    const deadline = Date.now() + (opts.startTimeoutMs ?? 600_000);
    while (Date.now() < deadline) {
      if (await canConnect(conn)) return { ...conn, started: false };
      if ((await pgCtlStatus(opts.install, paths.pgdata)) !== 'running') break;
      await sleep(500);
    }
    if ((await pgCtlStatus(opts.install, paths.pgdata)) === 'running') {
      throw new Error(`The scratch Postgres in ${paths.pgdata} runs but accepts no connections. Last lines of ${paths.logFile}:\n${logTail(paths.logFile)}`);
    }
  }
  if (!(await portIsFree(state.port))) {
    state.port = await freeLoopbackPort();
    writeState(paths, state);
    conn.port = state.port;
  }
  mkdirSync(paths.socketDir, { recursive: true, mode: 0o700 });
  chownForPostgres(paths.socketDir, false);
  const settings: Record<string, string> = {
    ...bulkLoadSettings(opts.resources, opts.restoreJobs),
    listen_addresses: '127.0.0.1',
    port: String(state.port),
    unix_socket_directories: paths.socketDir,
    unix_socket_permissions: '0700',
  };
  const args = ['-D', paths.pgdata, ...Object.entries(settings).flatMap(([k, v]) => ['-c', `${k}=${v}`])];
  const logFd = openSync(paths.logFile, 'a');
  let exited: string | undefined;
  try {
    // Settings go on the command line (no shell, nothing written into the data directory), so
    // the uploaded directory keeps initdb's stock configuration. Detached: the server outlives
    // this activity and serves the next ones until the clean stop.
    const child = spawn(pgBin(opts.install, 'postgres'), args, {
      ...pgSpawnIdentity(),
      detached: true,
      stdio: ['ignore', logFd, logFd],
      env: pgServerChildEnv({ LC_ALL: 'C' }),
    });
    child.once('exit', (code, signal) => (exited = `exit ${code ?? signal}`));
    child.once('error', (err) => (exited = `could not start: ${err.message}`));
    child.unref();
  } finally {
    closeSync(logFd);
  }
  const deadline = Date.now() + (opts.startTimeoutMs ?? 600_000);
  for (;;) {
    if (await canConnect(conn)) return { ...conn, started: true };
    if (exited) throw new Error(`The scratch Postgres exited during startup (${exited}). Last lines of ${paths.logFile}:\n${logTail(paths.logFile)}`);
    if (opts.signal?.aborted) throw opts.signal.reason;
    if (Date.now() > deadline) throw new Error(`The scratch Postgres did not accept connections within ${(opts.startTimeoutMs ?? 600_000) / 1000} s. Last lines of ${paths.logFile}:\n${logTail(paths.logFile)}`);
    await sleep(200);
  }
}

export async function withScratchClient<T>(conn: ScratchConnection, database: string, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ host: conn.socketDir, port: conn.port, user: conn.user, database, connectionTimeoutMillis: 30_000 });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** Creates `database` (UTF8, from template0) unless it exists. */
export async function ensureDatabase(conn: ScratchConnection, database: string): Promise<boolean> {
  return withScratchClient(conn, 'postgres', async (client) => {
    const exists = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [database]);
    if (exists.rowCount) return false;
    await client.query(`CREATE DATABASE ${client.escapeIdentifier(database)} TEMPLATE template0 ENCODING 'UTF8'`);
    return true;
  });
}

/** Drops (terminating any sessions, e.g. an interrupted restore's) and recreates `database`. */
export async function recreateDatabase(conn: ScratchConnection, database: string): Promise<void> {
  await withScratchClient(conn, 'postgres', async (client) => {
    await client.query(`DROP DATABASE IF EXISTS ${client.escapeIdentifier(database)} WITH (FORCE)`);
    await client.query(`CREATE DATABASE ${client.escapeIdentifier(database)} TEMPLATE template0 ENCODING 'UTF8'`);
  });
}

export interface ControlSummary {
  state: string;
  checkpointLsn: string;
}

export async function readControlSummary(install: PgInstallation, pgdata: string): Promise<ControlSummary> {
  const { stdout } = await run(pgBin(install, 'pg_controldata'), ['-D', pgdata], { env: pgServerChildEnv({ LC_ALL: 'C' }), timeout: 30_000 });
  const field = (name: string) => new RegExp(`^${name}:\\s*(.+)$`, 'm').exec(stdout)?.[1]?.trim();
  const state = field('Database cluster state');
  const checkpointLsn = field('Latest checkpoint location');
  if (!state || !checkpointLsn) throw new Error(`pg_controldata output for ${pgdata} lacks the cluster state or checkpoint location`);
  return { state, checkpointLsn };
}

/**
 * Stops the scratch server with a fast shutdown (a shutdown checkpoint, so pg_control is
 * consistent). If it had crashed, it is started once more so crash recovery runs, then stopped.
 */
export async function stopScratch(opts: {
  install: PgInstallation;
  workdir: string;
  resources: HostResources;
  restoreJobs: number;
  signal?: AbortSignal;
}): Promise<ControlSummary> {
  const paths = scratchPaths(opts.workdir);
  const pgCtlStop = async () => {
    try {
      await run(pgBin(opts.install, 'pg_ctl'), ['stop', '-D', paths.pgdata, '-m', 'fast', '-w', '-t', '3600'], { ...pgSpawnIdentity(), timeout: 3_700_000 });
    } catch (err) {
      if ((await pgCtlStatus(opts.install, paths.pgdata)) === 'running') throw new Error(`pg_ctl stop failed: ${(err as Error).message}`);
    }
  };
  if ((await pgCtlStatus(opts.install, paths.pgdata)) === 'running') await pgCtlStop();
  let summary = await readControlSummary(opts.install, paths.pgdata);
  if (summary.state !== 'shut down') {
    await ensureScratchRunning(opts);
    await pgCtlStop();
    summary = await readControlSummary(opts.install, paths.pgdata);
    if (summary.state !== 'shut down') throw new Error(`The scratch Postgres in ${paths.pgdata} is in state "${summary.state}" after a clean stop`);
  }
  return summary;
}

/** Stops the server if it runs (immediate: its data is being thrown away) and removes the work directory. */
export async function destroyScratch(install: PgInstallation, workdir: string): Promise<void> {
  const paths = scratchPaths(workdir);
  if (existsSync(path.join(paths.pgdata, 'PG_VERSION')) && (await pgCtlStatus(install, paths.pgdata)) === 'running') {
    await run(pgBin(install, 'pg_ctl'), ['stop', '-D', paths.pgdata, '-m', 'immediate', '-w', '-t', '120'], { ...pgSpawnIdentity(), timeout: 150_000 }).catch(() => undefined);
  }
  rmSync(workdir, { recursive: true, force: true });
}
