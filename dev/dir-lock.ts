import { closeSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { UserFacingError } from '../common/errors';

/**
 * Serializes concurrent starts and stops on one state directory (`dev up`/`dev down` on a stack,
 * or on a Temporal server): a lock file holding the holder's pid; a dead holder's lock is taken over.
 */
export async function withDirLock<T>(dir: string, what: string, fn: () => Promise<T>): Promise<T> {
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  const lock = path.join(dir, 'stack.lock');
  const deadline = Date.now() + 120_000;
  for (;;) {
    try {
      closeSync(openSync(lock, 'wx'));
      writeFileSync(lock, String(process.pid));
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const holder = Number(readFileSync(lock, 'utf8') || '0');
      let holderAlive = false;
      try {
        if (holder > 0) process.kill(holder, 0);
        holderAlive = holder > 0;
      } catch {
        holderAlive = false;
      }
      if (!holderAlive) {
        rmSync(lock, { force: true });
        continue;
      }
      if (Date.now() > deadline) throw new UserFacingError(`${what} in ${dir} is locked by process ${holder}`);
      await sleep(200);
    }
  }
  try {
    return await fn();
  } finally {
    rmSync(lock, { force: true });
  }
}
