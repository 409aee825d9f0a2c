import path from 'node:path';
import { UserFacingError } from '../../common/errors';
import { projectCacheDir } from '../../common/paths';
import { findOnPath, goInstall, isExecutableFile } from '../go-install';

/** The Temporal server production runs, pinned. Its go.mod asks for a newer Go than Debian's, hence GOTOOLCHAIN=auto. */
export const TEMPORAL_SERVER_VERSION = '1.32.2';
export const TEMPORAL_SERVER_MODULE = 'go.temporal.io/server';
/** `go install` names each binary after its package directory: `server`, and `sql` (upstream's temporal-sql-tool). */
const PACKAGES = { server: 'cmd/server', sql: 'cmd/tools/sql' } as const;

export interface TemporalServerBinaries {
  server: string;
  /** The SQL schema tool. */
  sqlTool: string;
  source: 'DURABLE_COMPUTE_TEMPORAL_SERVER_BIN_DIR' | 'cache' | 'go install';
}

export function temporalServerCacheDir(cacheDir = projectCacheDir): string {
  return path.join(cacheDir, 'temporal-server', `v${TEMPORAL_SERVER_VERSION}`);
}

function binariesIn(dir: string): { server: string; sqlTool: string } | undefined {
  const server = path.join(dir, 'server');
  const sqlTool = path.join(dir, 'sql');
  return isExecutableFile(server) && isExecutableFile(sqlTool) ? { server, sqlTool } : undefined;
}

/**
 * Finds or builds the Temporal server and its SQL schema tool: DURABLE_COMPUTE_TEMPORAL_SERVER_BIN_DIR
 * (a directory holding both), then the project cache, then `go install` into that cache through the
 * Go module proxy. Fails with every step tried and what to do.
 */
export async function provisionTemporalServer(
  opts: { env?: Record<string, string | undefined>; cacheDir?: string; onProgress?: (line: string) => void } = {},
): Promise<TemporalServerBinaries> {
  const env = opts.env ?? process.env;
  const onProgress = opts.onProgress ?? (() => {});
  const tried: string[] = [];

  const explicit = env.DURABLE_COMPUTE_TEMPORAL_SERVER_BIN_DIR;
  if (explicit) {
    const found = binariesIn(explicit);
    if (found) return { ...found, source: 'DURABLE_COMPUTE_TEMPORAL_SERVER_BIN_DIR' };
    throw new UserFacingError(
      `DURABLE_COMPUTE_TEMPORAL_SERVER_BIN_DIR=${explicit} does not hold both executables \`server\` and \`sql\` ` +
        `(go install ${TEMPORAL_SERVER_MODULE}/${PACKAGES.server}@v${TEMPORAL_SERVER_VERSION} ${TEMPORAL_SERVER_MODULE}/${PACKAGES.sql}@v${TEMPORAL_SERVER_VERSION} builds them). Fix it or unset it.`,
    );
  }
  tried.push('DURABLE_COMPUTE_TEMPORAL_SERVER_BIN_DIR: not set');

  const binDir = temporalServerCacheDir(opts.cacheDir);
  const cached = binariesIn(binDir);
  if (cached) return { ...cached, source: 'cache' };
  tried.push(`project cache ${binDir}: not built yet`);

  const go = findOnPath('go', env.PATH);
  if (go) {
    try {
      await goInstall({
        goBinary: go,
        binDir,
        packages: Object.values(PACKAGES).map((p) => `${TEMPORAL_SERVER_MODULE}/${p}@v${TEMPORAL_SERVER_VERSION}`),
        what: `the Temporal server v${TEMPORAL_SERVER_VERSION} and its SQL schema tool`,
        env,
        // The module needs a newer Go than many machines have; auto fetches that toolchain through the module proxy.
        goEnv: env.GOTOOLCHAIN ? {} : { GOTOOLCHAIN: 'auto' },
        onProgress,
      });
      const built = binariesIn(binDir);
      if (built) return { ...built, source: 'go install' };
      tried.push(`go install: finished but left no \`server\` and \`sql\` in ${binDir}`);
    } catch (err) {
      tried.push(`go install ${TEMPORAL_SERVER_MODULE}@v${TEMPORAL_SERVER_VERSION}: ${(err as Error).message.split('\n').slice(-3).join(' | ')}`);
    }
  } else {
    tried.push('go install: no `go` on PATH');
  }

  throw new UserFacingError(
    [
      `The Temporal server v${TEMPORAL_SERVER_VERSION} could not be found or built. Tried, in order:`,
      ...tried.map((t) => `  - ${t}`),
      'To fix: install Go (apt-get install golang; GOTOOLCHAIN=auto then fetches the Go release the module needs) ' +
        'and make the Go module proxy reachable, or set DURABLE_COMPUTE_TEMPORAL_SERVER_BIN_DIR to a directory holding `server` and `sql` built from it.',
    ].join('\n'),
  );
}
