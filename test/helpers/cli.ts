import { execFile } from 'node:child_process';
import path from 'node:path';
import { projectRoot } from '../../common/paths';

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the real `durable-compute` CLI as a user would, with an argument array. */
export function runCli(args: string[], opts: { env?: Record<string, string>; input?: string; timeoutMs?: number } = {}): Promise<CliResult> {
  return new Promise((resolve) => {
    const child = execFile(
      process.execPath,
      [path.join(projectRoot, 'bin', 'durable-compute.mjs'), ...args],
      { cwd: projectRoot, env: { ...process.env, ...opts.env }, timeout: opts.timeoutMs ?? 120_000, maxBuffer: 16 * 1024 * 1024 },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
    if (opts.input !== undefined) child.stdin?.end(opts.input);
    else child.stdin?.end();
  });
}
