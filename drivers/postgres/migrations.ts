import { ident, literal } from './sql';

/**
 * compute_ctl's catalog migrations: the privileged role's grants, versioned and recorded in
 * neon_migration.migration_id (one row; `id` counts the migrations applied), so each runs exactly
 * once per database. Each migration runs in one transaction with the bump of `id`: a crash leaves
 * either both or neither. The SQL is ours, written from what each of compute_ctl's migrations does.
 */

/** What spec-apply's session offers. */
export interface MigrationSession {
  query<T extends Record<string, unknown>>(sql: string, params?: unknown[]): Promise<T[]>;
  change(sql: string, change: string): Promise<void>;
}

interface Migration {
  /** Why it exists (becomes the change description). */
  what: string;
  /** The statements, for a server of that version; undefined skips it (only `id` moves). */
  sql(role: string, serverVersionNum: number): string | undefined;
}

/** In compute_ctl's order: the position is the migration's number (1-based). */
const MIGRATIONS: readonly Migration[] = [
  { what: 'the privileged role bypasses row-level security', sql: (r) => `ALTER ROLE ${ident(r)} BYPASSRLS` },
  {
    what: 'members of the privileged role inherit its rights; other non-system roles do not bypass row-level security',
    sql: (r) => `DO $migration$
      DECLARE role_name pg_catalog.text;
      BEGIN
        FOR role_name IN SELECT m.rolname FROM pg_catalog.pg_roles m
            WHERE pg_catalog.pg_has_role(m.oid, ${literal(r)}, 'member') AND m.rolname OPERATOR(pg_catalog.<>) ${literal(r)} AND NOT m.rolsuper LOOP
          EXECUTE pg_catalog.format('ALTER ROLE %I INHERIT', role_name);
        END LOOP;
        FOR role_name IN SELECT o.rolname FROM pg_catalog.pg_roles o
            WHERE NOT pg_catalog.pg_has_role(o.oid, ${literal(r)}, 'member') AND NOT o.rolsuper AND o.rolname NOT LIKE 'pg\\_%' LOOP
          EXECUTE pg_catalog.format('ALTER ROLE %I NOBYPASSRLS', role_name);
        END LOOP;
      END $migration$`,
  },
  { what: 'the privileged role may create subscriptions (PostgreSQL 16+)', sql: (r, v) => (v >= 160000 ? `GRANT pg_create_subscription TO ${ident(r)}` : undefined) },
  { what: 'the privileged role may grant pg_monitor', sql: (r) => `GRANT pg_monitor TO ${ident(r)} WITH ADMIN OPTION` },
  // 5-9: skipped by compute_ctl (their work moved to the grants handling), kept so the numbering matches.
  { what: 'skipped (default privileges on public tables)', sql: () => undefined },
  { what: 'skipped (default privileges on public sequences)', sql: () => undefined },
  { what: 'skipped (default privileges with grant option on tables)', sql: () => undefined },
  { what: 'skipped (default privileges with grant option on sequences)', sql: () => undefined },
  { what: 'skipped (revoke replication)', sql: () => undefined },
  {
    what: 'the privileged role may export snapshots and log standby snapshots (PostgreSQL 16+)',
    sql: (r, v) =>
      v >= 160000
        ? `GRANT EXECUTE ON FUNCTION pg_catalog.pg_export_snapshot() TO ${ident(r)}; GRANT EXECUTE ON FUNCTION pg_catalog.pg_log_standby_snapshot() TO ${ident(r)}`
        : undefined,
  },
  { what: 'the privileged role may read replication origin status', sql: (r) => `GRANT EXECUTE ON FUNCTION pg_catalog.pg_show_replication_origin_status() TO ${ident(r)}` },
  { what: 'the privileged role may grant pg_signal_backend', sql: (r) => `GRANT pg_signal_backend TO ${ident(r)} WITH ADMIN OPTION` },
];

export const MIGRATION_COUNT = MIGRATIONS.length;

/** Runs the migrations not yet recorded in this database; returns how many ran. */
export async function runMigrations(session: MigrationSession, privilegedRole: string): Promise<number> {
  const [schema] = await session.query<{ present: boolean }>("SELECT pg_catalog.to_regclass('neon_migration.migration_id') IS NOT NULL AS present");
  if (!schema?.present) {
    await session.change(
      `CREATE SCHEMA IF NOT EXISTS neon_migration;
       REVOKE ALL ON SCHEMA neon_migration FROM PUBLIC;
       CREATE TABLE IF NOT EXISTS neon_migration.migration_id (key pg_catalog.int4 NOT NULL PRIMARY KEY, id pg_catalog.int8 NOT NULL DEFAULT 0);
       INSERT INTO neon_migration.migration_id VALUES (0, 0) ON CONFLICT DO NOTHING`,
      'create the migration record neon_migration.migration_id',
    );
  }
  const [row] = await session.query<{ id: string }>('SELECT id FROM neon_migration.migration_id WHERE key OPERATOR(pg_catalog.=) 0');
  const [version] = await session.query<{ v: number }>("SELECT pg_catalog.current_setting('server_version_num')::pg_catalog.int4 AS v");
  const done = Number(row?.id ?? 0);
  let ran = 0;
  for (let i = done; i < MIGRATIONS.length; i++) {
    const migration = MIGRATIONS[i]!;
    const sql = migration.sql(privilegedRole, version!.v);
    // One transaction: the migration and its record (a multi-statement simple query is atomic).
    await session.change(
      `BEGIN; ${sql ? `${sql}; ` : ''}UPDATE neon_migration.migration_id SET id = ${i + 1} WHERE key = 0; COMMIT`,
      `migration ${i + 1}: ${migration.what}`,
    );
    ran++;
  }
  return ran;
}
