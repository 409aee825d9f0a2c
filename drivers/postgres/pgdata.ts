import { chmod, chown, lstat, mkdir, readdir, realpath, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { nonRetryable } from '../../common/failures';
import { PostgresFailure } from './errors';
import { readTextIfExists, writeFileAtomic } from './files';
import type { ServerUser } from './server-user';

/**
 * PGDATA lifecycle: every compute start is a fresh start (compute_ctl removes PGDATA and creates
 * it again with mode 0700), and the workflow must be able to tell a complete PGDATA from one that
 * was wiped or left half-written by a crash.
 */

/** Names the fresh start that created PGDATA (optional); inside PGDATA so a wipe removes it. */
export const INCARNATION_FILE = '.durable-compute-incarnation';

/** Written inside PGDATA once the base backup is fully unpacked; wiping PGDATA removes it too. */
export const BASEBACKUP_COMPLETE_FILE = '.durable-compute-basebackup-complete';

/**
 * compute_ctl `rm -rf`s whatever path it is given. A mistyped PGDATA (`/`, `$HOME`, a data
 * directory of another cluster) would destroy unrelated data, so we only ever wipe a directory we
 * created ourselves: on creation we leave a marker file next to it (`.<name>.durable-compute-pgdata`
 * in the parent). The marker lives outside PGDATA so that it survives the wipe itself and a crash
 * half-way through it, and so that PGDATA stays empty for initdb.
 */
export function pgdataMarkerPath(pgdata: string): string {
  const resolved = path.resolve(pgdata);
  return path.join(path.dirname(resolved), `.${path.basename(resolved)}.durable-compute-pgdata`);
}

const SYSTEM_TREES = ['/bin', '/boot', '/dev', '/etc', '/lib', '/lib32', '/lib64', '/proc', '/sbin', '/sys', '/usr'];

function isSameOrAncestor(candidate: string, of: string): boolean {
  const rel = path.relative(candidate, of);
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
}

/** Why `pgdata` must never be wiped, or undefined. Purely about the path; see `prepareFreshPgdata`. */
export function dangerousPgdataReason(pgdata: string): string | undefined {
  if (!path.isAbsolute(pgdata)) return 'PGDATA must be an absolute path';
  const resolved = path.resolve(pgdata);
  const depth = resolved.split(path.sep).filter(Boolean).length;
  if (depth < 2) return 'PGDATA must be at least two levels below / (e.g. /var/lib/compute/pgdata)';
  for (const tree of SYSTEM_TREES) {
    if (isSameOrAncestor(tree, resolved)) return `PGDATA must not be inside the system directory ${tree}`;
  }
  const home = os.homedir();
  if (home && isSameOrAncestor(resolved, home)) return 'PGDATA must not be the home directory or one of its parents';
  if (isSameOrAncestor(resolved, process.cwd())) return 'PGDATA must not be the working directory or one of its parents';
  return undefined;
}

async function lstatOrUndefined(p: string) {
  try {
    return await lstat(p);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

export interface FreshPgdataResult {
  pgdata: string;
  /** Whether an earlier PGDATA (ours) was removed. */
  wiped: boolean;
}

/**
 * Removes PGDATA (only if we created it, see `pgdataMarkerPath`) and creates it empty, mode 0700,
 * owned by the server user. Idempotent and safe to re-run after a crash at any point.
 */
export async function prepareFreshPgdata(pgdata: string, opts: { owner?: ServerUser; incarnation?: string } = {}): Promise<FreshPgdataResult> {
  const refuse = (why: string) => nonRetryable(PostgresFailure.UnsafePgdata, `refusing to wipe ${pgdata}: ${why}`);
  const pathProblem = dangerousPgdataReason(pgdata);
  if (pathProblem) throw refuse(pathProblem);
  const resolved = path.resolve(pgdata);
  await mkdir(path.dirname(resolved), { recursive: true, mode: 0o755 });
  // Judge the real location: a symlinked parent could point anywhere.
  const realResolved = path.join(await realpath(path.dirname(resolved)), path.basename(resolved));
  const realProblem = dangerousPgdataReason(realResolved);
  if (realProblem) throw refuse(`${realProblem} (it resolves to ${realResolved})`);

  const marker = pgdataMarkerPath(realResolved);
  const current = await lstatOrUndefined(realResolved);
  let wiped = false;
  if (current) {
    if (current.isSymbolicLink()) throw refuse('it is a symbolic link');
    if (!current.isDirectory()) throw refuse('it exists and is not a directory');
    const ours = (await readTextIfExists(marker)) !== undefined;
    if (!ours) {
      const entries = await readdir(realResolved);
      if (entries.length > 0) {
        throw refuse(`it is a non-empty directory that durable-compute did not create (no marker ${marker}); remove it yourself or choose another path`);
      }
    }
  }
  // Marker first: from here on a crash leaves a directory we will recognize as ours.
  await writeFileAtomic(marker, `${JSON.stringify({ pgdata: realResolved, createdBy: 'durable-compute' })}\n`, { mode: 0o644 });
  if (current) {
    await rm(realResolved, { recursive: true, force: true });
    wiped = true;
  }
  await mkdir(realResolved, { mode: 0o700 });
  // mkdir's mode is filtered by the umask; Postgres insists on exactly 0700 (or 0750).
  await chmod(realResolved, 0o700);
  if (opts.owner) await chown(realResolved, opts.owner.uid, opts.owner.gid);
  if (opts.incarnation !== undefined) {
    await writeFileAtomic(path.join(realResolved, INCARNATION_FILE), `${opts.incarnation}\n`, { mode: 0o600, owner: opts.owner });
  }
  return { pgdata: realResolved, wiped };
}

/**
 * Fails with the non-retryable PgdataLost unless PGDATA still belongs to fresh start
 * `incarnation`: a step must never run on a directory from another start, or on a replaced VM's
 * empty disk.
 */
export async function assertIncarnation(pgdata: string, incarnation: string): Promise<void> {
  const found = (await readTextIfExists(path.join(pgdata, INCARNATION_FILE)))?.trim();
  if (found === incarnation) return;
  const why = found === undefined ? 'it has no incarnation marker (wiped, or never prepared)' : `it belongs to another start (${found})`;
  throw nonRetryable(PostgresFailure.PgdataLost, `PGDATA ${pgdata} is not the one this start prepared (${incarnation}): ${why}`);
}

export interface PgdataCheck {
  intact: boolean;
  /** What is missing or wrong, for the workflow's log; empty when intact. */
  problems: string[];
  /** Contents of the base backup completion marker, when present. */
  basebackup?: Record<string, unknown>;
}

/**
 * Whether PGDATA still holds a complete base backup: PG_VERSION, a full-size global/pg_control and
 * our completion marker. A workflow resuming on a VM whose disk was wiped, or after a crash in the
 * middle of an unpack, sees `intact: false` and starts over.
 */
export async function pgdataLooksIntact(pgdata: string): Promise<PgdataCheck> {
  const problems: string[] = [];
  const dir = await lstatOrUndefined(pgdata);
  if (!dir) return { intact: false, problems: [`${pgdata} does not exist`] };
  if (!dir.isDirectory()) return { intact: false, problems: [`${pgdata} is not a directory`] };
  const version = await readTextIfExists(path.join(pgdata, 'PG_VERSION'));
  if (version === undefined) problems.push('PG_VERSION is missing');
  else if (!/^\d+\s*$/.test(version)) problems.push('PG_VERSION is not a version number');
  try {
    const control = await stat(path.join(pgdata, 'global', 'pg_control'));
    // pg_control is always written as one 8 kB block (PG_CONTROL_FILE_SIZE).
    if (control.size !== 8192) problems.push(`global/pg_control has ${control.size} bytes, not 8192`);
  } catch {
    problems.push('global/pg_control is missing');
  }
  let basebackup: Record<string, unknown> | undefined;
  const markerText = await readTextIfExists(path.join(pgdata, BASEBACKUP_COMPLETE_FILE));
  if (markerText === undefined) problems.push(`${BASEBACKUP_COMPLETE_FILE} is missing (the base backup never finished unpacking)`);
  else {
    try {
      basebackup = JSON.parse(markerText) as Record<string, unknown>;
    } catch {
      problems.push(`${BASEBACKUP_COMPLETE_FILE} is not valid JSON`);
    }
  }
  return { intact: problems.length === 0, problems, ...(basebackup && { basebackup }) };
}

/** Records that the base backup was unpacked completely (call it last, after the unpack's fsync). */
export async function markBasebackupComplete(pgdata: string, info: Record<string, string | number | boolean>, opts: { owner?: ServerUser } = {}): Promise<void> {
  await writeFileAtomic(path.join(pgdata, BASEBACKUP_COMPLETE_FILE), `${JSON.stringify({ ...info, completedAt: new Date().toISOString() })}\n`, {
    mode: 0o600,
    owner: opts.owner,
  });
}
