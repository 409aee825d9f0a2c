import { spawn } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { processStartTime } from '../common/process-start-time';

/** A process the stack started, identified by pid plus kernel start time so a recycled pid is never mistaken for it. */
export interface TrackedProcess {
  pid: number;
  startTime: string;
  command: string;
  log: string;
}

export function isTrackedAlive(p: TrackedProcess): boolean {
  return processStartTime(p.pid) === p.startTime;
}

/** Starts a process in its own process group, output appended to `log`, surviving the caller's exit. */
export function spawnDetached(
  command: string,
  args: string[],
  /** uid/gid: run as that user (PostgreSQL refuses to run as root). */
  opts: { log: string; env?: NodeJS.ProcessEnv; cwd?: string; uid?: number; gid?: number },
): TrackedProcess {
  const fd = openSync(opts.log, 'a');
  try {
    const child = spawn(command, args, {
      detached: true,
      stdio: ['ignore', fd, fd],
      env: opts.env ?? process.env,
      cwd: opts.cwd,
      uid: opts.uid,
      gid: opts.gid,
    });
    if (child.pid === undefined) throw new Error(`could not start ${command}`);
    child.unref();
    const startTime = processStartTime(child.pid);
    if (startTime === undefined) throw new Error(`${command} exited immediately; see ${opts.log}`);
    return { pid: child.pid, startTime, command, log: opts.log };
  } finally {
    closeSync(fd);
  }
}

/**
 * `signal` (SIGTERM unless told: PostgreSQL wants SIGINT, its fast shutdown) to the process group,
 * then SIGKILL after `graceMs`. Only touches the group if the leader is still the tracked process.
 */
export async function stopTracked(p: TrackedProcess, graceMs = 10_000, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (!isTrackedAlive(p)) return;
  const signalGroup = (sig: NodeJS.Signals) => {
    try {
      process.kill(-p.pid, sig);
    } catch {
      /* already gone */
    }
  };
  signalGroup(signal);
  const deadline = Date.now() + graceMs;
  while (Date.now() < deadline) {
    if (!isTrackedAlive(p)) return;
    await sleep(100);
  }
  signalGroup('SIGKILL');
  while (isTrackedAlive(p)) await sleep(50);
}

/** Fails with a clear message if something already listens on host:port. */
export async function assertPortFree(host: string, port: number, what: string, hint: string): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const server = net.createServer();
    server.once('error', (err: NodeJS.ErrnoException) => {
      reject(
        new Error(
          err.code === 'EADDRINUSE'
            ? `port ${port} on ${host} (${what}) is already in use by another process; ${hint}`
            : `cannot listen on ${host}:${port} (${what}): ${err.message}`,
        ),
      );
    });
    server.listen({ host, port, exclusive: true }, () => server.close(() => resolve()));
  });
}

/** A port the kernel just handed out; good enough for tests that start servers right after. */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen({ host, port: 0 }, () => {
      const addr = server.address();
      server.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

export async function canConnect(host: string, port: number, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

export function logTail(file: string, lines = 15): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

/**
 * Polls `probe` until it succeeds. Stops early with the log tail when the process dies, and at
 * `timeoutMs` with the last probe error: a dead or stuck component never hangs the caller.
 */
export async function waitUntilReady(
  what: string,
  proc: TrackedProcess,
  probe: () => Promise<void>,
  timeoutMs: number,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let lastError = 'not probed yet';
  for (;;) {
    try {
      await probe();
      return;
    } catch (err) {
      lastError = (err as Error).message;
    }
    if (!isTrackedAlive(proc)) {
      throw new Error(`${what} exited during startup. Last lines of ${proc.log}:\n${logTail(proc.log)}`);
    }
    if (Date.now() > deadline) {
      throw new Error(`${what} did not become ready within ${timeoutMs / 1000} s (${lastError}). Last lines of ${proc.log}:\n${logTail(proc.log)}`);
    }
    await sleep(200);
  }
}

/** `count` consecutive free ports, for components that take a range (the safekeepers). */
export async function freePortRange(count: number, host = '127.0.0.1'): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const base = 20_000 + Math.floor(Math.random() * 40_000);
    let ok = true;
    for (let p = base; p < base + count && ok; p++) {
      ok = await assertPortFree(host, p, 'probe', '').then(
        () => true,
        () => false,
      );
    }
    if (ok) return base;
  }
  throw new Error(`no range of ${count} free ports found`);
}
