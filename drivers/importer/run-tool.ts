import { spawn } from 'node:child_process';
import { appendFileSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { maskSecrets } from '../../common/errors';
import { processStartTime } from '../../common/process-start-time';

/**
 * Runs a PostgreSQL client tool (pg_dump, pg_restore) as a child process group.
 *
 * The group's leader is recorded in a pid file with its kernel start time, so an activity
 * retried after its worker died can kill the orphaned tool (and its parallel workers) before it
 * starts over; a recycled pid is never mistaken for it.
 */
export interface ToolResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** The last lines of stderr, already masked. */
  stderrTail: string[];
  /** The last stderr lines that report an error (verbose progress output would push them out of the tail). */
  errorLines: string[];
}

export class ToolMissingError extends Error {
  override name = 'ToolMissingError';
}

interface PidRecord {
  pid: number;
  startTime: string;
}

/** Kills the process group recorded in `pidFile` if its leader still runs, and removes the file. */
export async function killRecordedGroup(pidFile: string): Promise<boolean> {
  let record: PidRecord;
  try {
    record = JSON.parse(readFileSync(pidFile, 'utf8')) as PidRecord;
  } catch {
    rmSync(pidFile, { force: true });
    return false;
  }
  let killed = false;
  if (processStartTime(record.pid) === record.startTime) {
    try {
      process.kill(-record.pid, 'SIGKILL');
      killed = true;
    } catch {
      /* already gone */
    }
    const deadline = Date.now() + 30_000;
    while (processStartTime(record.pid) === record.startTime && Date.now() < deadline) await sleep(50);
  }
  rmSync(pidFile, { force: true });
  return killed;
}

export async function runTool(opts: {
  command: string;
  args: string[];
  env: Record<string, string>;
  pidFile: string;
  /** Full (masked) output is appended here for later inspection. */
  logFile: string;
  signal: AbortSignal;
  tailLines?: number;
  uid?: number;
  gid?: number;
}): Promise<ToolResult> {
  await killRecordedGroup(opts.pidFile);
  const tailLines = opts.tailLines ?? 20;
  const tail: string[] = [];
  const errorLines: string[] = [];
  let partial = '';
  const onStderr = (chunk: Buffer) => {
    const text = partial + chunk.toString('utf8');
    const lines = text.split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) {
      const masked = maskSecrets(line);
      appendFileSync(opts.logFile, `${masked}\n`);
      tail.push(masked);
      if (tail.length > tailLines) tail.shift();
      if (/\b(error|fatal|failed)\b|could not|errors ignored/i.test(masked)) {
        errorLines.push(masked);
        if (errorLines.length > tailLines) errorLines.shift();
      }
    }
  };
  return new Promise<ToolResult>((resolve, reject) => {
    if (opts.signal.aborted) {
      reject(opts.signal.reason);
      return;
    }
    const child = spawn(opts.command, opts.args, {
      env: opts.env,
      stdio: ['ignore', 'ignore', 'pipe'],
      detached: true,
      uid: opts.uid,
      gid: opts.gid,
    });
    let settled = false;
    const onAbort = () => {
      try {
        if (child.pid) process.kill(-child.pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    };
    child.once('spawn', () => {
      const startTime = child.pid ? processStartTime(child.pid) : undefined;
      if (child.pid && startTime) writeFileSync(opts.pidFile, JSON.stringify({ pid: child.pid, startTime } satisfies PidRecord));
      opts.signal.addEventListener('abort', onAbort, { once: true });
    });
    child.stderr!.on('data', onStderr);
    child.once('error', (err: NodeJS.ErrnoException) => {
      if (settled) return;
      settled = true;
      opts.signal.removeEventListener('abort', onAbort);
      reject(err.code === 'ENOENT' ? new ToolMissingError(`${opts.command} is not installed (ENOENT)`) : err);
    });
    child.once('close', (code, signal) => {
      if (settled) return;
      settled = true;
      opts.signal.removeEventListener('abort', onAbort);
      if (partial) onStderr(Buffer.from('\n'));
      rmSync(opts.pidFile, { force: true });
      // The group may outlive its leader (pg_dump's parallel workers): make sure nothing lingers.
      try {
        if (child.pid) process.kill(-child.pid, 'SIGKILL');
      } catch {
        /* group already empty */
      }
      if (opts.signal.aborted) reject(opts.signal.reason);
      else resolve({ code, signal, stderrTail: [...tail], errorLines: [...errorLines] });
    });
  });
}
