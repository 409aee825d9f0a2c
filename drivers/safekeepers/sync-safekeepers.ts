import { spawn } from 'node:child_process';
import { pgServerChildEnv } from '../../common/child-env';
import { maskSecrets } from '../../common/errors';
import { formatLsn, isLsn, parseLsn } from '../../model/lsn';

/**
 * Runs the safekeeper sync command (`postgres --sync-safekeepers` with Neon's Postgres): it reads
 * postgresql.conf from PGDATA (neon.safekeepers, tenant, timeline), makes a quorum of safekeepers
 * agree, and prints the agreed LSN `X/Y` on stdout; its logs go to stderr.
 */

export interface RunSyncSafekeepersOptions {
  /** Program and arguments, e.g. ['/usr/local/bin/postgres', '--sync-safekeepers']. */
  command: string[];
  /** Given as PGDATA in the environment (the mode cannot take -D). */
  pgdata: string;
  timeoutMs: number;
  /** Variables the command needs besides childEnv's allow-list; PGDATA (and NEON_AUTH_TOKEN) are added. */
  env?: NodeJS.ProcessEnv;
  /** storage_auth_token, passed as NEON_AUTH_TOKEN like compute_ctl does. */
  token?: string;
  /** uid/gid to run as (Postgres refuses to run as root): pgSpawnIdentity(). */
  spawnAs?: { uid?: number; gid?: number };
  signal?: AbortSignal;
}

export interface SyncSafekeepersResult {
  lsn: string;
  /** compute_ctl's sync_safekeepers_ms. */
  elapsedMs: number;
}

export type SyncSafekeepersFailure = 'spawn' | 'exit' | 'bad-output' | 'timeout' | 'aborted';

export class SyncSafekeepersError extends Error {
  override name = 'SyncSafekeepersError';
  constructor(
    readonly kind: SyncSafekeepersFailure,
    message: string,
    readonly stderrTail: string,
    readonly exitCode: number | null = null,
    readonly exitSignal: NodeJS.Signals | null = null,
  ) {
    super(maskSecrets(stderrTail ? `${message}\n--- stderr (last lines) ---\n${stderrTail}` : message));
  }
}

const STDOUT_LIMIT = 64 * 1024;
const STDERR_TAIL = 4 * 1024;
const KILL_GRACE_MS = 2_000;

/** Keeps the last `limit` bytes written to it. */
class Tail {
  private buf = Buffer.alloc(0);
  constructor(private readonly limit: number) {}
  push(chunk: Buffer): void {
    this.buf = Buffer.concat([this.buf, chunk]);
    if (this.buf.length > this.limit) this.buf = this.buf.subarray(this.buf.length - this.limit);
  }
  text(): string {
    return this.buf.toString('utf8').trim();
  }
}

export async function runSyncSafekeepers(opts: RunSyncSafekeepersOptions): Promise<SyncSafekeepersResult> {
  const [program, ...args] = opts.command;
  if (!program) throw new SyncSafekeepersError('spawn', 'sync-safekeepers command is empty', '');
  const started = performance.now();
  // Nothing of the worker's environment but the allow-list: PGDATA and the token are what it needs.
  const env = pgServerChildEnv({ ...opts.env, PGDATA: opts.pgdata, NEON_AUTH_TOKEN: opts.token });
  if (opts.signal?.aborted) throw new SyncSafekeepersError('aborted', 'sync-safekeepers aborted before it started', '');

  // Its own process group, so a wrapper script and whatever it started are stopped together.
  const child = spawn(program, args, { env, stdio: ['ignore', 'pipe', 'pipe'], detached: true, ...(opts.spawnAs ?? {}) });
  const stdout: Buffer[] = [];
  let stdoutBytes = 0;
  let stdoutOverflow = false;
  const stderr = new Tail(STDERR_TAIL);
  child.stdout.on('data', (d: Buffer) => {
    if (stdoutBytes + d.length > STDOUT_LIMIT) stdoutOverflow = true;
    else stdout.push(d);
    stdoutBytes += d.length;
  });
  child.stderr.on('data', (d: Buffer) => stderr.push(d));

  let stopReason: 'timeout' | 'aborted' | undefined;
  const killGroup = (signal: NodeJS.Signals) => {
    if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
    try {
      process.kill(-child.pid, signal);
    } catch {
      child.kill(signal);
    }
  };
  let graceTimer: NodeJS.Timeout | undefined;
  const stop = (reason: 'timeout' | 'aborted') => {
    stopReason ??= reason;
    killGroup('SIGTERM');
    graceTimer = setTimeout(() => killGroup('SIGKILL'), KILL_GRACE_MS);
  };
  const timer = setTimeout(() => stop('timeout'), opts.timeoutMs);
  const onAbort = () => stop('aborted');
  opts.signal?.addEventListener('abort', onAbort, { once: true });

  const exit = await new Promise<{ code: number | null; signal: NodeJS.Signals | null } | Error>((resolve) => {
    child.once('error', (err) => resolve(err));
    // 'close' (not 'exit'): both output pipes are drained by then.
    child.once('close', (code, signal) => resolve({ code, signal }));
  });
  clearTimeout(timer);
  clearTimeout(graceTimer);
  opts.signal?.removeEventListener('abort', onAbort);
  const name = program.split('/').pop() ?? program;

  if (exit instanceof Error) {
    throw new SyncSafekeepersError('spawn', `cannot start ${name}: ${exit.message}`, stderr.text());
  }
  if (stopReason === 'timeout') {
    throw new SyncSafekeepersError('timeout', `${name} --sync-safekeepers did not finish within ${opts.timeoutMs} ms and was killed`, stderr.text(), exit.code, exit.signal);
  }
  if (stopReason === 'aborted') throw new SyncSafekeepersError('aborted', `${name} --sync-safekeepers was aborted`, stderr.text(), exit.code, exit.signal);
  if (exit.code !== 0) {
    const how = exit.signal ? `was killed by ${exit.signal}` : `exited with status ${exit.code}`;
    throw new SyncSafekeepersError('exit', `${name} --sync-safekeepers ${how}`, stderr.text(), exit.code, exit.signal);
  }
  const out = Buffer.concat(stdout).toString('utf8').trim();
  if (stdoutOverflow || !isLsn(out)) {
    const shown = out.length > 200 ? `${out.slice(0, 200)}…` : out;
    throw new SyncSafekeepersError('bad-output', `${name} --sync-safekeepers printed ${JSON.stringify(shown)} instead of an LSN`, stderr.text(), exit.code);
  }
  return { lsn: formatLsn(parseLsn(out)), elapsedMs: performance.now() - started };
}
