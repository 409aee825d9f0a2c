/**
 * moto's server mode (PyPI `moto[server]`): a second S3 implementation, widely used to emulate
 * AWS, and a KMS emulation on the same port. The upload, cache and KMS tests run against it as
 * well as against the dev stack's s3rver, so resume logic is not tuned to one server's quirks.
 *
 * Installed into a git-ignored venv (.cache/moto) by the tests' global setup; started there on
 * loopback on a free port for the run. A missing python3/venv/pip is a failure naming what is
 * missing, never a skipped test.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { childEnv } from '../../common/child-env';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import type { TestProject } from 'vitest/node';
import { freePort } from '../../dev/processes';

const run = promisify(execFile);

/** Pinned so every machine tests against the same emulation. */
export const MOTO_REQUIREMENT = 'moto[server]==5.2.6';
export const MOTO_BUCKET = 'durable-compute-moto';
/** moto accepts any credentials; these only need the right shape for SigV4. */
export const MOTO_CREDENTIALS = { accessKeyId: 'AKIAMOTOTESTING00000', secretAccessKey: 'moto-testing-secret' };
export const MOTO_REGION = 'us-east-1';

export type MotoEndpoint = { endpoint: string; bucket: string; region: string } | { error: string };

declare module 'vitest' {
  export interface ProvidedContext {
    moto: MotoEndpoint;
  }
}

function venvDir(repoRoot: string): string {
  return path.join(repoRoot, '.cache', 'moto');
}

/** Creates .cache/moto with moto[server] unless it is there. Returns the moto_server path. */
export async function ensureMoto(repoRoot: string, log: (line: string) => void = () => {}): Promise<string> {
  const venv = venvDir(repoRoot);
  const server = path.join(venv, 'bin', 'moto_server');
  const marker = path.join(venv, `installed-${MOTO_REQUIREMENT.replace(/[^A-Za-z0-9.=-]/g, '_')}`);
  if (existsSync(server) && existsSync(marker)) return server;
  const step = async (what: string, cmd: string, args: string[], hint: string) => {
    try {
      await run(cmd, args, { timeout: 10 * 60 * 1000, maxBuffer: 16 * 1024 * 1024, env: childEnv() });
    } catch (err) {
      const e = err as { code?: string; stderr?: string; message: string };
      const detail = e.code === 'ENOENT' ? `${cmd} not found` : (e.stderr ?? e.message).trim().split('\n').slice(-5).join('\n');
      throw new Error(`moto (the second S3 and the KMS emulation the tests use) cannot be installed: ${what} failed: ${detail}\n${hint}`);
    }
  };
  log(`installing ${MOTO_REQUIREMENT} into ${venv}`);
  if (!existsSync(path.join(venv, 'bin', 'pip'))) {
    await step('python3 -m venv', 'python3', ['-m', 'venv', venv], 'Install python3 and python3-venv (apt-get install python3-venv); .ci/run does this.');
  }
  await step(`pip install ${MOTO_REQUIREMENT}`, path.join(venv, 'bin', 'pip'), ['install', '--disable-pip-version-check', '-q', MOTO_REQUIREMENT], 'PyPI must be reachable for the first run.');
  await run('touch', [marker]);
  return server;
}

/** Starts moto_server on 127.0.0.1 and a free port, waiting until it answers. */
export async function startMoto(serverBin: string): Promise<{ endpoint: string; stop: () => Promise<void> }> {
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const child: ChildProcess = spawn(serverBin, ['-H', '127.0.0.1', '-p', String(port)], { stdio: ['ignore', 'ignore', 'pipe'], env: childEnv() });
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString('utf8')).slice(-4000)));
    const endpoint = `http://127.0.0.1:${port}`;
    const deadline = Date.now() + 60_000;
    let exited = false;
    child.once('exit', () => (exited = true));
    while (!exited && Date.now() < deadline) {
      const ok = await fetch(`${endpoint}/moto-api/`, { signal: AbortSignal.timeout(1000) }).then(
        (r) => r.status < 500,
        () => false,
      );
      if (ok) {
        const stop = async () => {
          if (child.exitCode !== null || child.signalCode !== null) return;
          const gone = new Promise<void>((resolve) => child.once('exit', () => resolve()));
          child.kill('SIGTERM');
          const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
          await gone;
          clearTimeout(timer);
        };
        return { endpoint, stop };
      }
      await new Promise((r) => setTimeout(r, 200));
    }
    child.kill('SIGKILL');
    if (attempt < 3 && /in use/i.test(stderr)) continue;
    throw new Error(`moto_server did not start on ${endpoint}${exited ? ` (exited with ${child.exitCode})` : ' within 60 s'}: ${stderr.trim().split('\n').slice(-5).join('\n')}`);
  }
}

/**
 * For the global setup: installs and starts moto with the tests' bucket and provides its endpoint,
 * or provides why it could not (each test needing it then fails with that reason). Returns its stop.
 */
export async function startMotoForRun(project: TestProject): Promise<() => Promise<void>> {
  const repoRoot = fileURLToPath(new URL('../..', import.meta.url));
  let server: Awaited<ReturnType<typeof startMoto>> | undefined;
  try {
    server = await startMoto(await ensureMoto(repoRoot, (l) => console.log(`test setup: ${l}`)));
    const s3 = new S3Client({ region: MOTO_REGION, endpoint: server.endpoint, forcePathStyle: true, credentials: MOTO_CREDENTIALS });
    try {
      await s3.send(new CreateBucketCommand({ Bucket: MOTO_BUCKET }));
    } finally {
      s3.destroy();
    }
    project.provide('moto', { endpoint: server.endpoint, bucket: MOTO_BUCKET, region: MOTO_REGION });
    return server.stop;
  } catch (err) {
    await server?.stop();
    project.provide('moto', { error: (err as Error).message });
    return async () => {};
  }
}
