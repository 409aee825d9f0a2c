import path from 'node:path';
import { tsNodeArgs } from './paths';

/** Defined (as true) by `npm run build` in every bundle it makes; absent when the sources run through tsx. */
declare const __DURABLE_COMPUTE_BUNDLED__: boolean | undefined;

/** True when this code runs from a bundle in dist/, not from the TypeScript sources. */
export const isBundled: boolean = typeof __DURABLE_COMPUTE_BUNDLED__ !== 'undefined' && __DURABLE_COMPUTE_BUNDLED__;

/**
 * Node arguments that run one of the project's own entry points (named by its TypeScript source)
 * in a child process. A bundle carries each such entry point compiled beside itself, under the
 * source's name with `.cjs` (the build puts it there, and `import.meta.url` is the bundle's own
 * file), so production children need neither tsx nor node_modules.
 */
export function nodeEntryArgs(sourceFile: string): string[] {
  if (isBundled) return [path.join(path.dirname(sourceFile), `${path.basename(sourceFile, '.ts')}.cjs`)];
  return [...tsNodeArgs(), sourceFile];
}
