import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, chownSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ComputeClient } from '../client/compute-client';
import { createTimeline } from '../client/timelines';
import { killAllProcesses } from '../dev/child-processes';
import { canConnect, freePort } from '../dev/processes';
import { resolveServerUser } from '../drivers/postgres/server-user';
import { cleanupComputes, createTestTimeline, exampleSpecFor, startComputeWorker, testComputeClient, testPgdata, TEST_WORKFLOW_OPTIONS, type TestTimeline } from './helpers/compute';
import { neonId, uniqueId } from './helpers/ids';
import { testConfig } from './helpers/stack';
import { waitFor } from './helpers/wait';

/**
 * compute_ctl's catalog features through the compute workflow on the embedded stack, on one
 * compute (one worker): a primary leaves subscriptions on its timeline; the same compute then
 * starts on a branch of it with drop_subscriptions_before_start, reconfigure_concurrency,
 * pgbouncer_settings and audit_log_level, and each is checked from outside.
 */

const PGBOUNCER = '/usr/sbin/pgbouncer';
const owner = resolveServerUser();
const SU = 'e2e_super';
const SU_PASSWORD = 'e2e-super-password';
const md5Hash = (password: string, role: string) => `md5${createHash('md5').update(password + role).digest('hex')}`;

/** A ComputeConfig as exampleSpecFor makes it: `{spec, compute_ctl_config}`. */
type Config = { spec: Record<string, any> }; // eslint-disable-line @typescript-eslint/no-explicit-any

function client(port: number, database: string): pg.Client {
  return new pg.Client({ host: '127.0.0.1', port, user: SU, password: SU_PASSWORD, database });
}

async function sql<T extends pg.QueryResultRow>(port: number, database: string, text: string): Promise<T[]> {
  const c = client(port, database);
  await c.connect();
  try {
    return (await c.query<T>(text)).rows;
  } finally {
    await c.end();
  }
}

describe('catalog features through the compute workflow (embedded stack)', () => {
  let computes: ComputeClient;
  let close: () => Promise<void>;
  let parent: TestTimeline;
  let branch: TestTimeline;
  const computeId = uniqueId('cat');
  const pgdata = testPgdata();
  let pgbouncerDir: string;
  let pgbouncerPort: number;
  let pgbouncer: ChildProcess;
  let port = 0;
  let config: Config;

  /** The example config for a timeline, with a superuser the test connects as. */
  const configFor = async (timeline: TestTimeline): Promise<{ config: Config; port: number }> => {
    const made = (await exampleSpecFor(timeline)) as unknown as { spec: Config; port: number };
    made.spec.spec.cluster.roles.push({ name: SU, encrypted_password: md5Hash(SU_PASSWORD, SU), options: [{ name: 'SUPERUSER', vartype: 'bool' }] });
    return { config: made.spec, port: made.port };
  };

  beforeAll(async () => {
    ({ computes, close } = await testComputeClient());
    parent = await createTestTimeline();
    // A real pgbouncer whose admin console the compute worker reaches as compute_ctl does (as postgres).
    pgbouncerDir = mkdtempSync(path.join(os.tmpdir(), 'dc-e2e-pgbouncer-'));
    chmodSync(pgbouncerDir, 0o755);
    pgbouncerPort = await freePort();
    const ini = path.join(pgbouncerDir, 'pgbouncer.ini');
    writeFileSync(
      ini,
      `[databases]\n* = host=127.0.0.1 port=1\n\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = ${pgbouncerPort}\nunix_socket_dir =\nauth_type = trust\nauth_file = ${pgbouncerDir}/users.txt\nadmin_users = postgres\n`,
    );
    writeFileSync(path.join(pgbouncerDir, 'users.txt'), '"postgres" ""\n');
    if (owner) for (const f of [pgbouncerDir, ini, path.join(pgbouncerDir, 'users.txt')]) chownSync(f, owner.uid, owner.gid);
    pgbouncer = spawn(PGBOUNCER, [ini], { stdio: 'ignore', ...(owner && { uid: owner.uid, gid: owner.gid }) });
    await waitFor('pgbouncer listening', async () => ((await canConnect('127.0.0.1', pgbouncerPort)) ? true : undefined), 10_000);
    await startComputeWorker(computeId, pgdata, [], { env: { PGBOUNCER_INI: ini, PGBOUNCER_PORT: String(pgbouncerPort) } });
  });
  afterAll(async () => {
    await computes.terminate(computeId, 'immediate').catch(() => undefined);
    await close();
    await killAllProcesses();
    await cleanupComputes();
    if (pgbouncer?.exitCode === null) {
      const exited = new Promise((r) => pgbouncer.once('exit', r));
      pgbouncer.kill('SIGTERM');
      await exited;
    }
    if (pgbouncerDir) rmSync(pgbouncerDir, { recursive: true, force: true });
  });

  it('a branch drops the subscriptions it inherited, once, and records its timeline', async () => {
    const first = await configFor(parent);
    await computes.start(computeId, first.config, TEST_WORKFLOW_OPTIONS);
    await computes.waitForRunning(computeId);
    const firstPort = first.port;
    for (const db of ['app', 'analytics']) {
      await sql(firstPort, db, `CREATE SUBSCRIPTION sub_${db} CONNECTION 'host=127.0.0.1 port=1 dbname=nowhere' PUBLICATION p WITH (connect = false)`);
    }
    const { lsn } = await computes.terminate(computeId, 'fast');

    branch = { tenantId: parent.tenantId, timelineId: neonId() };
    await createTimeline(testConfig().storage, branch.tenantId, { new_timeline_id: branch.timelineId, ancestor_timeline_id: parent.timelineId, ancestor_start_lsn: lsn! });
    ({ config, port } = await configFor(branch));
    Object.assign(config.spec, {
      drop_subscriptions_before_start: true,
      reconfigure_concurrency: 2,
      pgbouncer_settings: { default_pool_size: '7' },
      audit_log_level: 'Log',
    });
    await computes.start(computeId, config, TEST_WORKFLOW_OPTIONS);
    expect((await computes.waitForRunning(computeId)).status).toBe('running');

    expect(await sql(port, 'postgres', 'SELECT count(*)::int AS n FROM pg_subscription')).toEqual([{ n: 0 }]);
    expect(await sql(port, 'postgres', 'SELECT timeline_id FROM neon.drop_subscriptions_done')).toEqual([{ timeline_id: branch.timelineId }]);
  });

  it('pgbouncer_settings reach the real pgbouncer (ini written, RELOADed)', async () => {
    const admin = new pg.Client({ host: '127.0.0.1', port: pgbouncerPort, user: 'postgres', database: 'pgbouncer' });
    await admin.connect();
    try {
      const { rows } = await admin.query<{ key: string; value: string }>('SHOW CONFIG');
      expect(rows.find((r) => r.key === 'default_pool_size')?.value).toBe('7');
    } finally {
      await admin.end();
    }
    expect(readFileSync(path.join(pgbouncerDir, 'pgbouncer.ini'), 'utf8')).toMatch(/^default_pool_size = 7$/m);
  });

  it('audit_log_level Log: pgaudit is loaded and created, and DDL shows up in the Postgres log', async () => {
    expect(await sql(port, 'postgres', 'SHOW shared_preload_libraries')).toEqual([{ shared_preload_libraries: 'pg_stat_statements,pgaudit' }]);
    expect(await sql(port, 'postgres', "SELECT extname FROM pg_extension WHERE extname = 'pgaudit'")).toEqual([{ extname: 'pgaudit' }]);
    await sql(port, 'app', 'CREATE TABLE audited_e2e (id int)');
    const log = `${pgdata}.log`;
    const text = await waitFor('the audit line', async () => {
      const t = readFileSync(log, 'utf8');
      return t.includes('audited_e2e') ? t : undefined;
    }, 10_000);
    expect(text).toMatch(/AUDIT: SESSION,\d+,\d+,DDL,CREATE TABLE,,,CREATE TABLE audited_e2e/);
  });

  it('reconfigure_concurrency 2: a configure works on two databases at once', async () => {
    // Hold each user database's pg_namespace: the apply's per-database session blocks on it there.
    // With two at a time, both databases have an apply session waiting together.
    const lockers = await Promise.all(
      ['app', 'analytics'].map(async (db) => {
        const c = client(port, db);
        await c.connect();
        await c.query('BEGIN');
        await c.query('LOCK TABLE pg_catalog.pg_namespace IN ACCESS EXCLUSIVE MODE');
        return c;
      }),
    );
    const lockerPids = await Promise.all(lockers.map(async (c) => (await c.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid));
    const configured = computes.configure(computeId, config);
    configured.catch(() => undefined);
    try {
      const waiting = await waitFor(
        'apply sessions waiting in both databases at once',
        async () => {
          const rows = await sql<{ datname: string }>(
            port,
            'postgres',
            `SELECT DISTINCT datname FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname IN ('app', 'analytics') AND pid <> ALL(ARRAY[${lockerPids.join(',')}])`,
          );
          return rows.length === 2 ? rows.map((r) => r.datname).sort() : undefined;
        },
        30_000,
      );
      expect(waiting).toEqual(['analytics', 'app']);
    } finally {
      for (const c of lockers) {
        await c.query('ROLLBACK').catch(() => undefined);
        await c.end();
      }
    }
    expect((await configured).status).toBe('running');
  });
});
