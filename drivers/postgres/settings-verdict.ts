import path from 'node:path';
import type pg from 'pg';

/**
 * What Postgres makes of its configuration files on a reload. A reload never fails: a value it
 * cannot use is only logged, and the old value stays in force. pg_file_settings (a fresh parse of
 * the files: `error` and `applied` per line) and pg_settings tell the cases apart:
 *
 * - `applied = false` without an error: a line overridden by a later one for the same name;
 * - an `error` on a parameter that can change at run time, an unknown one, or a syntax error:
 *   rejected (a bad value, a typo);
 * - an `error` on a server-start (postmaster) parameter: either a valid new value that waits for
 *   a restart (the postmaster marks it pending_restart once it processed the reload) or a bad one.
 */
export interface FileSettingError {
  name: string | null;
  error: string;
  /** The file and line, for the message. */
  where: string;
  /** pg_settings.context; null for an unknown parameter or a syntax error. */
  context: string | null;
}

export async function fileSettingErrors(client: pg.Client): Promise<FileSettingError[]> {
  const { rows } = await client.query<{ sourcefile: string | null; sourceline: number | null; name: string | null; error: string; context: string | null }>(
    `SELECT f.sourcefile, f.sourceline, f.name, f.error, s.context
       FROM pg_file_settings f LEFT JOIN pg_settings s ON s.name = f.name
      WHERE f.error IS NOT NULL ORDER BY f.seqno`,
  );
  return rows.map((r) => ({ name: r.name, error: r.error, context: r.context, where: `${r.sourcefile ? path.basename(r.sourcefile) : 'configuration'} line ${r.sourceline ?? '?'}` }));
}

/** Parameters whose new value waits for a restart; a backend started after the reload sees them. */
export async function pendingRestartSettings(client: pg.Client): Promise<string[]> {
  return (await client.query<{ name: string }>('SELECT name FROM pg_settings WHERE pending_restart ORDER BY name')).rows.map((r) => r.name);
}

/** When the configuration was last loaded without a fatal error (a new backend has the postmaster's time). */
export async function confLoadTime(client: pg.Client): Promise<string> {
  return (await client.query<{ t: string }>('SELECT pg_conf_load_time()::text AS t')).rows[0]!.t;
}

/** Splits the errors into rejected lines and settings pending a restart, given what the postmaster marked pending. */
export function settingsVerdict(errors: FileSettingError[], pending: Set<string>): { rejected: FileSettingError[]; pendingRestart: string[] } {
  const waits = (e: FileSettingError) => e.context === 'postmaster' && e.name !== null && pending.has(e.name);
  return { rejected: errors.filter((e) => !waits(e)), pendingRestart: [...new Set(errors.filter(waits).map((e) => e.name!))].sort() };
}

/** "work_mem: setting could not be applied (postgresql.conf line 40)", values left out (they may hold secrets). */
export function describeRejected(rejected: FileSettingError[]): string {
  return rejected.map((r) => `${r.name ?? 'a line'}: ${r.error} (${r.where})`).join('; ');
}
