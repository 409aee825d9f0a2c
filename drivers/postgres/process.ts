import { spawn, type ChildProcess } from 'node:child_process';
import { childEnv } from '../../common/child-env';
import { constants } from 'node:fs';
import { access, chown, open, readFile, readlink, realpath, stat, unlink } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { nonRetryable, retryable } from '../../common/failures';
import { PostgresFailure } from './errors';
import { readLogTail, readTextIfExists } from './files';
import type { ServerUser } from './server-user';

/**
 * The postmaster's lifecycle. Postgres is started detached (its own session and process group,
 * output to a log file) so it keeps running when the worker that started it restarts; a later
 * worker finds it again through postmaster.pid. While the worker that started it lives, the exit
 * status is known; afterwards exit can only be noticed by polling.
 */

export type StopMode = 'smart' | 'fast' | 'immediate';

const STOP_SIGNALS: Record<StopMode, NodeJS.Signals> = { smart: 'SIGTERM', fast: 'SIGINT', immediate: 'SIGQUIT' };
/** How often a start looks at postmaster.pid for `ready` (pg_ctl -w looks every 100 ms). */
const READY_POLL_MS = 10;

export interface PostmasterPidFile {
  pid: number;
  dataDir: string;
  port?: number;
  socketDir?: string;
  listenAddress?: string;
  /** starting | stopping | ready | standby, once the postmaster has written it. */
  status?: string;
}

export interface PostmasterExit {
  pid: number;
  /** Known only when this process started the postmaster (and is its parent). */
  exitCode: number | null;
  signal: string | null;
  message: string;
  logTail: string;
}

interface OurChild {
  child: ChildProcess;
  pgdata: string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  exit?: { code: number | null; signal: NodeJS.Signals | null };
  logPath: string;
  logOffset: number;
}

/** Postmasters this process spawned, by pid: their exit status is ours to read. */
const ourChildren = new Map<number, OurChild>();

export async function readPostmasterPid(pgdata: string): Promise<PostmasterPidFile | undefined> {
  const text = await readTextIfExists(path.join(pgdata, 'postmaster.pid'));
  if (text === undefined) return undefined;
  const lines = text.replace(/\n$/, '').split('\n');
  const pid = Number.parseInt(lines[0] ?? '', 10);
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  const port = Number.parseInt(lines[3] ?? '', 10);
  // compute_ctl reads the last line; the postmaster appends it as line 8 (starting, ready, ...).
  const status = lines.length >= 8 ? lines[lines.length - 1]!.trim() || undefined : undefined;
  return {
    pid,
    dataDir: lines[1] ?? '',
    ...(Number.isInteger(port) && { port }),
    ...(lines[4] !== undefined && lines[4].trim() !== '' && { socketDir: lines[4].trim() }),
    ...(lines[5] !== undefined && lines[5].trim() !== '' && { listenAddress: lines[5].trim() }),
    ...(status !== undefined && { status }),
  };
}

/** Whether `pid` is a live (not zombie) process. */
export async function isProcessAlive(pid: number): Promise<boolean> {
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  // A dead child whose parent has not reaped it still answers kill(0); /proc says 'Z'.
  const stat = await readTextIfExists(`/proc/${pid}/stat`).catch(() => undefined);
  if (stat === undefined) return existsProcDir(pid);
  const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  return state !== 'Z' && state !== 'X';
}

async function existsProcDir(pid: number): Promise<boolean> {
  try {
    await stat('/proc/self');
  } catch {
    return true; // no /proc (not Linux): kill(0) is all we have
  }
  try {
    await stat(`/proc/${pid}`);
    return true;
  } catch {
    return false;
  }
}

/**
 * Whether `pid` is a live postgres process whose working directory is `pgdata` (the postmaster
 * chdirs into its data directory), so a recycled pid in a stale postmaster.pid is not mistaken
 * for our postmaster.
 */
export async function isPostmasterFor(pid: number, pgdata: string): Promise<boolean> {
  if (!(await isProcessAlive(pid))) return false;
  let comm: string | undefined;
  try {
    comm = (await readFile(`/proc/${pid}/comm`, 'utf8')).trim();
  } catch {
    return !(await procAvailable()); // without /proc, trust the pid
  }
  if (comm !== 'postgres' && comm !== 'postmaster') return false;
  try {
    const [cwd, dir] = await Promise.all([readlink(`/proc/${pid}/cwd`), realpath(pgdata)]);
    return cwd === dir;
  } catch {
    return false;
  }
}

async function procAvailable(): Promise<boolean> {
  try {
    await stat('/proc/self/comm');
    return true;
  } catch {
    return false;
  }
}

export interface RunningPostmaster extends PostmasterPidFile {
  /** Whether this process started it (so its exit status can be read). */
  ourChild: boolean;
}

/** The postmaster running on `pgdata`, from postmaster.pid, if its pid is really that postmaster. */
export async function findRunningPostmaster(pgdata: string): Promise<RunningPostmaster | undefined> {
  const pidFile = await readPostmasterPid(pgdata);
  if (!pidFile) return undefined;
  if (!(await isPostmasterFor(pidFile.pid, pgdata))) return undefined;
  let ours = ourChildren.get(pidFile.pid);
  if (ours?.exit !== undefined) {
    // Our child with this pid is dead: the live process is a newer one that reuses the pid.
    ourChildren.delete(pidFile.pid);
    ours = undefined;
  }
  return { ...pidFile, ourChild: ours !== undefined };
}

export interface StartPostmasterOptions {
  pgBinDir: string;
  pgdata: string;
  /** Where the postmaster's stdout/stderr go (appended); default `<pgdata>.log` next to PGDATA. */
  logPath?: string;
  /** Extra environment (e.g. NEON_AUTH_TOKEN); the postmaster gets childEnv's allow-list and these only. */
  env?: Record<string, string>;
  owner?: ServerUser;
  timeoutMs?: number;
  /** Called on every poll (every 50 ms) while waiting; the activity heartbeats here. */
  onTick?: (elapsedMs: number) => void;
  signal?: AbortSignal;
}

export interface StartedPostmaster {
  pid: number;
  /** True when a postmaster was already running on this PGDATA (a retried start). */
  alreadyRunning: boolean;
  logPath: string;
  port?: number;
  waitedMs: number;
}

export function defaultLogPath(pgdata: string): string {
  const resolved = path.resolve(pgdata);
  return path.join(path.dirname(resolved), `${path.basename(resolved)}.log`);
}

export async function assertExecutable(file: string): Promise<void> {
  try {
    await access(file, constants.X_OK);
  } catch {
    throw nonRetryable(PostgresFailure.BinaryMissing, `${file} is missing or not executable (set PG_BIN_DIR to a PostgreSQL 15 bin directory)`);
  }
}

function describeExit(pid: number, exit: { code: number | null; signal: NodeJS.Signals | null } | undefined): string {
  if (!exit) return `postmaster exited unexpectedly (pid ${pid})`;
  if (exit.signal) return `postmaster was killed by ${exit.signal} (pid ${pid})`;
  return `postmaster exited unexpectedly with code ${exit.code} (pid ${pid})`;
}

/**
 * Starts `postgres -D PGDATA` detached and waits until postmaster.pid says `ready`. Fails at once
 * (non-retryable PostgresStartFailed, with the exit status and the log tail) if the postmaster
 * exits first; after `timeoutMs` (60 s) fails with PostgresStartTimeout, leaving it running.
 * Idempotent: when a postmaster already runs on PGDATA it just waits for that one.
 */
export async function startPostmaster(opts: StartPostmasterOptions): Promise<StartedPostmaster> {
  const postgres = path.join(opts.pgBinDir, 'postgres');
  await assertExecutable(postgres);
  const logPath = opts.logPath ?? defaultLogPath(opts.pgdata);
  const startedAt = Date.now();

  // A postmaster we spawned may not have written postmaster.pid yet (a retry right after a
  // timeout): wait for that one rather than racing it with a second.
  const starting = [...ourChildren.entries()].find(([, c]) => c.exit === undefined && c.pgdata === path.resolve(opts.pgdata));
  const running = (await findRunningPostmaster(opts.pgdata)) ?? (starting && { pid: starting[0], port: undefined });
  if (running) {
    const known = ourChildren.get(running.pid);
    await waitUntilReady(running.pid, opts, startedAt, known?.logPath ?? logPath, known?.logOffset ?? 0);
    const port = running.port ?? (await readPostmasterPid(opts.pgdata))?.port;
    return { pid: running.pid, alreadyRunning: true, logPath: known?.logPath ?? logPath, port, waitedMs: Date.now() - startedAt };
  }
  // A postmaster.pid whose process is gone is stale (a crash); removing it keeps the ready check
  // below from reading the dead postmaster's "ready".
  await unlink(path.join(opts.pgdata, 'postmaster.pid')).catch(() => undefined);

  const log = await open(logPath, 'a', 0o640);
  let child: ChildProcess;
  let logOffset: number;
  try {
    if (opts.owner) await chown(logPath, opts.owner.uid, opts.owner.gid);
    logOffset = (await log.stat()).size;
    await log.write(`--- durable-compute: starting postgres -D ${opts.pgdata} at ${new Date().toISOString()}\n`);
    logOffset = (await log.stat()).size;
    child = spawn(postgres, ['-D', opts.pgdata], {
      cwd: opts.pgdata,
      detached: true,
      stdio: ['ignore', log.fd, log.fd],
      env: childEnv({ extra: opts.env, ...(opts.owner && { runAs: { user: opts.owner.name } }) }),
      ...(opts.owner && { uid: opts.owner.uid, gid: opts.owner.gid }),
    });
  } finally {
    await log.close();
  }
  const spawnError = new Promise<Error>((resolve) => child.once('error', resolve));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  // Let the worker exit without waiting for Postgres; libuv still reaps it if it dies first.
  child.unref();
  const pid = child.pid;
  if (pid === undefined) {
    const err = await spawnError;
    throw nonRetryable(PostgresFailure.StartFailed, `could not start ${postgres}: ${err.message}`);
  }
  const entry: OurChild = { child, pgdata: path.resolve(opts.pgdata), exited, logPath, logOffset };
  void exited.then((exit) => (entry.exit = exit));
  ourChildren.set(pid, entry);

  await waitUntilReady(pid, opts, startedAt, logPath, logOffset);
  const pidFile = await readPostmasterPid(opts.pgdata);
  return { pid, alreadyRunning: false, logPath, port: pidFile?.port, waitedMs: Date.now() - startedAt };
}

async function waitUntilReady(pid: number, opts: StartPostmasterOptions, startedAt: number, logPath: string, logOffset: number): Promise<void> {
  const timeoutMs = opts.timeoutMs ?? 60_000;
  for (;;) {
    opts.signal?.throwIfAborted();
    const ours = ourChildren.get(pid);
    const dead = ours ? ours.exit !== undefined : !(await isProcessAlive(pid));
    if (dead) {
      const logTail = await readLogTail(logPath, 30, 16_384, logOffset);
      const exit = ours?.exit;
      throw nonRetryable(PostgresFailure.StartFailed, `${describeExit(pid, exit).replace('unexpectedly', 'before it was ready')}\n${logTail}`, {
        pid,
        exitCode: exit?.code ?? null,
        signal: exit?.signal ?? null,
        logTail,
      });
    }
    const pidFile = await readPostmasterPid(opts.pgdata);
    if (pidFile?.pid === pid && pidFile.status === 'ready') return;
    const elapsed = Date.now() - startedAt;
    if (elapsed >= timeoutMs) {
      const logTail = await readLogTail(logPath, 30, 16_384, logOffset);
      throw retryable(PostgresFailure.StartTimeout, `postgres (pid ${pid}) not ready after ${Math.round(elapsed / 1000)} s (status ${pidFile?.status ?? 'none'})\n${logTail}`, {
        pid,
        logTail,
      });
    }
    // Every poll: the SDK throttles the heartbeats themselves.
    opts.onTick?.(elapsed);
    // Reading postmaster.pid costs microseconds; a coarse step would add half of itself to every start.
    await sleep(READY_POLL_MS);
  }
}

export interface StopPostmasterOptions {
  pgdata: string;
  mode: StopMode;
  timeoutMs?: number;
  onTick?: (elapsedMs: number) => void;
  signal?: AbortSignal;
}

export interface StopResult {
  wasRunning: boolean;
  pid?: number;
  exit?: PostmasterExit;
}

/** Sends the stop signal for `mode` (smart SIGTERM, fast SIGINT, immediate SIGQUIT) and waits for the exit. Idempotent. */
export async function stopPostmaster(opts: StopPostmasterOptions): Promise<StopResult> {
  const running = await findRunningPostmaster(opts.pgdata);
  if (!running) return { wasRunning: false };
  try {
    process.kill(running.pid, STOP_SIGNALS[opts.mode]);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return { wasRunning: false };
    throw err;
  }
  const timeoutMs = opts.timeoutMs ?? 60_000;
  const deadline = AbortSignal.timeout(timeoutMs);
  const signal = opts.signal ? AbortSignal.any([opts.signal, deadline]) : deadline;
  try {
    const exit = await waitForPostmasterExit({ pid: running.pid, pgdata: opts.pgdata, pollMs: 50 }, opts.onTick, signal);
    return { wasRunning: true, pid: running.pid, exit };
  } catch (err) {
    if (deadline.aborted && !opts.signal?.aborted) {
      throw retryable(PostgresFailure.StopTimeout, `postmaster (pid ${running.pid}) did not exit within ${Math.round(timeoutMs / 1000)} s of a ${opts.mode} shutdown`);
    }
    throw err;
  }
}

/** SIGHUP: the postmaster re-reads postgresql.conf and pg_hba.conf (pg_ctl reload). */
export async function reloadPostmaster(pgdata: string): Promise<{ reloaded: boolean; pid?: number }> {
  const running = await findRunningPostmaster(pgdata);
  if (!running) return { reloaded: false };
  process.kill(running.pid, 'SIGHUP');
  return { reloaded: true, pid: running.pid };
}

export interface WaitForExitInput {
  pid: number;
  /** When given, a live pid that is no longer a postmaster on this PGDATA counts as exited (pid reuse). */
  pgdata?: string;
  logPath?: string;
  pollMs?: number;
}

/**
 * Resolves when the postmaster `pid` exits, reporting how. For a postmaster this process started
 * the exit code or signal is known; for one started by an earlier worker it is not (only a parent
 * can read it), so the report says 'postmaster exited unexpectedly (pid N)'. `onTick` runs every
 * `pollMs` (heartbeats); `signal` aborts the wait (rejecting with its reason).
 */
export async function waitForPostmasterExit(input: WaitForExitInput, onTick?: (elapsedMs: number) => void, signal?: AbortSignal): Promise<PostmasterExit> {
  const pollMs = input.pollMs ?? 500;
  const startedAt = Date.now();
  const ours = ourChildren.get(input.pid);
  const logPath = input.logPath ?? ours?.logPath ?? (input.pgdata ? defaultLogPath(input.pgdata) : undefined);
  for (;;) {
    signal?.throwIfAborted();
    const gone = ours
      ? ours.exit !== undefined
      : input.pgdata
        ? !(await isPostmasterFor(input.pid, input.pgdata))
        : !(await isProcessAlive(input.pid));
    if (gone) break;
    onTick?.(Date.now() - startedAt);
    if (ours) {
      await Promise.race([ours.exited, sleep(pollMs, undefined, { signal }).catch(() => undefined)]);
    } else {
      await sleep(pollMs, undefined, { signal }).catch(() => undefined);
    }
  }
  if (ours) ourChildren.delete(input.pid);
  const logTail = await readLogTail(logPath, 30, 16_384, ours?.logOffset ?? 0);
  return {
    pid: input.pid,
    exitCode: ours?.exit?.code ?? null,
    signal: ours?.exit?.signal ?? null,
    message: describeExit(input.pid, ours?.exit),
    logTail,
  };
}
