import { execFileSync } from 'node:child_process';
import { PostgresFailure, nonRetryable } from './errors';

/** The unprivileged account the postmaster runs as when the worker itself runs as root. */
export interface ServerUser {
  name: string;
  uid: number;
  gid: number;
}

function idOf(name: string, flag: '-u' | '-g'): number {
  return Number.parseInt(execFileSync('id', [flag, name], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 10_000 }).trim(), 10);
}

/**
 * PostgreSQL refuses to run as root ("root execution of the PostgreSQL server is not permitted").
 * A compute worker on a VM may well run as root, so then the postmaster (and initdb) run as an
 * unprivileged user, `postgres` unless told otherwise, and every file we put in PGDATA is chowned
 * to it. When the worker is not root, Postgres simply runs as the worker's user: returns undefined.
 */
export function resolveServerUser(name = 'postgres'): ServerUser | undefined {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return undefined;
  if (!/^[a-z_][a-z0-9_-]*\$?$/i.test(name)) {
    throw nonRetryable(PostgresFailure.ServerUserMissing, `not a valid user name for the PostgreSQL server: ${JSON.stringify(name)}`);
  }
  try {
    return { name, uid: idOf(name, '-u'), gid: idOf(name, '-g') };
  } catch {
    throw nonRetryable(
      PostgresFailure.ServerUserMissing,
      `the worker runs as root and PostgreSQL must not; no user ${JSON.stringify(name)} to run it as (create it, or run the worker as an unprivileged user)`,
    );
  }
}
