/**
 * What an uploaded PostgreSQL 15 data directory may contain. Every object name and size in the
 * bucket is untrusted: a name must be a plain relative path of expected components (so it can
 * never point outside the target directory), and sizes must be what Postgres would write.
 */

export const BLOCK_SIZE = 8192;
export const MAX_RELATION_SEGMENT_BYTES = 1024 * 1024 * 1024;
const SLRU_SEGMENT_MAX_BYTES = 32 * BLOCK_SIZE;
const OTHER_FILE_MAX_BYTES = 64 * 1024 * 1024;

export class PgdataLayoutError extends Error {
  override name = 'PgdataLayoutError';
  constructor(
    message: string,
    readonly key?: string,
  ) {
    super(message);
  }
}

/** How a validated file is handled. */
export type FileKind =
  | 'relation'
  | 'control'
  | 'relmapper'
  | 'pg_version'
  | 'slru'
  | 'wal'
  | 'config'
  | 'other'
  /** Present in the bucket but not needed to start: not downloaded. */
  | 'ignored';

export interface PgdataEntry {
  key: string;
  /** Path relative to the data directory, '/'-separated, validated. */
  rel: string;
  size: number;
  kind: FileKind;
}

const TOP_LEVEL_FILES: Record<string, FileKind> = {
  PG_VERSION: 'pg_version',
  'pg_hba.conf': 'config',
  'pg_ident.conf': 'config',
  'postgresql.conf': 'config',
  'postgresql.auto.conf': 'config',
  'postmaster.opts': 'config',
};

/** Files whose presence would make Postgres do something other than start from the checkpoint. */
const REFUSED_TOP_LEVEL_FILES: Record<string, string> = {
  'postmaster.pid': 'the source server was not stopped (postmaster.pid is present)',
  backup_label: 'a backup_label would start archive recovery',
  tablespace_map: 'tablespaces cannot be imported',
  'recovery.signal': 'recovery.signal would start archive recovery',
  'standby.signal': 'standby.signal would start a standby',
  'recovery.conf': 'recovery.conf is not a PostgreSQL 15 file',
};

const TOP_LEVEL_DIRS = new Set([
  'base',
  'global',
  'pg_commit_ts',
  'pg_dynshmem',
  'pg_logical',
  'pg_multixact',
  'pg_notify',
  'pg_replslot',
  'pg_serial',
  'pg_snapshots',
  'pg_stat',
  'pg_stat_tmp',
  'pg_subtrans',
  'pg_twophase',
  'pg_wal',
  'pg_xact',
]);

/** Directories Postgres 15 needs even when empty (object storage keeps no empty directories). */
export const SKELETON_DIRS = [
  'base',
  'global',
  'pg_commit_ts',
  'pg_dynshmem',
  'pg_logical',
  'pg_logical/mappings',
  'pg_logical/snapshots',
  'pg_multixact',
  'pg_multixact/members',
  'pg_multixact/offsets',
  'pg_notify',
  'pg_replslot',
  'pg_serial',
  'pg_snapshots',
  'pg_stat',
  'pg_stat_tmp',
  'pg_subtrans',
  'pg_tblspc',
  'pg_twophase',
  'pg_wal',
  'pg_wal/archive_status',
  'pg_xact',
];

const SLRU_DIRS = new Set(['pg_xact', 'pg_subtrans', 'pg_commit_ts', 'pg_serial', 'pg_notify', 'pg_multixact/offsets', 'pg_multixact/members']);

const SEGMENT = /^[A-Za-z0-9._-]{1,255}$/;
const RELATION_FILE = /^[1-9][0-9]{0,9}(?:_(?:fsm|vm|init))?(?:\.[1-9][0-9]{0,5})?$/;
const OID = /^[1-9][0-9]{0,9}$/;
const WAL_SEGMENT = /^[0-9A-F]{24}$/;
const WAL_OTHER = /^(?:[0-9A-F]{8}\.history|[0-9A-F]{24}\.partial|[0-9A-F]{24}\.[0-9A-F]{8}\.backup)$/;
const SLRU_SEGMENT = /^[0-9A-F]{4,6}$/;
const DB_SPECIAL_FILES: Record<string, FileKind> = { PG_VERSION: 'pg_version', 'pg_filenode.map': 'relmapper', 'pg_internal.init': 'other' };
const GLOBAL_SPECIAL_FILES: Record<string, FileKind> = { pg_control: 'control', 'pg_filenode.map': 'relmapper', 'pg_internal.init': 'other' };

function fail(key: string, why: string): never {
  throw new PgdataLayoutError(`Refusing object ${JSON.stringify(key)}: ${why}`, key);
}

/** Checks the relative path's shape: plain segments only, nothing that could leave the directory. */
export function checkRelativePath(key: string, rel: string): string[] {
  if (rel.length === 0) fail(key, 'empty name below pgdata/');
  if (rel.length > 1024) fail(key, 'name longer than 1024 characters');
  if (rel.includes('\0')) fail(key, 'name contains a NUL character');
  if (rel.includes('\\')) fail(key, 'name contains a backslash');
  if (rel.startsWith('/')) fail(key, 'absolute path');
  const segs = rel.split('/');
  for (const seg of segs) {
    if (seg === '') fail(key, 'empty path segment (double or trailing slash)');
    if (seg === '.' || seg === '..') fail(key, `"${seg}" path segment`);
    if (!SEGMENT.test(seg)) fail(key, `path segment ${JSON.stringify(seg)} has characters outside [A-Za-z0-9._-]`);
  }
  return segs;
}

function checkSize(key: string, size: number, max: number, multipleOf?: number): void {
  if (!Number.isSafeInteger(size) || size < 0) fail(key, `invalid size ${size}`);
  if (size > max) fail(key, `size ${size} exceeds the ${max} bytes such a file can have`);
  if (multipleOf && size % multipleOf !== 0) fail(key, `size ${size} is not a multiple of ${multipleOf}`);
}

/** Classifies one object and checks its name and size; throws PgdataLayoutError naming the key. */
export function classifyEntry(key: string, rel: string, size: number, walSegmentSize: number): PgdataEntry {
  const segs = checkRelativePath(key, rel);
  const top = segs[0]!;
  const entry = (kind: FileKind): PgdataEntry => ({ key, rel, size, kind });

  if (segs.length === 1) {
    if (REFUSED_TOP_LEVEL_FILES[top]) fail(key, REFUSED_TOP_LEVEL_FILES[top]);
    const kind = TOP_LEVEL_FILES[top];
    if (!kind) fail(key, TOP_LEVEL_DIRS.has(top) ? `${top} must be a directory` : `unexpected top-level file ${top}`);
    checkSize(key, size, kind === 'pg_version' ? 16 : OTHER_FILE_MAX_BYTES);
    return entry(kind);
  }
  if (top === 'pg_tblspc') fail(key, 'tablespace links cannot be imported (entries under pg_tblspc/ are symlinks in a data directory)');
  if (!TOP_LEVEL_DIRS.has(top)) fail(key, `unexpected top-level directory ${top}`);

  switch (top) {
    case 'base': {
      if (segs[1] === 'pgsql_tmp') return entry('ignored');
      if (segs.length !== 3) fail(key, 'expected base/<database oid>/<file>');
      if (!OID.test(segs[1]!)) fail(key, `database directory ${JSON.stringify(segs[1])} is not an OID`);
      const name = segs[2]!;
      if (DB_SPECIAL_FILES[name]) {
        const kind = DB_SPECIAL_FILES[name];
        checkSize(key, size, kind === 'relmapper' ? 512 : kind === 'pg_version' ? 16 : OTHER_FILE_MAX_BYTES);
        if (kind === 'relmapper' && size !== 512) fail(key, `a relation mapper file is 512 bytes, not ${size}`);
        return entry(kind);
      }
      if (!RELATION_FILE.test(name)) fail(key, `${JSON.stringify(name)} is not a relation file name`);
      checkSize(key, size, MAX_RELATION_SEGMENT_BYTES, BLOCK_SIZE);
      return entry('relation');
    }
    case 'global': {
      if (segs.length !== 2) fail(key, 'expected global/<file>');
      const name = segs[1]!;
      const special = GLOBAL_SPECIAL_FILES[name];
      if (special === 'control') {
        if (size !== 8192) fail(key, `pg_control is ${size} bytes, expected 8192`);
        return entry('control');
      }
      if (special === 'relmapper') {
        if (size !== 512) fail(key, `a relation mapper file is 512 bytes, not ${size}`);
        return entry('relmapper');
      }
      if (special) {
        checkSize(key, size, OTHER_FILE_MAX_BYTES);
        return entry(special);
      }
      if (!RELATION_FILE.test(name)) fail(key, `${JSON.stringify(name)} is not a relation file name`);
      checkSize(key, size, MAX_RELATION_SEGMENT_BYTES, BLOCK_SIZE);
      return entry('relation');
    }
    case 'pg_wal': {
      if (segs.length === 3 && segs[1] === 'archive_status' && /^[0-9A-F]{24}(?:\.partial)?\.(?:ready|done)$/.test(segs[2]!)) {
        checkSize(key, size, 0);
        return entry('ignored');
      }
      if (segs.length !== 2) fail(key, 'unexpected path below pg_wal/');
      const name = segs[1]!;
      if (WAL_SEGMENT.test(name)) {
        if (size !== walSegmentSize) fail(key, `WAL segment is ${size} bytes, pg_control says segments are ${walSegmentSize}`);
        return entry('wal');
      }
      if (WAL_OTHER.test(name)) {
        checkSize(key, size, walSegmentSize);
        return entry(name.endsWith('.history') ? 'other' : 'ignored');
      }
      return fail(key, `${JSON.stringify(name)} is not a WAL file name`);
    }
    default: {
      const dir = segs.slice(0, -1).join('/');
      if (SLRU_DIRS.has(dir)) {
        if (!SLRU_SEGMENT.test(segs.at(-1)!)) fail(key, `${JSON.stringify(segs.at(-1))} is not an SLRU segment name`);
        checkSize(key, size, SLRU_SEGMENT_MAX_BYTES, BLOCK_SIZE);
        return entry('slru');
      }
      if (segs.length > 4) fail(key, 'nested too deeply');
      checkSize(key, size, OTHER_FILE_MAX_BYTES);
      return entry('other');
    }
  }
}

/** Catches a name used both as a file and as a directory (the download could not represent it). */
export function checkNoFileDirectoryClash(entries: PgdataEntry[]): void {
  const files = new Set(entries.map((e) => e.rel));
  for (const e of entries) {
    const segs = e.rel.split('/');
    for (let i = 1; i < segs.length; i++) {
      const dir = segs.slice(0, i).join('/');
      if (files.has(dir)) fail(e.key, `${dir} is both a file and a directory`);
    }
  }
}
