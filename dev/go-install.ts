import { spawn } from 'node:child_process';
import { accessSync, constants, mkdirSync, statSync } from 'node:fs';
import path from 'node:path';

/** Tools the dev stack builds from Go source with `go install` into the git-ignored project cache. */

export function isExecutableFile(p: string): boolean {
  try {
    accessSync(p, constants.X_OK);
    return statSync(p).isFile();
  } catch {
    return false;
  }
}

export function findOnPath(name: string, pathVar: string | undefined): string | undefined {
  for (const dir of (pathVar ?? '').split(path.delimiter)) {
    if (!dir) continue;
    const candidate = path.join(dir, name);
    if (isExecutableFile(candidate)) return candidate;
  }
  return undefined;
}

export interface GoInstallRequest {
  goBinary: string;
  /** Where the binaries go (GOBIN). */
  binDir: string;
  /** `module/path/cmd@version`, one or more. */
  packages: string[];
  /** What is being built, for progress lines ("the Temporal CLI v1.5.1"). */
  what: string;
  env: Record<string, string | undefined>;
  /** Extra environment for go itself (GOTOOLCHAIN=auto for modules that need a newer Go). */
  goEnv?: Record<string, string>;
  onProgress: (line: string) => void;
}

/** Runs `go install` into `binDir`, streaming go's output and a heartbeat so a minutes-long build is visibly alive. */
export async function goInstall(req: GoInstallRequest): Promise<void> {
  const { env, onProgress } = req;
  mkdirSync(req.binDir, { recursive: true });
  const started = Date.now();
  onProgress(`building ${req.what} with go install (takes a few minutes the first time)...`);
  const child = spawn(req.goBinary, ['install', '-v', ...req.packages], {
    env: { ...env, ...req.goEnv, GOBIN: req.binDir, GOFLAGS: [env.GOFLAGS, '-buildvcs=false'].filter(Boolean).join(' ') },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let packages = 0;
  const tail: string[] = [];
  const onData = (chunk: Buffer) => {
    for (const line of chunk.toString('utf8').split('\n')) {
      if (!line.trim()) continue;
      packages += 1;
      tail.push(line);
      if (tail.length > 20) tail.shift();
      if (line.startsWith('go: ') && !line.startsWith('go: downloading')) onProgress(line);
    }
  };
  child.stdout.on('data', onData);
  child.stderr.on('data', onData);
  const ticker = setInterval(() => {
    onProgress(`  ... still building (${Math.round((Date.now() - started) / 1000)} s, ${packages} packages so far)`);
  }, 15_000);
  try {
    const code = await new Promise<number | null>((resolve, reject) => {
      child.on('error', reject);
      child.on('close', resolve);
    });
    if (code !== 0) throw new Error(`go install exited with ${code}:\n${tail.join('\n')}`);
  } finally {
    clearInterval(ticker);
  }
  onProgress(`built ${req.what} in ${Math.round((Date.now() - started) / 1000)} s`);
}
