import { runningAsRoot, systemUser } from '../../common/pg-identity';
import { nonRetryable } from '../../common/failures';
import { PostgresFailure } from './errors';

/** The unprivileged account the postmaster runs as when the worker itself runs as root. */
export interface ServerUser {
  name: string;
  uid: number;
  gid: number;
}

/**
 * PostgreSQL refuses to run as root ("root execution of the PostgreSQL server is not permitted").
 * A compute worker on a VM may well run as root, so then the postmaster (and initdb) run as an
 * unprivileged user, `postgres` unless told otherwise, and every file we put in PGDATA is chowned
 * to it. When the worker is not root, Postgres simply runs as the worker's user: returns undefined.
 */
export function resolveServerUser(name = 'postgres'): ServerUser | undefined {
  if (!runningAsRoot()) return undefined;
  if (!/^[a-z_][a-z0-9_-]*\$?$/i.test(name)) {
    throw nonRetryable(PostgresFailure.ServerUserMissing, `not a valid user name for the PostgreSQL server: ${JSON.stringify(name)}`);
  }
  const found = systemUser(name);
  if (!found) {
    throw nonRetryable(
      PostgresFailure.ServerUserMissing,
      `the worker runs as root and PostgreSQL must not; no user ${JSON.stringify(name)} to run it as (create it, or run the worker as an unprivileged user)`,
    );
  }
  return { name, uid: found.uid, gid: found.gid };
}
