import { readFileSync } from 'node:fs';
import { postgresIdentity } from './pg-identity';

/**
 * The environment of every child process we start (Postgres, initdb, pg_ctl, pg_dump, pg_restore,
 * sync-safekeepers, the WAL pusher, pg_config): built from an allow-list, never inherited whole.
 * A worker's environment holds the payload key, cloud credentials, the storage token and the
 * Temporal API key; a child needs none of them, and whatever it runs (an archive_command, an
 * extension, a core dump) must not see them. What a child does need it gets by name in `extra`.
 */

type Env = Record<string, string | undefined>;

/** Taken from the parent when set: the search path, the locale, the time zone, the temporary directory. */
const INHERITED = ['PATH', 'LANG', 'LANGUAGE', 'TZ', 'TMPDIR'];
const INHERITED_PREFIXES = ['LC_'];

/**
 * Names that hold secrets of ours, refused even in `extra`: a child that needs one of these is a
 * design error, not a configuration. Per-call secrets a tool needs travel under its own names
 * (PGPASSWORD, NEON_AUTH_TOKEN) or in a file.
 */
const SECRET_NAME = /^(DURABLE_COMPUTE_PAYLOAD_(KEY|PREVIOUS_KEYS)|AWS_|S3_|STORAGE_AUTH_TOKEN|TEMPORAL_API_KEY|TEMPORAL_TLS_)/;

export interface ChildEnvOptions {
  /** The variables this call's child needs (PGDATA, PGPASSWORD, NEON_AUTH_TOKEN, LC_ALL ...); undefined values are left out. */
  extra?: Env;
  /** The OS user the child runs as, when it is not us: its HOME, USER and LOGNAME instead of ours. */
  runAs?: { user: string; uid?: number };
}

/** HOME of `user` from /etc/passwd, so a child running as another user does not write into ours. */
function homeOf(user: string): string | undefined {
  try {
    const line = readFileSync('/etc/passwd', 'utf8')
      .split('\n')
      .find((l) => l.split(':')[0] === user);
    return line?.split(':')[5] || undefined;
  } catch {
    return undefined;
  }
}

export function childEnv(opts: ChildEnvOptions = {}, parent: Env = process.env): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [name, value] of Object.entries(parent)) {
    if (value === undefined) continue;
    if (INHERITED.includes(name) || INHERITED_PREFIXES.some((p) => name.startsWith(p))) env[name] = value;
  }
  env.PATH ??= '/usr/local/bin:/usr/bin:/bin';
  if (opts.runAs) {
    const home = homeOf(opts.runAs.user);
    if (home) env.HOME = home;
    env.USER = opts.runAs.user;
    env.LOGNAME = opts.runAs.user;
  } else {
    for (const name of ['HOME', 'USER', 'LOGNAME']) {
      const value = parent[name];
      if (value !== undefined) env[name] = value;
    }
  }
  for (const [name, value] of Object.entries(opts.extra ?? {})) {
    if (SECRET_NAME.test(name)) throw new Error(`refusing to hand ${name} to a child process: it holds a secret no child needs`);
    if (value !== undefined) env[name] = value;
  }
  return env;
}

/** childEnv for a PostgreSQL binary run as the PostgreSQL user (when we are root; see pg-identity). */
export function pgServerChildEnv(extra?: Env): Record<string, string> {
  const id = postgresIdentity();
  return childEnv({ extra, ...(id ? { runAs: { user: id.user } } : {}) });
}
