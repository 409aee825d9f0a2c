import { createRequire } from 'node:module';
import { fileURLToPath, pathToFileURL } from 'node:url';
import path from 'node:path';

/** The repository root: everything the project caches or keeps locally lives below it. */
export const projectRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** Git-ignored cache for built tools (the Temporal CLI). */
export const projectCacheDir = path.join(projectRoot, '.cache');

/** Default home of the embedded dev stack's state, logs and data. */
export const defaultStackDir = path.join(projectRoot, '.durable-compute', 'stack');

/** Node flags that let a child process run this project's TypeScript directly. */
export function tsNodeArgs(): string[] {
  return ['--import', pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href];
}

/** Longest importer work directory root: an import's directory adds 28 bytes, its scratch server's socket 19 more, within 107. */
export const MAX_WORKDIR_ROOT_BYTES = 107 - 28 - 19;
