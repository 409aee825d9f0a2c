import { execFile } from 'node:child_process';
import { accessSync, constants, writeFileSync } from 'node:fs';
import { promisify } from 'node:util';

/** The kernel's page cache, for benchmarks that must start every run from the same state. */
export const DROP_CACHES = '/proc/sys/vm/drop_caches';

/** True where this process may empty the page cache (root, /proc writable). */
export function canDropCaches(): boolean {
  try {
    accessSync(DROP_CACHES, constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

/** Writes every dirty page back, then empties the page cache: no run pays for the previous one's writeback. */
export async function dropOsCache(): Promise<void> {
  await promisify(execFile)('sync', []);
  writeFileSync(DROP_CACHES, '1\n');
}
