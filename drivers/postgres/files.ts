import { open, readFile, stat } from 'node:fs/promises';
import { writeFileAtomic as writeAtomic } from '../../common/atomic-write';
import { maskSecrets } from '../../common/errors';
import type { ServerUser } from './server-user';

/**
 * Writes `content` to `file` via a temporary file and a rename, so a crash never leaves a
 * half-written configuration file for Postgres to trip over, and hands it to the server user.
 */
export async function writeFileAtomic(file: string, content: string, opts: { mode?: number; owner?: ServerUser } = {}): Promise<void> {
  await writeAtomic(file, content, { mode: opts.mode ?? 0o600, owner: opts.owner });
}

export async function readTextIfExists(file: string): Promise<string | undefined> {
  try {
    return await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

export async function exists(file: string): Promise<boolean> {
  try {
    await stat(file);
    return true;
  } catch {
    return false;
  }
}

/**
 * The last `maxLines` lines (at most `maxBytes`, none before `fromOffset`) of a log file, secrets
 * masked; '' if it is missing.
 */
export async function readLogTail(file: string | undefined, maxLines = 30, maxBytes = 16_384, fromOffset = 0): Promise<string> {
  if (!file) return '';
  let handle;
  try {
    handle = await open(file, 'r');
  } catch {
    return '';
  }
  try {
    const { size } = await handle.stat();
    const start = Math.max(Math.min(fromOffset, size), size - maxBytes);
    const length = size - start;
    const buf = Buffer.alloc(length);
    await handle.read(buf, 0, length, start);
    const lines = buf.toString('utf8').split('\n');
    if (start > fromOffset) lines.shift(); // a partial first line
    while (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
    return maskSecrets(lines.slice(-maxLines).join('\n'));
  } finally {
    await handle.close();
  }
}
