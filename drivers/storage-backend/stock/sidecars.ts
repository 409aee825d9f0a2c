/**
 * How the stock backend runs its sidecar programs (the WAL pusher, the safekeeper sync). They are
 * started on every compute start, on its cold-start path, so they run as bundled JavaScript:
 * compiling their TypeScript at each start with tsx cost ~0.45 CPU-seconds, a bundle ~0.1.
 * A deployed worker ships them built beside itself (`npm run build`, common/node-entry.ts); a
 * worker running from the sources bundles them once per process with esbuild, into the project's
 * cache under a name that changes with their content.
 */
import { writeFileAtomicSync } from '../../../common/atomic-write';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { isBundled, nodeEntryArgs } from '../../../common/node-entry';
import { projectCacheDir } from '../../../common/paths';

const here = path.dirname(fileURLToPath(import.meta.url));

/** Each sidecar's entry point, beside this file (a bundle carries them beside itself, built). */
export const SIDECARS = {
  'wal-pusher': 'wal-pusher-main.ts',
  'sync-safekeepers': 'sync-safekeepers-main.ts',
} as const;
export type Sidecar = keyof typeof SIDECARS;

const built = new Map<Sidecar, string>();

/** Bundles the sidecar from the sources (node_modules stay external, found from the project root). */
async function bundleFromSources(name: Sidecar): Promise<string> {
  const { build } = await import('esbuild');
  const result = await build({
    entryPoints: [path.join(here, SIDECARS[name])],
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    packages: 'external',
    write: false,
    logLevel: 'silent',
  });
  const code = result.outputFiles[0]!.contents;
  const digest = createHash('sha256').update(code).digest('hex').slice(0, 16);
  const dir = path.join(projectCacheDir, 'sidecars');
  const file = path.join(dir, `${name}-${digest}.mjs`);
  if (!existsSync(file)) {
    mkdirSync(dir, { recursive: true, mode: 0o755 });
    writeFileAtomicSync(file, code, { mode: 0o644 });
  }
  return file;
}

/** Makes the sidecars ready to start (a worker calls this once, before it polls); a bundle has them already. */
export async function prepareSidecars(): Promise<void> {
  if (isBundled) return;
  for (const name of Object.keys(SIDECARS) as Sidecar[]) {
    if (!built.has(name)) built.set(name, await bundleFromSources(name));
  }
}

/** argv (node and script) that runs the sidecar; from the sources through tsx if prepareSidecars was never called. */
export function sidecarCommand(name: Sidecar): string[] {
  const bundle = built.get(name);
  if (bundle) return [process.execPath, bundle];
  return [process.execPath, ...nodeEntryArgs(path.join(here, SIDECARS[name]))];
}
