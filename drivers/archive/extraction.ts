/** The state of one tar extraction: the entries written so far, the checks each new entry must pass. */
import { closeSync, fchmodSync, fchownSync, constants as fsConstants, ftruncateSync, openSync, writeSync } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Extract, Header } from 'tar-stream';
import { checkSymlinkTarget, displayName, entryComponents, UnsafeNameError } from './entry-paths';
import { ArchiveError, type ExtractOptions } from './extract-types';

/** One entry of the archive: its header and a stream of its data. */
type Entry = Extract extends AsyncIterable<infer E> ? E : never;

export const DEFAULT_MAX_ENTRIES = 1_000_000;
export const BLOCK = 512;
/** PostgreSQL refuses to start unless its data directory is private; subdirectories follow suit. */
export const DIR_MODE = 0o700;

/** Regular files keep their owner bits; set-id, sticky and group/world write bits never survive. */
function fileMode(mode: number | undefined): number {
  return ((mode ?? 0o600) & 0o755) | 0o600;
}

export function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function isErrno(err: unknown, code: string): boolean {
  return typeof err === 'object' && err !== null && (err as NodeJS.ErrnoException).code === code;
}

/** Errors of the file system carry the failing system call; errors of the stream do not. */
export function isFsError(err: unknown): boolean {
  return typeof err === 'object' && err !== null && typeof (err as NodeJS.ErrnoException).syscall === 'string';
}

/** The GNU type flags with a name worth telling the user; any other unknown flag is shown raw. */
const GNU_TYPES: Record<string, string> = {
  S: 'GNU sparse file',
  V: 'GNU volume header',
  M: 'GNU multi-volume continuation',
  D: 'GNU dump directory',
};

/** The raw type flag byte of a header, as the user would see it in a tar listing. */
function describeTypeflag(byte: number | undefined): string {
  if (byte === undefined) return 'an entry of unknown type';
  const shown = byte >= 0x21 && byte <= 0x7e ? `'${String.fromCharCode(byte)}'` : `0x${byte.toString(16).padStart(2, '0')}`;
  const known = GNU_TYPES[String.fromCharCode(byte)];
  return known ? `${known} (type ${shown})` : `an entry of type ${shown}`;
}

/**
 * The stream bytes from the end of the last entry's data onwards. tar-stream reports a type flag
 * it does not know as null; these bytes still hold the header, so the refusal can name the flag.
 * Memory stays bounded: file data is dropped as soon as it is fed, headers once their entry is handled.
 */
export class RecentBytes {
  private readonly chunks: { start: number; data: Buffer }[] = [];

  push(start: number, data: Buffer, keepFrom: number): void {
    this.chunks.push({ start, data });
    while (this.chunks.length > 0 && this.chunks[0]!.start + this.chunks[0]!.data.length <= keepFrom) this.chunks.shift();
  }

  byteAt(offset: number): number | undefined {
    const chunk = this.chunks.find((c) => offset >= c.start && offset < c.start + c.data.length);
    return chunk?.data[offset - chunk.start];
  }
}

/** Zero runs are skipped in blocks of this many bytes (the file system's page). */
const SPARSE_BLOCK = 4096;
const ZERO_BLOCK = Buffer.alloc(SPARSE_BLOCK);

/**
 * Writes `chunk` at `position` of the file, leaving its all-zero blocks unwritten: a hole reads
 * back as zeros, so the file's content is the same, and a data directory's zero pages (the unused
 * part of a WAL segment, empty relation pages) cost neither page cache nor disk. Blocks are
 * aligned on file offsets so the holes are whole file-system blocks.
 */
function writeSkippingZeros(fd: number, chunk: Buffer, position: number): void {
  let runStart = -1;
  const flush = (end: number) => {
    let offset = runStart;
    while (offset < end) offset += writeSync(fd, chunk, offset, end - offset, position + offset);
    runStart = -1;
  };
  let start = 0;
  while (start < chunk.length) {
    const end = Math.min(chunk.length, start + SPARSE_BLOCK - ((position + start) % SPARSE_BLOCK));
    const zero = chunk.subarray(start, end).equals(ZERO_BLOCK.subarray(0, end - start));
    if (!zero && runStart < 0) runStart = start;
    if (zero && runStart >= 0) flush(start);
    start = end;
  }
  if (runStart >= 0) flush(chunk.length);
}

/** Offset of the type flag inside a 512-byte tar header. */
const TYPEFLAG_OFFSET = 156;

interface Created {
  abs: string;
  dir: boolean;
}

export class Extraction {
  readonly root: string;
  readonly created: Created[] = [];
  /** Relative directory paths proven to be real directories (never links) inside the root. */
  private readonly verifiedDirs = new Set<string>(['']);
  files = 0;
  bytes = 0;
  entries = 0;
  /** Where the data of the last entry ended in the stream: the end-of-archive marker must follow. */
  lastEntryEnd = 0;

  constructor(
    root: string,
    private readonly opts: Required<Pick<ExtractOptions, 'maxBytes' | 'maxEntries'>> & Pick<ExtractOptions, 'owner'>,
  ) {
    this.root = root;
  }

  private unsafe(name: string, reason: string): ArchiveError {
    return new ArchiveError('unsafe-entry', `unsafe archive entry ${displayName(name)}: ${reason}`, name);
  }

  private notUnderstood(name: string, kind: string): ArchiveError {
    return this.unsafe(name, `${kind} is not an entry type this extractor understands (it extracts regular files, directories, symbolic and hard links)`);
  }

  /** The components of `value` (the entry's name, or its hard link target), errors naming the entry. */
  private components(name: string, value = name, what?: string): string[] {
    try {
      return entryComponents(value);
    } catch (err) {
      if (err instanceof UnsafeNameError) throw this.unsafe(name, what ? `${what} ${displayName(value)}: ${err.message}` : err.message);
      throw err;
    }
  }

  private abs(parts: string[]): string {
    return path.join(this.root, ...parts);
  }

  private async chown(abs: string): Promise<void> {
    if (this.opts.owner) await fs.lchown(abs, this.opts.owner.uid, this.opts.owner.gid);
  }

  /** Makes sure every directory above `parts` is a real directory inside the root, creating missing ones. */
  private async ensureDirs(name: string, parts: string[]): Promise<void> {
    for (let i = 1; i <= parts.length; i++) {
      const rel = parts.slice(0, i).join('/');
      if (this.verifiedDirs.has(rel)) continue;
      const abs = this.abs(parts.slice(0, i));
      let stat;
      try {
        stat = await fs.lstat(abs);
      } catch (err) {
        if (!isErrno(err, 'ENOENT')) throw err;
        await fs.mkdir(abs, { mode: DIR_MODE });
        this.created.push({ abs, dir: true });
        await fs.chmod(abs, DIR_MODE);
        await this.chown(abs);
        this.verifiedDirs.add(rel);
        continue;
      }
      if (stat.isSymbolicLink()) throw this.unsafe(name, `path goes through the symbolic link ${displayName(rel)}`);
      if (!stat.isDirectory()) throw this.unsafe(name, `${displayName(rel)} is not a directory`);
      this.verifiedDirs.add(rel);
    }
  }

  /** Clears the way for a non-directory entry at `parts`: an earlier file or link there is replaced, a directory never. */
  private async clearSpot(name: string, parts: string[]): Promise<string> {
    if (parts.length === 0) throw this.unsafe(name, 'names the target directory itself');
    await this.ensureDirs(name, parts.slice(0, -1));
    const abs = this.abs(parts);
    try {
      const stat = await fs.lstat(abs);
      if (stat.isDirectory()) throw this.unsafe(name, 'would replace a directory');
      await fs.unlink(abs);
    } catch (err) {
      if (!isErrno(err, 'ENOENT')) throw err;
    }
    return abs;
  }

  async handle(entry: Entry, streamBytes: () => number, byteAt: (offset: number) => number | undefined): Promise<void> {
    // The parser reports kinds its typings do not list (GNU sparse files, unknown flags) as null.
    const h = entry.header as Omit<Header, 'type'> & { type: string | null; byteOffset?: number };
    const name = h.name;
    this.entries++;
    if (this.entries > this.opts.maxEntries) {
      throw new ArchiveError('too-many-entries', `archive has more than ${this.opts.maxEntries} entries (at ${displayName(name)})`, name);
    }
    const size = h.size ?? 0;
    if (!Number.isSafeInteger(size) || size < 0) throw this.unsafe(name, `invalid size ${String(h.size)}`);
    const dataStart = typeof h.byteOffset === 'number' ? h.byteOffset : streamBytes();
    // Read before lastEntryEnd moves on: the header bytes are kept only up to then.
    const typeflag = byteAt(dataStart - BLOCK + TYPEFLAG_OFFSET);
    this.lastEntryEnd = dataStart + Math.ceil(size / BLOCK) * BLOCK;

    // Written as regular files, these would hold a sparse map (or a volume label, a directory
    // listing) instead of the file: refuse them rather than corrupt the data directory.
    if (h.type === null) throw this.notUnderstood(name, describeTypeflag(typeflag));
    const sparseRecord = Object.keys(h.pax ?? {}).find((k) => k.startsWith('GNU.sparse.'));
    if (sparseRecord !== undefined) throw this.notUnderstood(name, `GNU sparse file (pax record ${sparseRecord})`);
    const type = h.type;
    if (type !== 'file' && type !== 'contiguous-file' && size > 0 && type !== 'directory') {
      throw this.unsafe(name, `${type} entry carries ${size} bytes of data`);
    }
    const parts = this.components(name);
    switch (type) {
      case 'directory':
        await this.directory(name, parts);
        return;
      case 'file':
      case 'contiguous-file':
        await this.file(name, parts, size, h.mode, entry);
        return;
      case 'symlink':
        await this.symlink(name, parts, h.linkname ?? '');
        return;
      case 'link':
        await this.hardlink(name, parts, h.linkname ?? '');
        return;
      default:
        throw this.unsafe(name, `${type} entries are not allowed`);
    }
  }

  private async directory(name: string, parts: string[]): Promise<void> {
    const rel = parts.join('/');
    const existed = this.verifiedDirs.has(rel);
    await this.ensureDirs(name, parts);
    // A directory that already existed (the target itself, or one listed twice) still gets the private mode.
    if (existed || parts.length === 0) await fs.chmod(this.abs(parts), DIR_MODE);
  }

  private async file(name: string, parts: string[], size: number, mode: number | undefined, entry: Entry): Promise<void> {
    if (this.bytes + size > this.opts.maxBytes) {
      throw new ArchiveError(
        'too-large',
        `archive entry ${displayName(name)} declares ${size} bytes, more than the ${this.opts.maxBytes}-byte limit allows`,
        name,
      );
    }
    // O_EXCL + O_NOFOLLOW never follows or reuses anything already there. The common case (a fresh
    // spot) costs one open; only a name that exists is cleared (never a directory) and tried again.
    const flags = fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_NOFOLLOW;
    await this.ensureDirs(name, parts.slice(0, -1));
    let abs = this.abs(parts);
    let fd: number;
    try {
      fd = openSync(abs, flags, 0o600);
    } catch (err) {
      if (!isErrno(err, 'EEXIST') && !isErrno(err, 'ELOOP')) throw err;
      abs = await this.clearSpot(name, parts);
      fd = openSync(abs, flags, 0o600);
    }
    this.created.push({ abs, dir: false });
    let written = 0;
    // A data directory is mostly many small files: synchronous writes of each chunk as it arrives
    // avoid a thread-pool round trip per call, and memory stays bounded by the chunk size.
    try {
      for await (const chunk of entry as AsyncIterable<Buffer>) {
        writeSkippingZeros(fd, chunk, written);
        written += chunk.length;
      }
      // Zero blocks at the end were skipped: the file still gets its full size (as a hole).
      if (written > 0) ftruncateSync(fd, written);
      // Created 0600; only a different mode needs a chmod (most of a data directory is 0600).
      if (fileMode(mode) !== 0o600) fchmodSync(fd, fileMode(mode));
      if (this.opts.owner) fchownSync(fd, this.opts.owner.uid, this.opts.owner.gid);
    } finally {
      closeSync(fd);
    }
    if (written !== size) throw new ArchiveError('truncated', `archive ended inside ${displayName(name)}`, name);
    this.files++;
    this.bytes += written;
  }

  private async symlink(name: string, parts: string[], target: string): Promise<void> {
    try {
      checkSymlinkTarget(parts.slice(0, -1), target);
    } catch (err) {
      if (err instanceof UnsafeNameError) throw this.unsafe(name, err.message);
      throw err;
    }
    const abs = await this.clearSpot(name, parts);
    await fs.symlink(target, abs);
    this.created.push({ abs, dir: false });
    await this.chown(abs);
  }

  private async hardlink(name: string, parts: string[], target: string): Promise<void> {
    const targetParts = this.components(name, target, 'hard link target');
    if (targetParts.length === 0) throw this.unsafe(name, 'hard link to the target directory');
    await this.ensureDirs(name, targetParts.slice(0, -1));
    const targetAbs = this.abs(targetParts);
    let stat;
    try {
      stat = await fs.lstat(targetAbs);
    } catch (err) {
      if (isErrno(err, 'ENOENT')) throw this.unsafe(name, `hard link to ${displayName(target)}, which the archive has not created`);
      throw err;
    }
    if (!stat.isFile()) throw this.unsafe(name, `hard link to ${displayName(target)}, which is not a regular file`);
    const abs = await this.clearSpot(name, parts);
    if (abs === targetAbs) throw this.unsafe(name, 'hard link to itself');
    await fs.link(targetAbs, abs);
    this.created.push({ abs, dir: false });
    this.files++;
  }

  /** Removes what this extraction created, newest first; what was there before stays (replaced files excepted). */
  async removeCreated(): Promise<void> {
    for (const c of this.created.reverse()) {
      if (c.dir) await fs.rmdir(c.abs).catch(() => undefined);
      else await fs.rm(c.abs, { force: true }).catch(() => undefined);
    }
    this.created.length = 0;
  }
}
