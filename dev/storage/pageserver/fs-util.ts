/** Durable file-system helpers: atomic JSON writes, recursive fsync, hard-link copies. */
import { writeFileAtomic } from '../../../common/atomic-write';
import { childEnv } from '../../../common/child-env';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

/** fsync a directory so a rename or create inside it survives a crash. */
export async function fsyncDir(dir: string): Promise<void> {
  const fh = await fsp.open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Writes `value` as JSON to `file` atomically: temp file, fsync, rename, fsync the directory. */
export async function writeJsonAtomic(file: string, value: unknown): Promise<void> {
  await writeFileAtomic(file, JSON.stringify(value, null, 2) + '\n', { mode: 0o644, durability: 'file-and-dir' });
}

export async function readJson<T>(file: string): Promise<T> {
  return JSON.parse(await fsp.readFile(file, 'utf8')) as T;
}

export async function exists(p: string): Promise<boolean> {
  try {
    await fsp.lstat(p);
    return true;
  } catch {
    return false;
  }
}

/** Bytes of the regular files below `root`. */
export async function treeBytes(root: string): Promise<number> {
  let total = 0;
  for (const e of await fsp.readdir(root, { withFileTypes: true })) {
    const p = path.join(root, e.name);
    if (e.isDirectory()) total += await treeBytes(p);
    else if (e.isFile()) total += (await fsp.stat(p)).size;
  }
  return total;
}

/** fsync every file and directory below `root` (files first, then their directory). */
export async function fsyncTree(root: string): Promise<void> {
  const entries = await fsp.readdir(root, { withFileTypes: true });
  await Promise.all(
    entries.map(async (e) => {
      const p = path.join(root, e.name);
      if (e.isDirectory()) {
        await fsyncTree(p);
      } else if (e.isFile()) {
        const fh = await fsp.open(p, 'r');
        try {
          await fh.sync();
        } finally {
          await fh.close();
        }
      }
    }),
  );
  await fsyncDir(root);
}

/** Recreates `src` at `dest` with hard links for files (for immutable trees shared between timelines). */
export async function linkTree(src: string, dest: string): Promise<void> {
  const st = await fsp.stat(src);
  await fsp.mkdir(dest, { mode: st.mode & 0o7777 });
  await fsp.chmod(dest, st.mode & 0o7777);
  await fsp.chown(dest, st.uid, st.gid).catch(() => undefined);
  for (const e of await fsp.readdir(src, { withFileTypes: true })) {
    const from = path.join(src, e.name);
    const to = path.join(dest, e.name);
    if (e.isDirectory()) await linkTree(from, to);
    else if (e.isFile()) await fsp.link(from, to);
    else if (e.isSymbolicLink()) await fsp.symlink(await fsp.readlink(from), to);
  }
}

/**
 * Renames `src` to `dest`; across file systems copies it next to `dest` first (then renames that
 * copy into place, so `dest` still appears complete or not at all).
 */
export async function moveDir(src: string, dest: string): Promise<void> {
  try {
    await fsp.rename(src, dest);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EXDEV') throw err;
    const staging = path.join(path.dirname(dest), `.tmp-${randomSuffix()}`);
    await execFileAsync('cp', ['-a', '--', src, staging], { timeout: 30 * 60 * 1000, env: childEnv() });
    await fsyncTree(staging);
    await fsp.rename(staging, dest);
    await fsp.rm(src, { recursive: true, force: true });
  }
}

/** Removes a directory tree by first renaming it aside (atomic), then deleting it. */
export async function removeTree(dir: string): Promise<void> {
  if (!(await exists(dir))) return;
  const aside = path.join(path.dirname(dir), `.deleted-${path.basename(dir)}-${randomBytes(4).toString('hex')}`);
  await fsp.rename(dir, aside);
  await fsyncDir(path.dirname(dir));
  await fsp.rm(aside, { recursive: true, force: true });
}

export function randomSuffix(): string {
  return randomBytes(6).toString('hex');
}
