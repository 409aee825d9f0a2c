import { randomBytes } from 'node:crypto';
import { chmod, mkdir, readdir, rename, rm, rmdir, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { S3Client } from '@aws-sdk/client-s3';
import { chownForPostgres } from '../../../common/pg-identity';
import { getObjectBytes, listObjects } from '../../../drivers';
import { DownloadError, downloadObjects } from './download';
import { checkNoFileDirectoryClash, classifyEntry, PgdataLayoutError, SKELETON_DIRS, type PgdataEntry } from './layout';
import { parsePgControl, PgControlError, walSegmentName } from '../pg-control';

/**
 * The dev pageserver's side of `import_pgdata`: checks an uploaded data directory under
 * `<prefix>/pgdata/` and downloads it into `targetDir`, from which PostgreSQL 15 can start.
 *
 * The real pageserver turns the files into a timeline's key ranges; the dev stand-in serves
 * basebackups from a data directory, so it needs the directory itself. Everything in the bucket
 * is untrusted: the commit marker must say done, pg_control must pass its CRC and name a known
 * catalog version, and every object name and size must be what Postgres writes. The directory
 * appears at `targetDir` only once complete (it is assembled in a sibling and renamed).
 */

export interface ImportPgdataOptions {
  s3: S3Client;
  bucket: string;
  /** The import's prefix (the location's `key`), without a trailing slash. */
  prefix: string;
  targetDir: string;
  /** Refuse directories larger than this (default 64 GiB). */
  maxTotalBytes?: number;
  /** Refuse directories with more objects than this (default 1,000,000). */
  maxFiles?: number;
  concurrency?: number;
  signal?: AbortSignal;
}

export interface ImportPgdataResult {
  pgVersion: number;
  /** The checkpoint LSN from pg_control (X/Y): where the imported timeline starts. */
  checkpointLsn: string;
  systemIdentifier: string;
  files: number;
  bytes: number;
  /** Objects present but not needed to start (temporary files, WAL archive status). */
  ignored: number;
}

export class PgdataImportError extends Error {
  override name = 'PgdataImportError';
  constructor(
    message: string,
    readonly key?: string,
  ) {
    super(message);
  }
}

const DEFAULT_MAX_TOTAL_BYTES = 64 * 1024 ** 3;
const DEFAULT_MAX_FILES = 1_000_000;

async function readStatusDone(s3: S3Client, bucket: string, key: string): Promise<void> {
  const bytes = await getObjectBytes(s3, bucket, key, 64 * 1024).catch((err: Error) => {
    throw new PgdataImportError(`Cannot read the commit marker ${key}: ${err.message}`, key);
  });
  if (!bytes) throw new PgdataImportError(`The import is not finished: the commit marker ${key} does not exist`, key);
  let status: unknown;
  try {
    status = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw new PgdataImportError(`The commit marker ${key} is not JSON`, key);
  }
  if (typeof status !== 'object' || status === null || (status as { done?: unknown }).done !== true) {
    throw new PgdataImportError(`The import is not finished: ${key} does not say {"done":true}`, key);
  }
}

function localPath(root: string, rel: string): string {
  const full = path.resolve(root, ...rel.split('/'));
  // checkRelativePath already excludes every way out; this is the belt to its braces.
  if (!full.startsWith(root + path.sep)) throw new PgdataImportError(`Object path ${JSON.stringify(rel)} resolves outside the target directory`);
  return full;
}

async function assertTargetUsable(targetDir: string): Promise<void> {
  try {
    const st = await stat(targetDir);
    if (!st.isDirectory()) throw new PgdataImportError(`The target ${targetDir} exists and is not a directory`);
    if ((await readdir(targetDir)).length > 0) throw new PgdataImportError(`The target directory ${targetDir} is not empty`);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}

export async function importPgdataFromS3(opts: ImportPgdataOptions): Promise<ImportPgdataResult> {
  const { s3, bucket } = opts;
  const prefix = opts.prefix.replace(/\/+$/, '');
  const pgdataPrefix = `${prefix}/pgdata/`;
  const maxTotalBytes = opts.maxTotalBytes ?? DEFAULT_MAX_TOTAL_BYTES;
  const maxFiles = opts.maxFiles ?? DEFAULT_MAX_FILES;
  const targetDir = path.resolve(opts.targetDir);
  await assertTargetUsable(targetDir);

  await readStatusDone(s3, bucket, `${prefix}/status/pgdata`);

  const controlKey = `${pgdataPrefix}global/pg_control`;
  const controlBytes = await getObjectBytes(s3, bucket, controlKey, 64 * 1024).catch((err: Error) => {
    throw new PgdataImportError(`Cannot read ${controlKey}: ${err.message}`, controlKey);
  });
  if (!controlBytes) throw new PgdataImportError(`The upload has no ${controlKey}`, controlKey);
  let control;
  try {
    control = parsePgControl(controlBytes);
  } catch (err) {
    if (err instanceof PgControlError) throw new PgdataImportError(`${controlKey}: ${err.message}`, controlKey);
    throw err;
  }

  // Validate the whole listing before a single byte is written.
  const entries: PgdataEntry[] = [];
  const etags = new Map<string, string>();
  let totalBytes = 0;
  for await (const o of listObjects(s3, bucket, pgdataPrefix, opts.signal)) {
    if (!o.key.startsWith(pgdataPrefix)) throw new PgdataImportError(`Listing returned ${JSON.stringify(o.key)}, outside ${pgdataPrefix}`, o.key);
    let entry: PgdataEntry;
    try {
      entry = classifyEntry(o.key, o.key.slice(pgdataPrefix.length), o.size, control.walSegmentSize);
    } catch (err) {
      if (err instanceof PgdataLayoutError) throw new PgdataImportError(err.message, err.key);
      throw err;
    }
    entries.push(entry);
    etags.set(o.key, o.etag);
    totalBytes += o.size;
    if (entries.length > maxFiles) throw new PgdataImportError(`The upload under ${pgdataPrefix} has more than ${maxFiles} objects`, o.key);
    if (totalBytes > maxTotalBytes) throw new PgdataImportError(`The upload under ${pgdataPrefix} exceeds the ${maxTotalBytes}-byte limit (at ${o.key})`, o.key);
  }
  try {
    checkNoFileDirectoryClash(entries);
  } catch (err) {
    if (err instanceof PgdataLayoutError) throw new PgdataImportError(err.message, err.key);
    throw err;
  }
  const byRel = new Map(entries.map((e) => [e.rel, e]));
  for (const required of ['PG_VERSION', 'global/pg_filenode.map']) {
    if (!byRel.has(required)) throw new PgdataImportError(`The upload lacks ${pgdataPrefix}${required}`, `${pgdataPrefix}${required}`);
  }
  const checkpointSegment = `pg_wal/${walSegmentName(control.timeline, control.checkpointLsnValue, control.walSegmentSize)}`;
  if (!byRel.has(checkpointSegment)) {
    throw new PgdataImportError(`The upload lacks ${pgdataPrefix}${checkpointSegment}, the WAL segment holding the checkpoint at ${control.checkpointLsn}`, `${pgdataPrefix}${checkpointSegment}`);
  }
  const versionBytes = await getObjectBytes(s3, bucket, `${pgdataPrefix}PG_VERSION`, 16);
  if (versionBytes?.toString('utf8').trim() !== String(control.pgMajor)) {
    throw new PgdataImportError(`${pgdataPrefix}PG_VERSION does not say ${control.pgMajor}, as pg_control's catalog version does`, `${pgdataPrefix}PG_VERSION`);
  }

  const staging = path.join(path.dirname(targetDir), `.${path.basename(targetDir)}.partial-${randomBytes(6).toString('hex')}`);
  await mkdir(staging, { recursive: false, mode: 0o700 });
  try {
    for (const dir of SKELETON_DIRS) await mkdir(path.join(staging, dir), { recursive: true, mode: 0o700 });
    const toFetch = entries.filter((e) => e.kind !== 'ignored');
    const controlEntry = toFetch.find((e) => e.kind === 'control');
    if (controlEntry) {
      // The bytes that passed the checks, not a second read that could differ.
      const dest = localPath(staging, controlEntry.rel);
      await mkdir(path.dirname(dest), { recursive: true, mode: 0o700 });
      await writeFile(dest, controlBytes, { mode: 0o600, flag: 'wx' });
    }
    try {
      await downloadObjects(
        s3,
        bucket,
        // Each with the ETag the validated listing gave: no object may change between the check and the download.
        toFetch.filter((e) => e.kind !== 'control').map((e) => ({ key: e.key, size: e.size, dest: localPath(staging, e.rel), etag: etags.get(e.key) || undefined })),
        { concurrency: opts.concurrency ?? 8, signal: opts.signal },
      );
    } catch (err) {
      if (err instanceof DownloadError) throw new PgdataImportError(err.message, err.key);
      throw err;
    }
    const files = toFetch.length;
    const bytes = toFetch.reduce((n, e) => n + e.size, 0);

    await chmod(staging, 0o700);
    chownForPostgres(staging);
    try {
      await rmdir(targetDir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    await rename(staging, targetDir);
    return {
      pgVersion: control.pgMajor,
      checkpointLsn: control.checkpointLsn,
      systemIdentifier: control.systemIdentifier.toString(),
      files,
      bytes,
      ignored: entries.length - toFetch.length,
    };
  } catch (err) {
    await rm(staging, { recursive: true, force: true });
    throw err;
  }
}
