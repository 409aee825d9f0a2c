import { existsSync, mkdirSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { UserFacingError } from '../common/errors';
import { projectCacheDir } from '../common/paths';
import { findOnPath, goInstall, isExecutableFile } from './go-install';

/** The one pinned Temporal CLI version. Later tags carry a replace directive and refuse `go install`. */
export const TEMPORAL_CLI_VERSION = '1.5.1';
export const TEMPORAL_CLI_MODULE = 'github.com/temporalio/cli/cmd/temporal';

export interface ProvisionOptions {
  env?: Record<string, string | undefined>;
  /** Where built or downloaded binaries are kept; git-ignored. */
  cacheDir?: string;
  /** Progress lines (build output, elapsed time). */
  onProgress?: (line: string) => void;
}

export interface ProvisionedCli {
  path: string;
  source: 'TEMPORAL_CLI_PATH' | 'PATH' | 'cache' | 'go install' | 'sdk download';
}

export function temporalCacheDir(cacheDir = projectCacheDir): string {
  return path.join(cacheDir, 'temporal', `v${TEMPORAL_CLI_VERSION}`);
}

/** The SDK's own download, reached only when explicitly allowed: this machine class has no internet and must not try. */
async function sdkDownload(downloadDir: string): Promise<string> {
  // A development dependency: present in a checkout, absent from a production install.
  const { TestWorkflowEnvironment } = await import('@temporalio/testing').catch((err: unknown) => {
    throw new Error(`DURABLE_COMPUTE_TEMPORAL_DOWNLOAD needs the development dependency @temporalio/testing (npm install in a checkout): ${(err as Error).message}`);
  });
  mkdirSync(downloadDir, { recursive: true });
  const env = await TestWorkflowEnvironment.createLocal({
    server: { executable: { type: 'cached-download', version: `v${TEMPORAL_CLI_VERSION}`, downloadDir } },
  });
  await env.teardown();
  const found = readdirSync(downloadDir, { recursive: true, encoding: 'utf8' })
    .map((f) => path.join(downloadDir, f))
    .find((f) => path.basename(f).startsWith('temporal') && isExecutableFile(f));
  if (!found) throw new Error(`the SDK download left no temporal executable in ${downloadDir}`);
  return found;
}

/**
 * Finds or builds the Temporal CLI: TEMPORAL_CLI_PATH, then `temporal` on PATH, then the project's
 * cache, then `go install` into that cache, then (only with DURABLE_COMPUTE_TEMPORAL_DOWNLOAD=1)
 * the SDK's own download. Fails with every step tried and what to do.
 */
export async function provisionTemporalCli(opts: ProvisionOptions = {}): Promise<ProvisionedCli> {
  const env = opts.env ?? process.env;
  const onProgress = opts.onProgress ?? (() => {});
  const tried: string[] = [];

  const explicit = env.TEMPORAL_CLI_PATH;
  if (explicit) {
    if (isExecutableFile(explicit)) return { path: explicit, source: 'TEMPORAL_CLI_PATH' };
    throw new UserFacingError(`TEMPORAL_CLI_PATH=${explicit} is not an executable file. Point it at a Temporal CLI binary or unset it.`);
  }
  tried.push('TEMPORAL_CLI_PATH: not set');

  const onPath = findOnPath('temporal', env.PATH);
  if (onPath) return { path: onPath, source: 'PATH' };
  tried.push('`temporal` on PATH: not found');

  const binDir = temporalCacheDir(opts.cacheDir);
  const cached = path.join(binDir, 'temporal');
  if (isExecutableFile(cached)) return { path: cached, source: 'cache' };
  tried.push(`project cache ${cached}: not built yet`);

  const go = findOnPath('go', env.PATH);
  if (go) {
    try {
      await goInstall({
        goBinary: go,
        binDir,
        packages: [`${TEMPORAL_CLI_MODULE}@v${TEMPORAL_CLI_VERSION}`],
        what: `the Temporal CLI v${TEMPORAL_CLI_VERSION}`,
        env,
        onProgress,
      });
      if (isExecutableFile(cached)) return { path: cached, source: 'go install' };
      tried.push(`go install: finished but left no binary at ${cached}`);
    } catch (err) {
      tried.push(`go install ${TEMPORAL_CLI_MODULE}@v${TEMPORAL_CLI_VERSION}: ${(err as Error).message.split('\n').slice(-3).join(' | ')}`);
    }
  } else {
    tried.push('go install: no `go` on PATH');
  }

  if (env.DURABLE_COMPUTE_TEMPORAL_DOWNLOAD === '1') {
    try {
      return { path: await sdkDownload(path.join(binDir, 'download')), source: 'sdk download' };
    } catch (err) {
      tried.push(`SDK download: ${(err as Error).message}`);
    }
  } else {
    tried.push('SDK download: not attempted (set DURABLE_COMPUTE_TEMPORAL_DOWNLOAD=1 where the internet can be reached)');
  }

  throw new UserFacingError(
    [
      `No Temporal CLI v${TEMPORAL_CLI_VERSION} could be found or built. Tried, in order:`,
      ...tried.map((t) => `  - ${t}`),
      'To fix: install Go (https://go.dev/dl, or apt-get install golang) so the project can build it, ' +
        'or set TEMPORAL_CLI_PATH to an existing `temporal` binary, ' +
        'or put `temporal` on PATH.',
    ].join('\n'),
  );
}

export function cachedTemporalCliExists(cacheDir?: string): boolean {
  return existsSync(path.join(temporalCacheDir(cacheDir), 'temporal'));
}
