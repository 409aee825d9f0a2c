import { chownSync, readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { UserFacingError } from './errors';

/** The uid/gid PostgreSQL server processes run as. */
export interface PgIdentity {
  uid: number;
  gid: number;
  user: string;
}

let cached: PgIdentity | null | undefined;

/** uid and gid of a local system account, from /etc/passwd; undefined when there is no such user. */
export function systemUser(user: string): PgIdentity | undefined {
  const line = readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .find((l) => l.split(':')[0] === user);
  if (!line) return undefined;
  const fields = line.split(':');
  return { user, uid: Number(fields[2]), gid: Number(fields[3]) };
}

export function runningAsRoot(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

/**
 * PostgreSQL's server binaries (initdb, postgres, pg_ctl) refuse to run as root. When this
 * process is root (containers, CI), they run as an unprivileged system user instead: the one named
 * by DURABLE_COMPUTE_PG_USER, else Debian's `postgres`. Returns undefined when no switch is needed.
 */
export function postgresIdentity(): PgIdentity | undefined {
  if (cached !== undefined) return cached ?? undefined;
  if (!runningAsRoot()) {
    cached = null;
    return undefined;
  }
  const user = process.env.DURABLE_COMPUTE_PG_USER || 'postgres';
  const found = systemUser(user);
  if (!found) {
    throw new UserFacingError(
      `Running as root, PostgreSQL needs an unprivileged user to run as, and user ${JSON.stringify(user)} does not exist. ` +
        'Install the Debian package postgresql-15 (it creates `postgres`) or set DURABLE_COMPUTE_PG_USER.',
    );
  }
  cached = found;
  return cached;
}

/** spawn/execFile options that run a PostgreSQL server binary as the right user. */
export function pgSpawnIdentity(): { uid?: number; gid?: number } {
  const id = postgresIdentity();
  return id ? { uid: id.uid, gid: id.gid } : {};
}

/** Gives `target` (recursively) to the PostgreSQL user, so a server running as that user can use it. */
export function chownForPostgres(target: string, recursive = true): void {
  const id = postgresIdentity();
  if (!id) return;
  const visit = (p: string) => {
    chownSync(p, id.uid, id.gid);
    if (recursive && statSync(p).isDirectory()) {
      for (const entry of readdirSync(p)) visit(path.join(p, entry));
    }
  };
  visit(target);
}
