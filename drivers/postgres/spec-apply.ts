import type pg from 'pg';
import pLimit from 'p-limit';
import { findSetting, type ComputeSpec } from '../../model/compute-spec';
import { databasePrivileges, listDatabases, listRoles } from './catalog';
import { nonRetryable, retryable } from '../../common/failures';
import { PostgresFailure } from './errors';
import { databaseOptionsSql, ident, roleLoginSql } from './sql';
import { runMigrations } from './migrations';
import { auditEnabled } from './audit';
import { handleAuditExtension, handleNeonExtension } from './catalog-extensions';
import { databasesWithSubscriptions, dropDatabaseSubscriptions, recordSubscriptionsDropped, subscriptionsDropDone } from './subscriptions';

/**
 * Applies the spec's roles and databases to a running Primary in compute_ctl's phases. Each phase
 * first reads the catalog and only issues the statements that change something, so:
 * - it is idempotent: a second run returns no changes;
 * - it is safe to re-run after a crash half-way (the catalog, not a journal, says what is done);
 * - the returned list says exactly what changed (descriptions never contain password hashes).
 * Statements run one by one in autocommit (CREATE/DROP DATABASE cannot run in a transaction).
 */

export interface ApplySpecOptions {
  /** A connected client on `database`, as the admin superuser; applySpec closes it. */
  connect: (database: string) => Promise<pg.Client>;
  /** The superuser we connect as (compute_ctl's cloud_admin): owner of last resort. */
  adminUser: string;
  /** compute_ctl's --privileged-role-name. */
  privilegedRoleName?: string;
  /** The database compute_ctl treats as the system database. */
  systemDatabase?: string;
  /** Called at the start of each phase (the activity heartbeats here). */
  onPhase?: (phase: string) => void;
  /** Called as the per-database phase starts on a database (at most reconfigure_concurrency at once). */
  onDatabase?: (database: string) => void;
  /** Extra per-database work, run on that database's connection inside the bounded pool (tests observe the overlap with it). */
  perDatabase?: (client: pg.Client, database: string) => Promise<void>;
  /** Install and update the `neon` extension (compute_ctl's HandleNeonExtension): only Neon's Postgres has it. */
  neonExtension?: boolean;
}

/** SQLSTATE classes that mean "try again later", not "this spec is wrong". */
const TRANSIENT_SQLSTATE_CLASSES = ['08', '40', '53', '57', '58'];

function failure(what: string, err: unknown): Error {
  const code = (err as { code?: unknown }).code;
  const message = err instanceof Error ? err.message : String(err);
  if (typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code)) {
    const text = `${what}: ${message} (SQLSTATE ${code})`;
    return TRANSIENT_SQLSTATE_CLASSES.includes(code.slice(0, 2))
      ? retryable(PostgresFailure.SpecApplyFailed, text)
      : nonRetryable(PostgresFailure.SpecApplyFailed, text);
  }
  // Not an SQL error: the connection broke, the server went away. Worth another attempt.
  return retryable(PostgresFailure.SpecApplyFailed, `${what}: ${message}`);
}

class Session {
  private constructor(
    readonly database: string,
    private readonly client: pg.Client,
    private readonly changes: string[],
  ) {}

  static async open(connect: ApplySpecOptions['connect'], database: string, changes: string[]): Promise<Session> {
    let client: pg.Client;
    try {
      client = await connect(database);
    } catch (err) {
      throw failure(`connecting to database ${ident(database)}`, err);
    }
    client.on('error', () => undefined); // a dropped connection surfaces as a failed query instead
    // Statements carry password hashes: keep them out of the server log, even when they fail.
    // One round trip; if one is refused (a non-superuser admin), each is tried on its own.
    const settings = ["SET log_statement = 'none'", "SET log_min_error_statement = 'panic'", "SET application_name = 'compute_ctl:apply_config'"];
    const together = await client.query(settings.join('; ')).then(() => true, () => false);
    if (!together) {
      for (const setting of settings) await client.query(setting).catch(() => undefined);
    }
    return new Session(database, client, changes);
  }

  async query<T extends pg.QueryResultRow>(sql: string, params: unknown[] = [], what = 'reading the catalog'): Promise<T[]> {
    try {
      return (await this.client.query<T>(sql, params)).rows;
    } catch (err) {
      throw failure(what, err);
    }
  }

  /** Runs a changing statement and records `change` (which must not contain secrets). */
  async change(sql: string, change: string): Promise<void> {
    try {
      await this.client.query(sql);
    } catch (err) {
      throw failure(change, err);
    }
    this.changes.push(change);
  }

  raw(): pg.Client {
    return this.client;
  }

  async close(): Promise<void> {
    await this.client.end().catch(() => undefined);
  }
}

export async function applySpec(spec: ComputeSpec, opts: ApplySpecOptions): Promise<string[]> {
  const changes: string[] = [];
  const privileged = opts.privilegedRoleName ?? 'neon_superuser';
  const systemDb = opts.systemDatabase ?? 'postgres';
  const deltas = spec.delta_operations ?? [];
  const rolesToDrop = deltas.filter((d) => d.action === 'delete_role').map((d) => d.name);
  const phase = (name: string) => opts.onPhase?.(name);

  const admin = await Session.open(opts.connect, systemDb, changes);
  try {
    phase('drop subscriptions of databases to delete');
    await dropSubscriptionsOfDeletedDatabases(admin, spec, opts, changes);

    phase('create privileged role');
    const roles = await listRoles(admin.raw());
    if (!roles.has(privileged)) {
      await admin.change(
        `CREATE ROLE ${ident(privileged)} CREATEDB CREATEROLE NOLOGIN REPLICATION BYPASSRLS IN ROLE pg_read_all_data, pg_write_all_data`,
        `create privileged role ${ident(privileged)}`,
      );
    }

    phase('drop invalid databases');
    for (const db of (await listDatabases(admin.raw())).values()) {
      if (db.invalid) await admin.change(`DROP DATABASE IF EXISTS ${ident(db.name)}`, `drop invalid database ${ident(db.name)}`);
    }

    phase('rename roles');
    await renameRoles(admin, spec);

    phase('create and alter roles');
    await createAndAlterRoles(admin, spec, privileged);

    phase('rename and delete databases');
    await renameAndDeleteDatabases(admin, spec);

    phase('create and alter databases');
    await createAndAlterDatabases(admin, spec, privileged);

    phase('create schema neon');
    const neonSchema = await admin.query("SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname OPERATOR(pg_catalog.=) 'neon'");
    if (neonSchema.length === 0) await admin.change('CREATE SCHEMA IF NOT EXISTS neon', 'create schema neon');

    // drop_subscriptions_before_start: once per timeline, recorded in neon.drop_subscriptions_done.
    const dropSubscriptionsIn = spec.drop_subscriptions_before_start && !(await subscriptionsDropDone(admin, spec.timeline_id))
      ? await databasesWithSubscriptions(admin)
      : undefined;

    phase('per-database cleanup and schema ownership');
    await runInEachDatabase(admin, spec, opts, privileged, rolesToDrop, changes, dropSubscriptionsIn);
    if (dropSubscriptionsIn) {
      phase('record dropped subscriptions');
      await recordSubscriptionsDropped(admin, spec.timeline_id);
    }

    phase('extensions');
    await createSystemExtensions(admin, spec);
    if (opts.neonExtension) {
      phase('neon extension');
      await handleNeonExtension(admin);
    }

    phase('availability check table');
    const healthCheck = await admin.query("SELECT 1 FROM pg_catalog.pg_tables WHERE schemaname = 'public' AND tablename = 'health_check'");
    if (healthCheck.length === 0) {
      await admin.change(
        `CREATE TABLE IF NOT EXISTS public.health_check (
           id pg_catalog.int4 PRIMARY KEY GENERATED BY DEFAULT AS IDENTITY,
           updated_at pg_catalog.timestamptz DEFAULT pg_catalog.now());
         INSERT INTO public.health_check VALUES (1, pg_catalog.now())
           ON CONFLICT (id) DO UPDATE SET updated_at = pg_catalog.now()`,
        'create table public.health_check',
      );
    }

    phase('migrations');
    await runMigrations(admin, privileged);

    phase('drop roles');
    const rolesNow = await listRoles(admin.raw());
    for (const name of rolesToDrop) {
      if (rolesNow.has(name)) await admin.change(`DROP ROLE IF EXISTS ${ident(name)}`, `drop role ${ident(name)}`);
    }

    // Last, as compute_ctl: everything above is then audited from the next apply on.
    if (auditEnabled(spec)) {
      phase('pgaudit');
      await handleAuditExtension(admin, systemDb);
    }
  } finally {
    await admin.close();
  }
  return changes;
}

async function renameRoles(admin: Session, spec: ComputeSpec): Promise<void> {
  for (const op of spec.delta_operations ?? []) {
    if (op.action !== 'rename_role' || op.new_name === undefined) continue;
    const roles = await listRoles(admin.raw());
    if (!roles.has(op.name)) continue; // already renamed (a re-run), or never existed
    if (roles.has(op.new_name)) {
      throw nonRetryable(PostgresFailure.SpecApplyFailed, `cannot rename role ${ident(op.name)} to ${ident(op.new_name)}: that role already exists`);
    }
    // PostgreSQL clears an md5 password on rename (the hash is salted with the name); the
    // create-and-alter phase then sets the spec's password again.
    await admin.change(`ALTER ROLE ${ident(op.name)} RENAME TO ${ident(op.new_name)}`, `rename role ${ident(op.name)} to ${ident(op.new_name)}`);
  }
}

async function createAndAlterRoles(admin: Session, spec: ComputeSpec, privileged: string): Promise<void> {
  const roles = await listRoles(admin.raw());
  for (const role of spec.cluster.roles) {
    const existing = roles.get(role.name);
    if (!existing) {
      await admin.change(
        `CREATE ROLE ${ident(role.name)} INHERIT CREATEROLE CREATEDB BYPASSRLS REPLICATION IN ROLE ${ident(privileged)} ${roleLoginSql(role)}`,
        `create role ${ident(role.name)}`,
      );
    } else if ((existing.password ?? undefined) !== role.encrypted_password) {
      // As compute_ctl: only a password change alters an existing role (LOGIN plus the password).
      await admin.change(`ALTER ROLE ${ident(role.name)} ${roleLoginSql(role)}`, `set password of role ${ident(role.name)}`);
    }
  }
}

async function renameAndDeleteDatabases(admin: Session, spec: ComputeSpec): Promise<void> {
  for (const op of spec.delta_operations ?? []) {
    if (op.action === 'delete_db') {
      const db = (await listDatabases(admin.raw())).get(op.name);
      if (!db) continue;
      // A template database cannot be dropped.
      if (db.isTemplate) await admin.change(`ALTER DATABASE ${ident(op.name)} IS_TEMPLATE false`, `unset template flag of database ${ident(op.name)}`);
      await admin.change(`DROP DATABASE IF EXISTS ${ident(op.name)} WITH (FORCE)`, `drop database ${ident(op.name)}`);
    } else if (op.action === 'rename_db' && op.new_name !== undefined) {
      const dbs = await listDatabases(admin.raw());
      if (!dbs.has(op.name)) continue;
      if (dbs.has(op.new_name)) {
        throw nonRetryable(PostgresFailure.SpecApplyFailed, `cannot rename database ${ident(op.name)} to ${ident(op.new_name)}: that database already exists`);
      }
      await admin.change(`ALTER DATABASE ${ident(op.name)} RENAME TO ${ident(op.new_name)}`, `rename database ${ident(op.name)} to ${ident(op.new_name)}`);
    }
  }
}

async function createAndAlterDatabases(admin: Session, spec: ComputeSpec, privileged: string): Promise<void> {
  const dbs = await listDatabases(admin.raw());
  for (const db of spec.cluster.databases) {
    const existing = dbs.get(db.name);
    if (!existing) {
      const options = databaseOptionsSql(db.options);
      await admin.change(`CREATE DATABASE ${ident(db.name)} ${options} OWNER ${ident(db.owner)}`, `create database ${ident(db.name)} owned by ${ident(db.owner)}`);
    } else if (existing.owner !== db.owner) {
      await admin.change(`ALTER DATABASE ${ident(db.name)} OWNER TO ${ident(db.owner)}`, `change owner of database ${ident(db.name)} to ${ident(db.owner)}`);
    }
    // compute_ctl grants right after CREATE DATABASE; checking the ACL instead also repairs a
    // crash between the two statements.
    const privileges = await databasePrivileges(admin.raw(), db.name, privileged);
    if (!['CREATE', 'CONNECT', 'TEMPORARY'].every((p) => privileges.has(p))) {
      await admin.change(`GRANT ALL PRIVILEGES ON DATABASE ${ident(db.name)} TO ${ident(privileged)}`, `grant all on database ${ident(db.name)} to ${ident(privileged)}`);
    }
  }
}

async function dropSubscriptionsOfDeletedDatabases(admin: Session, spec: ComputeSpec, opts: ApplySpecOptions, changes: string[]): Promise<void> {
  const toDelete = (spec.delta_operations ?? []).filter((d) => d.action === 'delete_db').map((d) => d.name);
  if (toDelete.length === 0) return;
  const dbs = await listDatabases(admin.raw());
  for (const name of toDelete) {
    const db = dbs.get(name);
    if (!db || !db.allowConnections || db.invalid) continue;
    const subs = await admin.query<{ subname: string }>(
      'SELECT subname FROM pg_catalog.pg_subscription WHERE subdbid = (SELECT oid FROM pg_catalog.pg_database WHERE datname = $1)',
      [name],
    );
    if (subs.length === 0) continue;
    // A subscription must be dropped from inside its database, detached from its remote slot.
    const session = await Session.open(opts.connect, name, changes);
    try {
      for (const { subname } of subs) {
        await session.change(`ALTER SUBSCRIPTION ${ident(subname)} DISABLE`, `disable subscription ${ident(subname)} in database ${ident(name)}`);
        await session.change(`ALTER SUBSCRIPTION ${ident(subname)} SET (slot_name = NONE)`, `detach subscription ${ident(subname)} from its slot`);
        await session.change(`DROP SUBSCRIPTION ${ident(subname)}`, `drop subscription ${ident(subname)} in database ${ident(name)}`);
      }
    } finally {
      await session.close();
    }
  }
}

/**
 * compute_ctl's RunInEachDatabase: objects of roles about to be dropped are reassigned to the
 * database owner and their privileges dropped (in every database they could own objects in), and
 * in each spec database the public schema goes to the database owner if the admin still owns it,
 * with default privileges for the privileged role.
 */
async function runInEachDatabase(
  admin: Session,
  spec: ComputeSpec,
  opts: ApplySpecOptions,
  privileged: string,
  rolesToDrop: string[],
  changes: string[],
  dropSubscriptionsIn: Set<string> = new Set(),
): Promise<void> {
  const roles = await listRoles(admin.raw());
  const dropping = rolesToDrop.filter((r) => roles.has(r));
  const dbs = await listDatabases(admin.raw());
  const specDbs = new Set(spec.cluster.databases.map((d) => d.name));
  const systemDb = opts.systemDatabase ?? 'postgres';
  const targets = [...dbs.values()].filter((db) => db.allowConnections && !db.invalid && (dropping.length > 0 || specDbs.has(db.name) || dropSubscriptionsIn.has(db.name)),
  );
  // compute_ctl's reconfigure_concurrency: that many databases at once, each on its own connection.
  // Each database's changes are kept apart and joined in catalog order, so the report is the same
  // whatever the concurrency.
  const limit = pLimit(Math.max(1, spec.reconfigure_concurrency ?? 1));
  const perDatabase = await Promise.all(
    targets.map((db) =>
      limit(async () => {
        const dbChanges: string[] = [];
        const session = await Session.open(opts.connect, db.name, dbChanges);
        try {
          opts.onDatabase?.(db.name);
          if (dropSubscriptionsIn.has(db.name)) await dropDatabaseSubscriptions(session, db.name);
          for (const role of dropping) {
            const newOwner = db.name === systemDb || db.owner === role ? opts.adminUser : db.owner;
            const where = `in database ${ident(db.name)}`;
            await session.change(`REASSIGN OWNED BY ${ident(role)} TO ${ident(newOwner)}`, `reassign objects of role ${ident(role)} to ${ident(newOwner)} ${where}`);
            await session.change(`DROP OWNED BY ${ident(role)}`, `drop privileges of role ${ident(role)} ${where}`);
          }
          if (specDbs.has(db.name)) await fixPublicSchema(session, db.name, db.owner, opts.adminUser, privileged);
          await opts.perDatabase?.(session.raw(), db.name);
        } finally {
          await session.close();
        }
        return dbChanges;
      }),
    ),
  );
  for (const dbChanges of perDatabase) changes.push(...dbChanges);
}

async function fixPublicSchema(session: Session, dbName: string, dbOwner: string, adminUser: string, privileged: string): Promise<void> {
  const [schema] = await session.query<{ owner: string }>(
    "SELECT r.rolname AS owner FROM pg_catalog.pg_namespace n JOIN pg_catalog.pg_roles r ON r.oid = n.nspowner WHERE n.nspname = 'public'",
  );
  if (!schema) return;
  if (schema.owner === adminUser && dbOwner !== adminUser) {
    await session.change(`ALTER SCHEMA public OWNER TO ${ident(dbOwner)}`, `give schema public of database ${ident(dbName)} to ${ident(dbOwner)}`);
  }
  // Tables and sequences the admin creates in public are fully usable by the privileged role.
  for (const [objtype, all, what] of [
    ['r', ['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER'], 'TABLES'],
    ['S', ['SELECT', 'UPDATE', 'USAGE'], 'SEQUENCES'],
  ] as const) {
    const granted = await session.query<{ privilege_type: string }>(
      `SELECT a.privilege_type
         FROM pg_catalog.pg_default_acl d, pg_catalog.aclexplode(d.defaclacl) a
        WHERE d.defaclrole = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = current_user)
          AND d.defaclnamespace = 'public'::pg_catalog.regnamespace
          AND d.defaclobjtype = $1
          AND a.grantee = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = $2)
          AND a.is_grantable`,
      [objtype, privileged],
    );
    const have = new Set(granted.map((g) => g.privilege_type));
    if (!all.every((p) => have.has(p))) {
      await session.change(
        `ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON ${what} TO ${ident(privileged)} WITH GRANT OPTION`,
        `default privileges on ${what.toLowerCase()} in schema public of database ${ident(dbName)} for ${ident(privileged)}`,
      );
    }
  }
}

/** compute_ctl installs pg_stat_statements (in the system database only) when it is preloaded. */
async function createSystemExtensions(admin: Session, spec: ComputeSpec): Promise<void> {
  const preload = findSetting(spec, 'shared_preload_libraries') ?? '';
  if (!preload.split(',').some((lib) => lib.trim() === 'pg_stat_statements')) return;
  const rows = await admin.query<{ installed: boolean; available: boolean }>(
    `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'pg_stat_statements') AS installed,
            EXISTS (SELECT 1 FROM pg_catalog.pg_available_extensions WHERE name = 'pg_stat_statements') AS available`,
  );
  if (rows[0]?.installed || !rows[0]?.available) return;
  await admin.change(`CREATE EXTENSION IF NOT EXISTS pg_stat_statements WITH SCHEMA public`, `create extension pg_stat_statements`);
}
