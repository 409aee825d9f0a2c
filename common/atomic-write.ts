import { randomBytes } from 'node:crypto';
import { closeSync, fchownSync, fsyncSync, linkSync, openSync, rmSync, renameSync, writeSync } from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';

/**
 * The one way to replace a file so that readers (and a restart after a crash) see either the old
 * or the new content, never half of it: write a temporary file in the same directory, then rename
 * it over the target. Sync and async variants share these semantics.
 */
export interface AtomicWriteOptions {
  /** Mode of the new file (the process umask applies); default 0o666 like writeFile. */
  mode?: number;
  /** Owner to give the file before it appears (the server may run as another user). */
  owner?: { uid: number; gid: number };
  /**
   * What to fsync: 'none' (the rename alone: atomic but may be lost on power failure), 'file'
   * (the content before the rename), 'file-and-dir' (also the directory after the rename, so
   * the rename itself survives a power failure).
   */
  durability?: 'none' | 'file' | 'file-and-dir';
}

function tempPathFor(file: string): string {
  return path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
}

function writeTempSync(tmp: string, data: string | Uint8Array, opts: AtomicWriteOptions): void {
  const fd = openSync(tmp, 'wx', opts.mode ?? 0o666);
  try {
    if (opts.owner) fchownSync(fd, opts.owner.uid, opts.owner.gid);
    const bytes = typeof data === 'string' ? Buffer.from(data) : data;
    let offset = 0;
    while (offset < bytes.length) offset += writeSync(fd, bytes, offset, bytes.length - offset);
    if ((opts.durability ?? 'none') !== 'none') fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

function fsyncDirSync(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Replaces `file` with `data` atomically (see AtomicWriteOptions). */
export function writeFileAtomicSync(file: string, data: string | Uint8Array, opts: AtomicWriteOptions = {}): void {
  const tmp = tempPathFor(file);
  try {
    writeTempSync(tmp, data, opts);
    renameSync(tmp, file);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
  if (opts.durability === 'file-and-dir') fsyncDirSync(path.dirname(file));
}

/** The async variant of writeFileAtomicSync, with the same semantics. */
export async function writeFileAtomic(file: string, data: string | Uint8Array, opts: AtomicWriteOptions = {}): Promise<void> {
  const tmp = tempPathFor(file);
  try {
    const fh = await fsp.open(tmp, 'wx', opts.mode ?? 0o666);
    try {
      if (opts.owner) await fh.chown(opts.owner.uid, opts.owner.gid);
      await fh.writeFile(data);
      if ((opts.durability ?? 'none') !== 'none') await fh.sync();
    } finally {
      await fh.close();
    }
    await fsp.rename(tmp, file);
  } catch (err) {
    await fsp.rm(tmp, { force: true });
    throw err;
  }
  if (opts.durability === 'file-and-dir') {
    const dir = await fsp.open(path.dirname(file), 'r');
    try {
      await dir.sync();
    } finally {
      await dir.close();
    }
  }
}

/**
 * Creates `file` with `data` unless it exists: written to a temporary file and hard-linked into
 * place, so two processes creating it at once agree on one content and nobody ever reads a
 * half-written file. Returns without writing when the file is already there.
 */
export function createFileOnceSync(file: string, data: string | Uint8Array, opts: Pick<AtomicWriteOptions, 'mode'> = {}): void {
  const tmp = tempPathFor(file);
  try {
    writeTempSync(tmp, data, opts);
    linkSync(tmp, file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  } finally {
    rmSync(tmp, { force: true });
  }
}
