/**
 * The fleet benchmark's child processes (Temporal server, simulator, control-plane worker): started
 * with their output kept in a log file, measured from /proc, stopped at the end or on Ctrl-C.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { projectRoot } from '../common/paths';

export const log = (line: string) => console.log(`[fleet ${new Date().toISOString().slice(11, 19)}] ${line}`);
const children: ChildProcess[] = [];
let interruption: string | undefined;
let stopping = false;

/** Why the run was interrupted (a signal), if it was. */
export function interrupted(): string | undefined {
  return interruption;
}

/** Sleeps, unless the run was interrupted: then it throws, so the cleanup runs. */
export async function pause(msDelay: number): Promise<void> {
  const until = Date.now() + msDelay;
  while (Date.now() < until) {
    if (interruption) throw new Error(interruption);
    await sleep(Math.min(500, until - Date.now()));
  }
  if (interruption) throw new Error(interruption);
}

export function startChild(command: string, args: string[], env: NodeJS.ProcessEnv, logFile: string, ipc = false): ChildProcess {
  const child = spawn(command, args, { cwd: projectRoot, env, stdio: ['ignore', 'pipe', 'pipe', ...(ipc ? ['ipc' as const] : [])] });
  children.push(child);
  let output = '';
  const keep = (chunk: Buffer) => {
    output += chunk.toString('utf8');
    if (output.length > 1_000_000) output = output.slice(-500_000);
    writeFileSync(logFile, output);
  };
  child.on('exit', (code, signal) => {
    if (!stopping) log(`${path.basename(logFile, '.log')} exited unexpectedly (code ${code}, signal ${signal})`);
  });
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  (child as ChildProcess & { output: () => string }).output = () => output;
  return child;
}

export async function waitForLine(child: ChildProcess, pattern: RegExp, what: string, timeoutMs = 180_000): Promise<void> {
  const output = (child as ChildProcess & { output: () => string }).output;
  const deadline = Date.now() + timeoutMs;
  while (!pattern.test(output())) {
    if (child.exitCode !== null) throw new Error(`${what} exited (${child.exitCode}):\n${output().slice(-3000)}`);
    if (Date.now() > deadline) throw new Error(`${what} not ready after ${timeoutMs / 1000} s:\n${output().slice(-3000)}`);
    await pause(200);
  }
}

/** CPU seconds (user + system) and RSS of a process, from /proc. */
export function processUsage(pid: number): { cpuSeconds: number; rssMiB: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[11]) + Number(fields[12]);
  const rssKb = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
  return { cpuSeconds: ticks / 100, rssMiB: rssKb / 1024 };
}

/** Stops the children, last started first: SIGTERM, then SIGKILL after 15 s. */
export async function stopChildren(): Promise<void> {
  stopping = true;
  for (const child of children.reverse()) {
    if (child.exitCode === null && child.pid) {
      child.kill('SIGTERM');
      const exited = new Promise((resolve) => child.once('exit', resolve));
      await Promise.race([exited, sleep(15_000)]);
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
  }
}

/**
 * Ctrl-C or a timeout marks the run interrupted (pause() then throws, so the run unwinds through
 * its cleanup); whatever is left when the process exits is killed, and `dirs()` removed, there.
 */
export function stopOnInterrupt(dirs: () => (string | undefined)[]): void {
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.on(signal, () => {
      interruption = `interrupted by ${signal}`;
      setTimeout(() => process.exit(130), 30_000).unref();
    });
  }
  process.on('exit', () => {
    for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    for (const d of dirs()) if (d) rmSync(d, { recursive: true, force: true });
  });
}
