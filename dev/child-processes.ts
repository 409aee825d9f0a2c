import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { projectRoot, tsNodeArgs } from '../common/paths';

export interface WorkerProcess {
  child: ChildProcess;
  pid: number;
  output: () => string;
  /** Hard kill: the process gets no chance to clean up, as when a VM dies. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

const live = new Set<WorkerProcess>();

/**
 * Starts an entry point (a worker) in its own process and resolves once it prints `readyLine`:
 * a TypeScript source through tsx, a compiled bundle (`.cjs`, `.js`) with plain node, as in
 * production. Every process started here is killed by `killAllProcesses()` in the test's teardown.
 */
export async function startProcess(
  script: string,
  args: string[] = [],
  opts: { env?: Record<string, string>; readyLine?: RegExp; timeoutMs?: number } = {},
): Promise<WorkerProcess> {
  const compiled = /\.c?js$/.test(script);
  const child = spawn(process.execPath, [...(compiled ? [] : tsNodeArgs()), path.resolve(projectRoot, script), ...args], {
    cwd: projectRoot,
    env: { ...process.env, ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('exit', (code, signal) => resolve({ code, signal })),
  );
  const proc: WorkerProcess = {
    child,
    pid: child.pid!,
    output: () => out,
    async kill(signal = 'SIGKILL') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      await exited;
      live.delete(proc);
    },
    exited,
  };
  live.add(proc);
  const ready = opts.readyLine ?? /worker ready/;
  const timeoutMs = opts.timeoutMs ?? 60_000;
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${script} not ready within ${timeoutMs} ms:\n${out}`)), timeoutMs);
    const onData = () => {
      if (ready.test(out)) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    void exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`${script} exited (${code ?? signal}) before it was ready:\n${out}`));
    });
  });
  return proc;
}

export async function killAllProcesses(): Promise<void> {
  await Promise.all([...live].map((p) => p.kill('SIGKILL')));
}
