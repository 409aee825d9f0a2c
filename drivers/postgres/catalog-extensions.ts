import { nonRetryable } from '../../common/failures';
import { PostgresFailure } from './errors';
import { ident, literal } from './sql';

/**
 * The extensions compute_ctl installs in the system database as the last phases of applying a
 * spec, each read from the catalog first so a second run changes nothing:
 * - the `neon` extension (Neon backend only: only Neon's Postgres has it), in schema `neon`, at
 *   its default version, moved there (made relocatable first, as compute_ctl's compat fix does)
 *   if an old install left it elsewhere;
 * - `pgaudit`, when the spec's audit_log_level turns it on, with auditing off in the system
 *   database itself (audit.ts).
 */

/** What these phases need of the apply's session: catalog reads, and changes that are recorded. */
export interface CatalogSession {
  query<T extends Record<string, unknown>>(sql: string, params?: unknown[], what?: string): Promise<T[]>;
  change(sql: string, change: string): Promise<void>;
}

interface InstalledExtension extends Record<string, unknown> {
  version: string;
  schema: string;
  relocatable: boolean;
}

async function installed(session: CatalogSession, name: string): Promise<InstalledExtension | undefined> {
  const rows = await session.query<InstalledExtension>(
    `SELECT e.extversion AS version, n.nspname AS schema, e.extrelocatable AS relocatable
       FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) e.extnamespace
      WHERE e.extname OPERATOR(pg_catalog.=) $1`,
    [name],
  );
  return rows[0];
}

async function defaultVersion(session: CatalogSession, name: string): Promise<string | undefined> {
  const rows = await session.query<{ version: string | null }>('SELECT default_version AS version FROM pg_catalog.pg_available_extensions WHERE name OPERATOR(pg_catalog.=) $1', [name]);
  return rows[0]?.version ?? undefined;
}

/**
 * compute_ctl's HandleNeonExtension: `neon` installed in schema `neon` (which the apply created
 * before) at its default version. `name` is `neon` in the product; tests run the same statements
 * on a stock contrib extension standing in for it, since only Neon's Postgres ships `neon`.
 */
export async function handleNeonExtension(session: CatalogSession, name = 'neon'): Promise<void> {
  const target = await defaultVersion(session, name);
  if (target === undefined) {
    throw nonRetryable(
      PostgresFailure.SpecApplyFailed,
      `the ${name} extension is not installed in this compute's PostgreSQL (no ${name}.control): the Neon storage backend needs Neon's Postgres`,
    );
  }
  const current = await installed(session, name);
  if (!current) {
    await session.change(`CREATE EXTENSION IF NOT EXISTS ${ident(name)} WITH SCHEMA neon`, `create extension ${ident(name)} in schema neon`);
    return;
  }
  if (current.schema !== 'neon') {
    // Old installs of neon were not relocatable; compute_ctl flips the flag so SET SCHEMA is allowed.
    if (!current.relocatable) {
      await session.change(
        `UPDATE pg_catalog.pg_extension SET extrelocatable = true WHERE extname OPERATOR(pg_catalog.=) ${literal(name)}`,
        `make extension ${ident(name)} relocatable`,
      );
    }
    await session.change(`ALTER EXTENSION ${ident(name)} SET SCHEMA neon`, `move extension ${ident(name)} from schema ${ident(current.schema)} to neon`);
  }
  if (current.version !== target) {
    await session.change(`ALTER EXTENSION ${ident(name)} UPDATE`, `update extension ${ident(name)} from ${current.version} to ${target}`);
  }
}

/**
 * compute_ctl's CreatePgauditExtension and DisablePostgresDBPgAudit: `pgaudit` created in the
 * system database, whose own statements are not audited.
 */
export async function handleAuditExtension(session: CatalogSession, systemDatabase: string): Promise<void> {
  if (!(await installed(session, 'pgaudit'))) await session.change('CREATE EXTENSION IF NOT EXISTS pgaudit', 'create extension pgaudit');
  const rows = await session.query<{ config: string[] | null }>(
    `SELECT s.setconfig AS config FROM pg_catalog.pg_db_role_setting s JOIN pg_catalog.pg_database d ON d.oid OPERATOR(pg_catalog.=) s.setdatabase
      WHERE d.datname OPERATOR(pg_catalog.=) $1 AND s.setrole OPERATOR(pg_catalog.=) 0`,
    [systemDatabase],
  );
  if (!(rows[0]?.config ?? []).includes('pgaudit.log=none')) {
    await session.change(`ALTER DATABASE ${ident(systemDatabase)} SET pgaudit.log TO 'none'`, `turn pgaudit off in database ${ident(systemDatabase)}`);
  }
}
