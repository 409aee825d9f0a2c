/** The local side of a data directory upload: its files, their hashes, and the error for a file that changes meanwhile. */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { lstat, readdir } from 'node:fs/promises';
import path from 'node:path';

const MiB = 1024 * 1024;

export interface LocalFile {
  rel: string;
  abs: string;
  size: number;
  mtimeMs: number;
}

/** Regular files below `root`, sorted by relative path; symlinks are reported, not followed. */
export async function walkDataDirectory(root: string): Promise<{ files: LocalFile[]; symlinks: string[] }> {
  const files: LocalFile[] = [];
  const symlinks: string[] = [];
  const visit = async (dir: string, relDir: string) => {
    for (const entry of await readdir(dir, { withFileTypes: true })) {
      const abs = path.join(dir, entry.name);
      const rel = relDir ? `${relDir}/${entry.name}` : entry.name;
      if (entry.isSymbolicLink()) symlinks.push(rel);
      else if (entry.isDirectory()) await visit(abs, rel);
      else if (entry.isFile()) {
        const st = await lstat(abs);
        files.push({ rel, abs, size: st.size, mtimeMs: st.mtimeMs });
      }
    }
  };
  await visit(root, '');
  files.sort((a, b) => (a.rel < b.rel ? -1 : a.rel > b.rel ? 1 : 0));
  return { files, symlinks: symlinks.sort() };
}

export async function hashOfFile(file: string, algorithm: 'sha256' | 'md5'): Promise<string> {
  const hash = createHash(algorithm);
  for await (const chunk of createReadStream(file, { highWaterMark: MiB })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

export function sha256OfFile(file: string): Promise<string> {
  return hashOfFile(file, 'sha256');
}

export class FileChangedError extends Error {
  constructor(file: string) {
    super(`${file} changed while being uploaded; is the scratch Postgres still running?`);
  }
}
