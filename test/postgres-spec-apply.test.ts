import { createHash } from 'node:crypto';
import { chmodSync, chownSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ApplicationFailure } from '@temporalio/common';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createComputePostgres, PostgresFailure, type ComputePostgres } from '../drivers/postgres';
import { ensurePgHba, writePostgresqlConf } from '../drivers/postgres/config';
import { runInitdb } from '../drivers/postgres/initdb';
import { computeLastActive } from '../drivers/postgres/monitor';
import { prepareFreshPgdata } from '../drivers/postgres/pgdata';
import { findRunningPostmaster } from '../drivers/postgres/process';
import { resolveServerUser } from '../drivers/postgres/server-user';
import { findPostgres } from '../common/pg-binaries';
import { projectRoot } from '../common/paths';
import { freePort } from '../dev/processes';
import { parseComputeConfig, type ComputeSpec } from '../model/compute-spec';

const pgBinDir = findPostgres({ pgBinDir: process.env.PG_BIN_DIR }).binDir;
const owner = resolveServerUser();
const ADMIN = 'cloud_admin';

const md5Hash = (password: string, role: string) => `md5${createHash('md5').update(password + role).digest('hex')}`;

interface Compute {
  root: string;
  pgdata: string;
  port: number;
  activities: ComputePostgres;
  /** Fills the example's run-time placeholders; `edit` changes the spec JSON further. */
  spec(edit?: (spec: Record<string, any>) => void): ComputeSpec; // eslint-disable-line @typescript-eslint/no-explicit-any
}

const computes: Compute[] = [];

/**
 * A running compute-like Postgres: initdb'd with the admin superuser, compute_ctl's
 * postgresql.conf from the example spec, pg_hba with local trust (the admin's socket) and
 * compute_ctl's md5 line for everything over TCP, so role passwords are really checked.
 */
async function startCompute(): Promise<Compute> {
  const root = mkdtempSync(path.join(os.tmpdir(), 'dc-pgspec-'));
  chmodSync(root, 0o755);
  if (owner) chownSync(root, owner.uid, owner.gid);
  const pgdata = path.join(root, 'pgdata');
  await prepareFreshPgdata(pgdata, { owner });
  await runInitdb({ pgBinDir, pgdata, superuser: ADMIN, owner });
  const port = await freePort();
  const spec = (edit?: (spec: Record<string, any>) => void): ComputeSpec => { // eslint-disable-line @typescript-eslint/no-explicit-any
    const json = JSON.parse(readFileSync(path.join(projectRoot, 'examples', 'compute-spec.json'), 'utf8'));
    Object.assign(json.spec, {
      tenant_id: '3aa8fcc61f6d357410b7de754b1d9001',
      timeline_id: 'de200bd42b49cc1814412c7e592dd6e9',
      pageserver_connstring: 'postgresql://127.0.0.1:1',
      safekeeper_connstrings: ['127.0.0.1:2'],
    });
    const settings = json.spec.cluster.settings as { name: string; value: string; vartype: string }[];
    settings.find((s) => s.name === 'port')!.value = String(port);
    settings.push(
      { name: 'unix_socket_directories', value: root, vartype: 'string' },
      { name: 'fsync', value: 'off', vartype: 'bool' },
      { name: 'shared_buffers', value: '1024', vartype: 'integer' },
    );
    edit?.(json.spec);
    const parsed = parseComputeConfig(json);
    if (!parsed.ok) throw new Error(parsed.errors.join('; '));
    return parsed.config.spec;
  };
  await writePostgresqlConf(pgdata, spec(), { owner });
  writeFileSync(path.join(pgdata, 'pg_hba.conf'), 'local all all trust\n');
  await ensurePgHba(pgdata, { owner });
  const activities = createComputePostgres({ pgBinDir, pgdata, admin: { user: ADMIN }, monitorIntervalMs: 100 });
  await activities.startPostgres();
  const compute = { root, pgdata, port, activities, spec };
  computes.push(compute);
  return compute;
}

/** The admin's connection (unix socket, trust). */
async function admin<T>(c: Compute, database: string, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ host: c.root, port: c.port, user: ADMIN, database });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

/** A client's login over TCP, where pg_hba demands the password. */
async function login(c: Compute, user: string, password: string, database: string): Promise<pg.Client> {
  const client = new pg.Client({ host: '127.0.0.1', port: c.port, user, password, database });
  client.on('error', () => undefined);
  await client.connect();
  return client;
}

async function canLogin(c: Compute, user: string, password: string, database: string): Promise<true | string> {
  try {
    const client = await login(c, user, password, database);
    const { rows } = await client.query<{ u: string; d: string }>('SELECT current_user AS u, current_database() AS d');
    await client.end();
    expect(rows[0]).toEqual({ u: user, d: database });
    return true;
  } catch (err) {
    return (err as { code?: string }).code ?? (err as Error).message;
  }
}

afterAll(async () => {
  for (const c of computes) {
    await c.activities.stopPostgres({ mode: 'immediate' }).catch(() => undefined);
    const running = await findRunningPostmaster(c.pgdata);
    if (running) process.kill(running.pid, 'SIGKILL');
    rmSync(c.root, { recursive: true, force: true });
  }
});

describe('applySpec against a fresh compute with the example spec', () => {
  let c: Compute;
  let firstChanges: string[];

  beforeAll(async () => {
    c = await startCompute();
    await admin(c, 'postgres', async (db) => {
      // A role the spec's delete_role delta removes, owning a table that must survive it.
      await db.query("CREATE ROLE legacy_reporter LOGIN PASSWORD 'old'");
      await db.query('CREATE TABLE public.report (id int)');
      await db.query('ALTER TABLE public.report OWNER TO legacy_reporter');
      // As in clusters from before PostgreSQL 15: new databases' public schema owned by the admin.
      await db.query('ALTER SCHEMA public OWNER TO cloud_admin');
    });
    await admin(c, 'template1', (db) => db.query('ALTER SCHEMA public OWNER TO cloud_admin'));
    firstChanges = (await c.activities.applySpec({ spec: c.spec() })).changes;
  });

  it('reports what it changed, without a password hash anywhere', () => {
    expect(firstChanges).toEqual(
      expect.arrayContaining([
        'create privileged role "neon_superuser"',
        'create role "alice"',
        'create role "bob"',
        'create database "app" owned by "alice"',
        'create database "analytics" owned by "bob"',
        'grant all on database "app" to "neon_superuser"',
        'give schema public of database "app" to "alice"',
        'reassign objects of role "legacy_reporter" to "cloud_admin" in database "postgres"',
        'drop role "legacy_reporter"',
        'create extension pg_stat_statements',
        'create table public.health_check',
      ]),
    );
    expect(firstChanges.join('\n')).not.toMatch(/md5[0-9a-f]{32}|SCRAM-SHA-256/);
  });

  it('lets each role log in over TCP with its password (md5 and SCRAM), and only with it', async () => {
    expect(await canLogin(c, 'alice', 'alice-dev-password', 'app')).toBe(true);
    expect(await canLogin(c, 'bob', 'bob-dev-password', 'analytics')).toBe(true);
    expect(await canLogin(c, 'alice', 'wrong-password', 'app')).toBe('28P01');
    expect(await canLogin(c, 'bob', 'alice-dev-password', 'analytics')).toBe('28P01');
    const stored = await admin(c, 'postgres', (db) => db.query<{ rolname: string; rolpassword: string }>("SELECT rolname, rolpassword FROM pg_authid WHERE rolname IN ('alice', 'bob') ORDER BY 1"));
    expect(stored.rows.map((r) => r.rolpassword)).toEqual(c.spec().cluster.roles.map((r) => r.encrypted_password));
  });

  it('sets owners, options, memberships and the privileged role as compute_ctl does', async () => {
    await admin(c, 'postgres', async (db) => {
      const dbs = await db.query("SELECT datname, pg_get_userbyid(datdba) AS owner, pg_encoding_to_char(encoding) AS enc FROM pg_database WHERE datname IN ('app', 'analytics') ORDER BY 1");
      expect(dbs.rows).toEqual([
        { datname: 'analytics', owner: 'bob', enc: 'UTF8' },
        { datname: 'app', owner: 'alice', enc: 'UTF8' },
      ]);
      const su = await db.query("SELECT rolcanlogin, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls FROM pg_roles WHERE rolname = 'neon_superuser'");
      expect(su.rows[0]).toEqual({ rolcanlogin: false, rolcreatedb: true, rolcreaterole: true, rolreplication: true, rolbypassrls: true });
      const bob = await db.query("SELECT rolconnlimit, pg_has_role('bob', 'neon_superuser', 'MEMBER') AS member FROM pg_roles WHERE rolname = 'bob'");
      expect(bob.rows[0]).toEqual({ rolconnlimit: 20, member: true });
      expect((await db.query("SELECT 1 FROM pg_roles WHERE rolname = 'legacy_reporter'")).rowCount).toBe(0);
      expect((await db.query("SELECT pg_get_userbyid(relowner) AS owner FROM pg_class WHERE relname = 'report'")).rows).toEqual([{ owner: 'cloud_admin' }]);
      expect((await db.query('SELECT count(*)::int AS n FROM public.health_check')).rows).toEqual([{ n: 1 }]);
    });
    const publicOwner = await admin(c, 'app', (db) => db.query("SELECT pg_get_userbyid(nspowner) AS owner FROM pg_namespace WHERE nspname = 'public'"));
    expect(publicOwner.rows).toEqual([{ owner: 'alice' }]);
    // alice owns public in app, so she can create there.
    const alice = await login(c, 'alice', 'alice-dev-password', 'app');
    await alice.query('CREATE TABLE public.items (id int)');
    await alice.end();
  });

  it('changes nothing when run again', async () => {
    expect((await c.activities.applySpec({ spec: c.spec() })).changes).toEqual([]);
  });

  it('reconfigure: adds a role, changes a password, drops a database (with a client still in it) and reloads the settings', async () => {
    const bobInAnalytics = await login(c, 'bob', 'bob-dev-password', 'analytics');
    const next = c.spec((s) => {
      s.cluster.roles.push({ name: 'carol', encrypted_password: md5Hash('carol-pass', 'carol'), options: null });
      s.cluster.roles[0].encrypted_password = md5Hash('alice-new-password', 'alice');
      s.cluster.databases = s.cluster.databases.filter((d: { name: string }) => d.name !== 'analytics');
      s.delta_operations = [{ action: 'delete_db', name: 'analytics' }];
      s.cluster.settings.find((x: { name: string }) => x.name === 'log_connections').value = 'off';
    });
    const { changes, reloaded } = await c.activities.reconfigurePostgres({ spec: next });
    expect(reloaded).toBe(true);
    expect(changes).toEqual(['set password of role "alice"', 'create role "carol"', 'drop database "analytics"']);
    expect(await canLogin(c, 'carol', 'carol-pass', 'app')).toBe(true);
    expect(await canLogin(c, 'alice', 'alice-new-password', 'app')).toBe(true);
    expect(await canLogin(c, 'alice', 'alice-dev-password', 'app')).toBe('28P01');
    await expect(bobInAnalytics.query('SELECT 1')).rejects.toThrow();
    await admin(c, 'postgres', async (db) => {
      expect((await db.query("SELECT 1 FROM pg_database WHERE datname = 'analytics'")).rowCount).toBe(0);
      expect((await db.query('SHOW log_connections')).rows).toEqual([{ log_connections: 'off' }]);
    });
    expect(readFileSync(path.join(c.pgdata, 'compute_ctl_temp_override.conf'), 'utf8')).toBe('');
    expect((await c.activities.reconfigurePostgres({ spec: next })).changes).toEqual([]);
  });

  it('reconfigure: a setting Postgres rejects fails naming it, and the previous configuration stays in force', async () => {
    const conf = path.join(c.pgdata, 'postgresql.conf');
    const before = readFileSync(conf, 'utf8');
    const settingsInForce = () => admin(c, 'postgres', async (db) => (await db.query("SELECT name, setting FROM pg_settings WHERE name IN ('work_mem', 'log_min_duration_statement') ORDER BY name")).rows);
    const inForce = await settingsInForce();
    const cases: [string, (settings: { name: string; value: string; vartype: string }[]) => void, RegExp][] = [
      ['a bad value', (st) => st.push({ name: 'work_mem', value: 'banana', vartype: 'string' }), /work_mem: setting could not be applied \(postgresql\.conf line \d+\)/],
      ['an unknown parameter', (st) => st.push({ name: 'no_such_parameter', value: '1', vartype: 'integer' }), /no_such_parameter: unrecognized configuration parameter/],
      ['a bad value of a server-start parameter', (st) => st.push({ name: 'max_connections', value: 'lots', vartype: 'string' }), /max_connections: setting could not be applied/],
    ];
    for (const [what, edit, named] of cases) {
      const bad = c.spec((s) => {
        // A good change alongside: it must not take effect either.
        s.cluster.settings.push({ name: 'log_min_duration_statement', value: '1234', vartype: 'integer' });
        edit(s.cluster.settings);
      });
      const err = await c.activities.reconfigurePostgres({ spec: bad }).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err, what).toBeInstanceOf(ApplicationFailure);
      expect((err as ApplicationFailure).type).toBe(PostgresFailure.SettingRejected);
      expect((err as ApplicationFailure).nonRetryable).toBe(true);
      expect((err as Error).message).toMatch(named);
      expect((err as Error).message).toMatch(/the previous configuration stays in force/);
      expect(readFileSync(conf, 'utf8'), what).toBe(before);
      expect(await settingsInForce(), what).toEqual(inForce);
      await admin(c, 'postgres', async (db) => expect((await db.query('SELECT name, error FROM pg_file_settings WHERE error IS NOT NULL')).rows).toEqual([]));
    }
  });

  it('reconfigure: a setting that needs a restart is reported as such, the others take effect', async () => {
    const next = c.spec((s) => {
      // The last line for a name wins (earlier ones show in pg_file_settings as not applied, without an error).
      s.cluster.settings.push({ name: 'shared_buffers', value: '2048', vartype: 'integer' });
      s.cluster.settings.push({ name: 'log_min_duration_statement', value: '4321', vartype: 'integer' });
    });
    const result = await c.activities.reconfigurePostgres({ spec: next });
    expect(result.pendingRestart).toEqual(['shared_buffers']);
    await admin(c, 'postgres', async (db) => {
      expect((await db.query('SHOW log_min_duration_statement')).rows).toEqual([{ log_min_duration_statement: '4321ms' }]);
      expect((await db.query("SELECT setting FROM pg_settings WHERE name = 'shared_buffers'")).rows).toEqual([{ setting: '1024' }]);
    });
    // Back to the running value: nothing waits for a restart any more.
    expect((await c.activities.reconfigurePostgres({ spec: c.spec() })).pendingRestart).toEqual([]);
  });

  it('skips a read-only compute and skip_pg_catalog_updates', async () => {
    expect(await c.activities.applySpec({ spec: c.spec((s) => (s.skip_pg_catalog_updates = true)) })).toMatchObject({ changes: [], skipped: 'skip_pg_catalog_updates is set' });
    const replica = c.spec((s) => {
      s.mode = 'Replica';
      s.cluster.roles.push({ name: 'never', encrypted_password: null });
    });
    expect(await c.activities.applySpec({ spec: replica })).toMatchObject({ changes: [], skipped: 'a Replica compute is read-only' });
  });
});

describe('applySpec with hostile names', () => {
  const evilRole = `Robert'); DROP TABLE students;--`;
  const quoteRole = `"quoted" role`;
  const unicodeRole = 'ünïcødé 🐘';
  const evilDb = `db "x"; DROP DATABASE postgres; --`;
  const unicodeDb = 'データベース';
  let c: Compute;

  beforeAll(async () => {
    c = await startCompute();
  });

  it('creates, renames and drops them exactly as named, and a re-run changes nothing', async () => {
    const first = c.spec((s) => {
      s.cluster.roles = [
        { name: evilRole, encrypted_password: md5Hash('pw1', evilRole) },
        { name: quoteRole, encrypted_password: null },
        { name: unicodeRole, encrypted_password: md5Hash('pw3', unicodeRole) },
        { name: 'semi;colon', encrypted_password: md5Hash('pw4', 'semi;colon') },
      ];
      s.cluster.databases = [
        { name: evilDb, owner: evilRole, options: [{ name: 'LC_COLLATE', value: "C'--", vartype: 'string' }] },
        { name: unicodeDb, owner: unicodeRole },
      ];
      s.delta_operations = [];
    });
    // An option value with a quote is passed as a literal: PostgreSQL rejects the locale, nothing runs.
    const badLocale = await c.activities.applySpec({ spec: first }).catch((e: unknown) => e);
    expect(badLocale).toBeInstanceOf(ApplicationFailure);
    expect((badLocale as ApplicationFailure).message).toMatch(/invalid locale name|C'--/);

    const fixed = c.spec((s) => {
      s.cluster.roles = first.cluster.roles;
      s.cluster.databases = [{ name: evilDb, owner: evilRole }, { name: unicodeDb, owner: unicodeRole }];
      s.delta_operations = [];
    });
    const changes = (await c.activities.applySpec({ spec: fixed })).changes;
    expect(changes).toEqual(expect.arrayContaining([`create database "db ""x""; DROP DATABASE postgres; --" owned by "Robert'); DROP TABLE students;--"`]));
    expect((await c.activities.applySpec({ spec: fixed })).changes).toEqual([]);
    expect(await canLogin(c, evilRole, 'pw1', evilDb)).toBe(true);
    expect(await canLogin(c, unicodeRole, 'pw3', unicodeDb)).toBe(true);
    expect(await canLogin(c, quoteRole, '', 'postgres')).not.toBe(true); // PASSWORD NULL: no password login

    const renamedRole = `${unicodeRole} "renamed"`;
    const renamed = c.spec((s) => {
      s.cluster.roles = [fixed.cluster.roles[0], { name: renamedRole, encrypted_password: md5Hash('pw5', renamedRole) }, fixed.cluster.roles[3]];
      s.cluster.databases = [{ name: `${evilDb} renamed`, owner: evilRole }, { name: unicodeDb, owner: renamedRole }];
      s.delta_operations = [
        { action: 'rename_role', name: unicodeRole, new_name: renamedRole },
        { action: 'rename_db', name: evilDb, new_name: `${evilDb} renamed` },
        { action: 'delete_role', name: quoteRole },
      ];
    });
    const renameChanges = (await c.activities.applySpec({ spec: renamed })).changes;
    expect(renameChanges).toEqual(
      expect.arrayContaining([
        `rename role "ünïcødé 🐘" to "ünïcødé 🐘 ""renamed"""`,
        `set password of role "ünïcødé 🐘 ""renamed"""`,
        `rename database "db ""x""; DROP DATABASE postgres; --" to "db ""x""; DROP DATABASE postgres; -- renamed"`,
        `drop role """quoted"" role"`,
      ]),
    );
    expect((await c.activities.applySpec({ spec: renamed })).changes).toEqual([]);
    expect(await canLogin(c, renamedRole, 'pw5', unicodeDb)).toBe(true);
    await admin(c, 'postgres', async (db) => {
      const roles = await db.query<{ rolname: string }>("SELECT rolname FROM pg_roles WHERE rolname NOT LIKE 'pg\\_%' ORDER BY 1");
      expect(roles.rows.map((r) => r.rolname).sort()).toEqual([evilRole, 'cloud_admin', 'neon_superuser', 'semi;colon', renamedRole].sort());
      const dbs = await db.query<{ datname: string; owner: string }>('SELECT datname, pg_get_userbyid(datdba) AS owner FROM pg_database ORDER BY 1');
      expect(dbs.rows).toEqual(
        expect.arrayContaining([
          { datname: `${evilDb} renamed`, owner: evilRole },
          { datname: unicodeDb, owner: renamedRole },
          { datname: 'postgres', owner: 'cloud_admin' },
        ]),
      );
    });
  });

  it('fails non-retryably on a bad statement, keeps hashes out of the error and the server log, and a fixed re-run finishes the job', async () => {
    const hash = md5Hash('secret', 'pg_reserved');
    const broken = c.spec((s) => {
      s.cluster.roles = [
        { name: 'dave', encrypted_password: md5Hash('dave-pw', 'dave') },
        { name: 'pg_reserved', encrypted_password: hash }, // role names starting with pg_ are reserved
      ];
      s.cluster.databases = [{ name: 'daves', owner: 'dave' }];
      s.delta_operations = [];
    });
    const err = await c.activities.applySpec({ spec: broken }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApplicationFailure);
    expect((err as ApplicationFailure).type).toBe(PostgresFailure.SpecApplyFailed);
    expect((err as ApplicationFailure).nonRetryable).toBe(true);
    expect((err as ApplicationFailure).message).toMatch(/create role "pg_reserved": role name "pg_reserved" is reserved/);
    expect((err as ApplicationFailure).message).not.toContain(hash);
    const log = readFileSync(`${c.pgdata}.log`, 'utf8');
    expect(log).toContain('role name "pg_reserved" is reserved');
    expect(log).not.toContain(hash.slice(3));

    // Half-way: dave was created before the failure; the fixed spec finishes without redoing it.
    const fixed = c.spec((s) => {
      s.cluster.roles = [broken.cluster.roles[0]];
      s.cluster.databases = [{ name: 'daves', owner: 'dave' }];
      s.delta_operations = [];
    });
    const changes = (await c.activities.applySpec({ spec: fixed })).changes;
    expect(changes).not.toContain('create role "dave"');
    expect(changes).toContain('create database "daves" owned by "dave"');
    expect(await canLogin(c, 'dave', 'dave-pw', 'daves')).toBe(true);
  });

  it('refuses to rename a role onto an existing one', async () => {
    const spec = c.spec((s) => {
      s.cluster.roles = [];
      s.cluster.databases = [];
      s.delta_operations = [{ action: 'rename_role', name: 'dave', new_name: 'semi;colon' }];
    });
    const err = (await c.activities.applySpec({ spec }).catch((e: unknown) => e)) as ApplicationFailure;
    expect(err.type).toBe(PostgresFailure.SpecApplyFailed);
    expect(err.message).toMatch(/cannot rename role "dave" to "semi;colon": that role already exists/);
  });
});

describe('the activity monitor', () => {
  const now = new Date('2030-01-01T12:00:00.000Z');
  const sample = (backends: { state: string | null; stateChange: string | null }[], extra: Partial<{ walsenders: number; activeSubscriptions: number; autovacuumWorkers: number }> = {}) => ({
    backends,
    walsenders: 0,
    activeSubscriptions: 0,
    autovacuumWorkers: 0,
    ...extra,
  });

  it("follows compute_ctl's last_active rule and never moves backwards", () => {
    expect(computeLastActive(null, sample([]), now)).toBeNull();
    expect(computeLastActive(null, sample([{ state: 'idle', stateChange: '2030-01-01T11:00:00.000Z' }, { state: 'idle', stateChange: '2030-01-01T11:30:00.000Z' }]), now)).toBe('2030-01-01T11:30:00.000Z');
    expect(computeLastActive('2030-01-01T11:00:00.000Z', sample([{ state: 'active', stateChange: '2030-01-01T10:00:00.000Z' }]), now)).toBe(now.toISOString());
    expect(computeLastActive(null, sample([{ state: 'idle in transaction', stateChange: '2030-01-01T10:00:00.000Z' }]), now)).toBe(now.toISOString());
    expect(computeLastActive('2030-01-01T11:50:00.000Z', sample([{ state: 'idle', stateChange: '2030-01-01T11:30:00.000Z' }]), now)).toBe('2030-01-01T11:50:00.000Z');
    expect(computeLastActive(null, sample([{ state: null, stateChange: null }]), now)).toBeNull();
    for (const extra of [{ walsenders: 1 }, { activeSubscriptions: 1 }, { autovacuumWorkers: 1 }]) {
      expect(computeLastActive('2030-01-01T11:00:00.000Z', sample([], extra), now)).toBe(now.toISOString());
    }
  });

  it('ignores the admin user, sees idle and active clients, over a real connection', async () => {
    const c = await startCompute();
    await c.activities.applySpec({ spec: c.spec() });
    // Only the admin (and the monitor itself) connected: no activity.
    const adminOnly = await admin(c, 'postgres', () => c.activities.watchPostgres({ reportAfterSeconds: 0.5, lastActive: null }));
    expect(adminOnly).toMatchObject({ exited: false, lastActive: null });

    const alice = await login(c, 'alice', 'alice-dev-password', 'app');
    await alice.query('SELECT 1');
    const idleSince = await admin(c, 'postgres', (db) =>
      db.query<{ t: Date }>("SELECT state_change AS t FROM pg_stat_activity WHERE usename = 'alice'").then((r) => r.rows[0]!.t.toISOString()),
    );
    const idle = await c.activities.watchPostgres({ reportAfterSeconds: 0.5, lastActive: null });
    expect(idle.lastActive).toBe(idleSince);
    // An older value from the workflow does not win; a newer one is kept.
    expect((await c.activities.watchPostgres({ reportAfterSeconds: 0.3, lastActive: '2000-01-01T00:00:00.000Z' })).lastActive).toBe(idleSince);
    expect((await c.activities.watchPostgres({ reportAfterSeconds: 0.3, lastActive: '2999-01-01T00:00:00.000Z' })).lastActive).toBe('2999-01-01T00:00:00.000Z');

    const busy = alice.query('SELECT pg_sleep(2)');
    const before = Date.now();
    const active = await c.activities.watchPostgres({ reportAfterSeconds: 1, lastActive: idleSince });
    await busy;
    expect(Date.parse(active.lastActive!)).toBeGreaterThanOrEqual(before - 1000);
    await alice.end();
  });
});

/** The admin's connection as spec-apply's `connect` wants it. */
function connector(c: Compute): (database: string) => Promise<pg.Client> {
  return async (database) => {
    const client = new pg.Client({ host: c.root, port: c.port, user: ADMIN, database });
    await client.connect();
    return client;
  };
}

describe('drop_subscriptions_before_start (a branch drops the subscriptions it inherited, once per timeline)', () => {
  let c: Compute;
  const flagged = (edit?: (s: Record<string, any>) => void) => // eslint-disable-line @typescript-eslint/no-explicit-any
    c.spec((s) => {
      s.drop_subscriptions_before_start = true;
      edit?.(s);
    });
  const subscriptions = () =>
    admin(c, 'postgres', async (db) =>
      (await db.query<{ subname: string; datname: string }>('SELECT s.subname, d.datname FROM pg_subscription s JOIN pg_database d ON d.oid = s.subdbid ORDER BY 1')).rows,
    );
  // No publisher is needed: connect = false makes a disabled subscription without a slot call.
  const subscribe = (name: string) =>
    admin(c, 'app', (db) => db.query(`CREATE SUBSCRIPTION ${name} CONNECTION 'host=127.0.0.1 port=1 dbname=parent' PUBLICATION pub WITH (connect = false)`));

  beforeAll(async () => {
    c = await startCompute();
    // The parent's compute: its databases, and a subscription in one of them.
    await c.activities.applySpec({ spec: c.spec() });
    await subscribe('parent_sub');
    await admin(c, 'postgres', (db) => db.query(`CREATE SUBSCRIPTION parent_sub2 CONNECTION 'host=127.0.0.1 port=1 dbname=parent' PUBLICATION pub WITH (connect = false)`));
  });

  it('starts a stock Postgres with no logical replication worker, so no inherited subscription can connect before the drop', async () => {
    const { subscriptionsBeforeStartSettings } = await import('../drivers/postgres/subscriptions');
    const spec = flagged();
    await c.activities.stopPostgres({ mode: 'fast' });
    await writePostgresqlConf(c.pgdata, spec, { owner, backendSettings: subscriptionsBeforeStartSettings(spec) });
    await c.activities.startPostgres();
    const rows = await admin(c, 'postgres', (db) => db.query<{ v: string }>("SELECT current_setting('max_logical_replication_workers') AS v"));
    expect(rows.rows[0]!.v).toBe('0');
    expect(subscriptionsBeforeStartSettings(c.spec())).toEqual([]);
  });

  it('drops the inherited subscriptions in every database and records the timeline in neon.drop_subscriptions_done', async () => {
    expect((await subscriptions()).map((s) => s.subname)).toEqual(['parent_sub', 'parent_sub2']);
    const { changes } = await c.activities.applySpec({ spec: flagged() });
    expect(changes).toEqual(expect.arrayContaining(['drop inherited subscription "parent_sub" in database "app"', 'drop inherited subscription "parent_sub2" in database "postgres"']));
    expect(await subscriptions()).toEqual([]);
    const done = await admin(c, 'postgres', (db) => db.query<{ timeline_id: string }>('SELECT timeline_id FROM neon.drop_subscriptions_done'));
    expect(done.rows).toEqual([{ timeline_id: 'de200bd42b49cc1814412c7e592dd6e9' }]);
  });

  it('does not drop again on a restart: a subscription made after the first start survives', async () => {
    await subscribe('child_sub');
    await c.activities.stopPostgres({ mode: 'fast' });
    await c.activities.startPostgres();
    const { changes } = await c.activities.applySpec({ spec: flagged() });
    expect(changes.filter((ch) => ch.includes('subscription'))).toEqual([]);
    expect((await subscriptions()).map((s) => s.subname)).toEqual(['child_sub']);
  });

  it('drops again on a branch of this branch (another timeline), and nothing without the flag', async () => {
    expect((await c.activities.applySpec({ spec: c.spec() })).changes.filter((ch) => ch.includes('subscription'))).toEqual([]);
    const grandchild = 'aa200bd42b49cc1814412c7e592dd6e9';
    const { changes } = await c.activities.applySpec({ spec: flagged((s) => (s.timeline_id = grandchild)) });
    expect(changes).toContain('drop inherited subscription "child_sub" in database "app"');
    expect(await subscriptions()).toEqual([]);
    const done = await admin(c, 'postgres', (db) => db.query<{ timeline_id: string }>('SELECT timeline_id FROM neon.drop_subscriptions_done'));
    expect(done.rows).toEqual([{ timeline_id: grandchild }]);
  });
});

describe('reconfigure_concurrency (the per-database phase runs that many databases at once)', () => {
  const DBS = ['cc_a', 'cc_b', 'cc_c', 'cc_d'];
  const withDbs = (concurrency: number) => (s: Record<string, any>) => { // eslint-disable-line @typescript-eslint/no-explicit-any
    s.reconfigure_concurrency = concurrency;
    s.cluster.databases = DBS.map((name) => ({ name, owner: 'alice', options: null }));
    s.delta_operations = null;
  };
  /** A compute whose spec databases exist with the public schema still the admin's, so each has per-database work. */
  async function prepared(): Promise<Compute> {
    const c = await startCompute();
    await admin(c, 'template1', (db) => db.query('ALTER SCHEMA public OWNER TO cloud_admin'));
    return c;
  }
  /** What the per-database phase leaves: schema owners and default privileges of every spec database. */
  async function catalogState(c: Compute): Promise<unknown[]> {
    const out: unknown[] = [];
    for (const name of DBS) {
      out.push(
        await admin(c, name, async (db) =>
          (await db.query(
            "SELECT n.nspname, r.rolname, (SELECT array_agg(d.defaclobjtype::text || ':' || d.defaclacl::text ORDER BY 1) FROM pg_default_acl d WHERE d.defaclnamespace = n.oid) AS acl FROM pg_namespace n JOIN pg_roles r ON r.oid = n.nspowner WHERE n.nspname = 'public'",
          )).rows,
        ),
      );
    }
    return out;
  }

  it('overlaps the databases (seen in pg_stat_activity) with concurrency 4, and gives the same result as one at a time', async () => {
    const { applySpec } = await import('../drivers/postgres/spec-apply');
    const sequential = await prepared();
    const parallel = await prepared();

    // One at a time: the per-database sections never overlap.
    const intervals: [number, number][] = [];
    const seqChanges = await applySpec(sequential.spec(withDbs(1)), {
      connect: connector(sequential),
      adminUser: ADMIN,
      perDatabase: async () => {
        const start = performance.now();
        await new Promise((r) => setTimeout(r, 20));
        intervals.push([start, performance.now()]);
      },
    });
    intervals.sort((a, b) => a[0] - b[0]);
    for (let i = 1; i < intervals.length; i++) expect(intervals[i]![0]).toBeGreaterThanOrEqual(intervals[i - 1]![1]);

    // Four at once: each database's section waits until pg_stat_activity shows all four spec
    // databases' apply sessions open together; with no overlap this would never happen.
    let maxSeen = 0;
    const parChanges = await applySpec(parallel.spec(withDbs(4)), {
      connect: connector(parallel),
      adminUser: ADMIN,
      perDatabase: async (client) => {
        for (let tries = 0; tries < 200; tries++) {
          const { rows } = await client.query<{ n: number }>(
            "SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'compute_ctl:apply_config' AND datname = ANY($1)",
            [DBS],
          );
          maxSeen = Math.max(maxSeen, rows[0]!.n);
          if (rows[0]!.n === DBS.length) return;
          await new Promise((r) => setTimeout(r, 50));
        }
      },
    });
    expect(maxSeen).toBe(DBS.length);
    expect(parChanges).toEqual(seqChanges);
    expect(seqChanges).toEqual(expect.arrayContaining(DBS.map((d) => `give schema public of database "${d}" to "alice"`)));
    expect(await catalogState(parallel)).toEqual(await catalogState(sequential));
  });
});

describe("compute_ctl's migrations (the privileged role's grants, each run once per database)", () => {
  it('runs them all on the first apply, records the count, runs none again, and only the missing ones after a partial record', async () => {
    const { MIGRATION_COUNT } = await import('../drivers/postgres/migrations');
    const c = await startCompute();
    const first = (await c.activities.applySpec({ spec: c.spec() })).changes;
    expect(first.filter((ch) => ch.startsWith('migration '))).toHaveLength(MIGRATION_COUNT);
    const state = () =>
      admin(c, 'postgres', async (db) => ({
        id: (await db.query<{ id: string }>('SELECT id FROM neon_migration.migration_id WHERE key = 0')).rows[0]!.id,
        bypassrls: (await db.query<{ b: boolean }>("SELECT rolbypassrls AS b FROM pg_roles WHERE rolname = 'neon_superuser'")).rows[0]!.b,
        monitorAdmin: (await db.query<{ a: boolean }>("SELECT admin_option AS a FROM pg_auth_members WHERE roleid = 'pg_monitor'::regrole AND member = 'neon_superuser'::regrole")).rows[0]?.a,
        signalAdmin: (await db.query<{ a: boolean }>("SELECT admin_option AS a FROM pg_auth_members WHERE roleid = 'pg_signal_backend'::regrole AND member = 'neon_superuser'::regrole")).rows[0]?.a,
        originStatus: (await db.query<{ ok: boolean }>("SELECT has_function_privilege('neon_superuser', 'pg_catalog.pg_show_replication_origin_status()', 'EXECUTE') AS ok")).rows[0]!.ok,
      }));
    expect(await state()).toEqual({ id: String(MIGRATION_COUNT), bypassrls: true, monitorAdmin: true, signalAdmin: true, originStatus: true });
    expect((await c.activities.applySpec({ spec: c.spec() })).changes.filter((ch) => ch.startsWith('migration '))).toEqual([]);

    // As if a crash came after migration 11: only 12 runs (its grant, revoked here, comes back).
    await admin(c, 'postgres', (db) => db.query('REVOKE pg_signal_backend FROM neon_superuser; UPDATE neon_migration.migration_id SET id = 11 WHERE key = 0'));
    const again = (await c.activities.applySpec({ spec: c.spec() })).changes.filter((ch) => ch.startsWith('migration '));
    expect(again).toEqual(['migration 12: the privileged role may grant pg_signal_backend']);
    expect((await state()).signalAdmin).toBe(true);
  });
});
