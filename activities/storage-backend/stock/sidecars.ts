/**
 * How the stock backend runs its sidecar programs (the WAL pusher, the safekeeper sync). They are
 * started on every compute start, on its cold-start path, so they run as bundled JavaScript:
 * compiling their TypeScript at each start with tsx cost ~0.45 CPU-seconds, a bundle ~0.1.
 * A deployed worker ships the bundles beside itself (`sidecars/<name>.mjs`, written by
 * `npm run build`); a worker running from the sources bundles them once per process with
 * esbuild, into the project's cache under a name that changes with their content.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { projectCacheDir, projectRoot } from '../../../common/paths';

export const SIDECARS = {
  'wal-pusher': 'activities/storage-backend/stock/wal-pusher-main.ts',
  'sync-safekeepers': 'activities/storage-backend/stock/sync-safekeepers-main.ts',
} as const;
export type Sidecar = keyof typeof SIDECARS;

const built = new Map<Sidecar, string>();

/** Where a bundled program keeps its sidecars: `sidecars/` beside the running script. */
function shippedBundle(name: Sidecar): string | undefined {
  const script = process.argv[1];
  if (!script) return undefined;
  const candidate = path.join(path.dirname(path.resolve(script)), 'sidecars', `${name}.mjs`);
  return existsSync(candidate) ? candidate : undefined;
}

/** Bundles the sidecar from the sources (node_modules stay external, found from the project root). */
async function bundleFromSources(name: Sidecar): Promise<string> {
  const { build } = await import('esbuild');
  const result = await build({
    entryPoints: [path.join(projectRoot, SIDECARS[name])],
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
    const tmp = `${file}.${process.pid}.tmp`;
    writeFileSync(tmp, code, { mode: 0o644 });
    renameSync(tmp, file);
  }
  return file;
}

/** Makes the sidecars ready to start (a worker calls this once, before it polls). */
export async function prepareSidecars(): Promise<void> {
  for (const name of Object.keys(SIDECARS) as Sidecar[]) {
    if (built.has(name)) continue;
    built.set(name, shippedBundle(name) ?? (await bundleFromSources(name)));
  }
}

/** argv (node and script) that runs the sidecar; falls back to tsx if prepareSidecars was never called. */
export function sidecarCommand(name: Sidecar): string[] {
  const bundle = built.get(name) ?? shippedBundle(name);
  if (bundle) return [process.execPath, bundle];
  const tsx = fileURLToPath(import.meta.resolve('tsx'));
  return [process.execPath, '--import', tsx, path.join(projectRoot, SIDECARS[name])];
}
