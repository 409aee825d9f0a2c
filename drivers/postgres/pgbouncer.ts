import { stat } from 'node:fs/promises';
import pg from 'pg';
import { pgbouncerSettingProblem } from '../../model/compute-spec/pgbouncer-settings';
import { nonRetryable } from '../../common/failures';
import { PostgresFailure } from './errors';
import { readTextIfExists, writeFileAtomic } from './files';

/**
 * compute_ctl's tune_pgbouncer: the spec's pgbouncer_settings go into the [pgbouncer] section of
 * pgbouncer's ini (so they survive a pgbouncer restart) and pgbouncer is told to RELOAD on its
 * admin console, at start and on every configure.
 */

export interface PgbouncerTarget {
  /** pgbouncer's ini file (compute_ctl: /etc/pgbouncer.ini in VMs). */
  iniPath: string;
  /** The admin console: host (or socket directory), port, and an admin_users member. */
  host: string;
  port: number;
  user: string;
  password?: string;
}

/**
 * compute_ctl's admin connection outside a VM (localhost:6432 as postgres, PGBOUNCER_PASSWORD if
 * set), with Debian's ini path; PGBOUNCER_INI names another, PGBOUNCER_PORT another admin port.
 */
export function defaultPgbouncerTarget(env: NodeJS.ProcessEnv = process.env): PgbouncerTarget {
  const port = env.PGBOUNCER_PORT === undefined ? 6432 : Number(env.PGBOUNCER_PORT);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new RangeError(`PGBOUNCER_PORT ${JSON.stringify(env.PGBOUNCER_PORT)} is not a TCP port`);
  return {
    iniPath: env.PGBOUNCER_INI ?? '/etc/pgbouncer/pgbouncer.ini',
    host: 'localhost',
    port,
    user: 'postgres',
    ...(env.PGBOUNCER_PASSWORD !== undefined && { password: env.PGBOUNCER_PASSWORD }),
  };
}

/**
 * The ini text with `settings` set in its [pgbouncer] section: an existing line of a key is
 * replaced in place (comments and other sections are kept), a missing key is added at the end of
 * the section, and a missing section is added.
 */
export function renderPgbouncerIni(current: string, settings: Record<string, string>): string {
  for (const [name, value] of Object.entries(settings)) {
    const problem = pgbouncerSettingProblem(name, value);
    if (problem) throw nonRetryable(PostgresFailure.InvalidSpec, problem);
  }
  const lines = current.split('\n');
  if (lines.at(-1) === '') lines.pop();
  let start = lines.findIndex((l) => /^\s*\[pgbouncer\]\s*$/i.test(l));
  if (start < 0) {
    lines.push('[pgbouncer]');
    start = lines.length - 1;
  }
  let end = lines.findIndex((l, i) => i > start && /^\s*\[[^\]]+\]\s*$/.test(l));
  if (end < 0) end = lines.length;
  const pending = new Map(Object.entries(settings));
  for (let i = start + 1; i < end; i++) {
    const key = /^\s*([A-Za-z0-9_]+)\s*=/.exec(lines[i]!)?.[1]?.toLowerCase();
    if (key !== undefined && pending.has(key)) {
      lines[i] = `${key} = ${pending.get(key)!}`;
      pending.delete(key);
    }
  }
  // Added after the section's last setting, not after the blank lines before the next section.
  let insertAt = end;
  while (insertAt - 1 > start && lines[insertAt - 1]!.trim() === '') insertAt--;
  lines.splice(insertAt, 0, ...[...pending].map(([key, value]) => `${key} = ${value}`));
  return `${lines.join('\n')}\n`;
}

/** Writes the settings into the ini, then RELOADs pgbouncer (3 tries, 1 s apart, as compute_ctl). */
export async function tunePgbouncer(target: PgbouncerTarget, settings: Record<string, string>): Promise<{ changed: string[] }> {
  const current = await readTextIfExists(target.iniPath);
  // Never create one: no ini means no pgbouncer here to configure.
  if (current === undefined) throw new Error(`no pgbouncer configuration at ${target.iniPath}: is pgbouncer installed?`);
  const next = renderPgbouncerIni(current, settings);
  const changed = next === current ? [] : Object.keys(settings);
  if (changed.length > 0) {
    // Keep the file's mode and owner: pgbouncer runs as its own user and must still read it.
    const info = await stat(target.iniPath);
    await writeFileAtomic(target.iniPath, next, { mode: info.mode & 0o777, owner: { name: String(info.uid), uid: info.uid, gid: info.gid } });
  }
  let lastError: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    const client = new pg.Client({ host: target.host, port: target.port, user: target.user, password: target.password, database: 'pgbouncer' });
    client.on('error', () => undefined);
    try {
      await client.connect();
      await client.query('RELOAD');
      return { changed };
    } catch (err) {
      lastError = err;
    } finally {
      await client.end().catch(() => undefined);
    }
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
  throw new Error(`pgbouncer did not reload its configuration: ${lastError instanceof Error ? lastError.message : String(lastError)}`);
}
