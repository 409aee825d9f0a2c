import { nonRetryable, retryable } from '../../common/failures';
import { execFile } from 'node:child_process';
import { ApplicationFailure } from '@temporalio/common';
import { maskSecrets } from '../../common/errors';
import { pgBin, type PgInstallation } from '../../common/pg-binaries';
import { splitPassword } from '../conninfo';
import { toolEnv } from './dump-restore';
import { classifyPgToolError } from './failures';

/**
 * SQL against the source and destination databases of a dump-restore import, through psql: it
 * reads a connection string exactly as pg_dump and pg_restore do (URL or key=value, every libpq
 * option), and its password travels in PGPASSWORD, never on a command line. Errors name the side
 * (source or destination) and show the connection string without its password.
 */

export type Side = 'source' | 'destination';

export interface Endpoint {
  side: Side;
  /** The connection string in clear text: keep it in memory only. */
  connstring: string;
  workdir: string;
}

/** The connection string without its password, safe to show. */
export function describeEndpoint(e: Endpoint): string {
  try {
    return maskSecrets(splitPassword(e.connstring).withoutPassword);
  } catch {
    return '(a connection string that cannot be parsed)';
  }
}

const UNREACHABLE = /connection to server .* failed|could not connect|could not translate host name|timeout expired|Connection refused|No route to host|Network is unreachable|server closed the connection unexpectedly/i;

/** A failure of `e`'s side: non-retryable when it cannot fix itself (bad address, password, missing database). */
export function endpointFailure(e: Endpoint, stderr: string, opts: { permanentIfUnreachable: boolean }): ApplicationFailure {
  const side = e.side === 'source' ? 'Source' : 'Destination';
  const shown = maskSecrets(stderr.replace(/^psql: error: /gm, '').trim()).slice(0, 2000);
  const known = classifyPgToolError(stderr);
  if (known && known !== 'MissingBinary') {
    const type = known.startsWith('Source') ? `${side}${known.slice('Source'.length)}` : known;
    return nonRetryable(type, `the ${e.side} database ${describeEndpoint(e)} refused the import: ${shown}`);
  }
  if (UNREACHABLE.test(stderr)) {
    return (opts.permanentIfUnreachable ? nonRetryable : retryable)(`${side}Unreachable`, `the ${e.side} database ${describeEndpoint(e)} is unreachable: ${shown}`);
  }
  return retryable(`${side}QueryFailed`, `a query on the ${e.side} database ${describeEndpoint(e)} failed: ${shown}`);
}

const FIELD = '\x1f';
const RECORD = '\x1e';

/** Runs `sql` on `e` and returns its rows (fields as text); throws `endpointFailure` on error. */
export async function querySide(
  install: PgInstallation,
  e: Endpoint,
  sql: string,
  opts: { signal?: AbortSignal; connectTimeoutSeconds?: number; permanentIfUnreachable?: boolean } = {},
): Promise<string[][]> {
  let split;
  try {
    split = splitPassword(e.connstring);
  } catch (err) {
    throw nonRetryable('InvalidConnectionString', `the ${e.side} connection string cannot be parsed: ${(err as Error).message}`);
  }
  const env = { ...toolEnv(e.workdir, split.password), PGCONNECT_TIMEOUT: String(opts.connectTimeoutSeconds ?? 30) };
  const args = ['--no-psqlrc', '--quiet', '--no-align', '--tuples-only', '--set', 'ON_ERROR_STOP=1', '--field-separator', FIELD, '--record-separator', RECORD, '--dbname', split.withoutPassword, '--command', sql];
  const { stdout, stderr, failed } = await new Promise<{ stdout: string; stderr: string; failed: boolean }>((resolve) => {
    execFile(pgBin(install, 'psql'), args, { env, signal: opts.signal, maxBuffer: 256 * 1024 * 1024, encoding: 'utf8' }, (err, out, errText) =>
      resolve({ stdout: out, stderr: errText || (err ? err.message : ''), failed: Boolean(err) }),
    );
  });
  if (failed) {
    if (opts.signal?.aborted) throw opts.signal.reason;
    throw endpointFailure(e, stderr, { permanentIfUnreachable: opts.permanentIfUnreachable ?? false });
  }
  const text = stdout.replace(/\n$/, '');
  if (text === '') return [];
  return text.split(RECORD).map((r) => r.replace(/^\n/, '').split(FIELD));
}

/** The quoted identifier of a name, as PostgreSQL's quote_ident would always quote it. */
export function quoteIdent(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

/**
 * Relations pg_dump would dump (tables, views, materialized views, sequences, foreign tables) in
 * user schemas, not members of an extension: schema and name of each.
 */
export const USER_RELATIONS_SQL = `
  SELECT n.nspname, c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
    AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%'
    AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
  ORDER BY 1, 2`;

export async function userRelations(install: PgInstallation, e: Endpoint, opts: { signal?: AbortSignal; permanentIfUnreachable?: boolean } = {}): Promise<{ schema: string; name: string }[]> {
  const rows = await querySide(install, e, USER_RELATIONS_SQL, { ...opts, connectTimeoutSeconds: 15 });
  return rows.map(([schema, name]) => ({ schema: schema!, name: name! }));
}
