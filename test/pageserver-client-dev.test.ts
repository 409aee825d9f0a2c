/**
 * The pageserver client end to end against the dev pageserver (and dev safekeepers): bootstrap a
 * timeline through the management API, fetch its base backup with fetchBasebackup, start stock
 * PostgreSQL 15 on it and query it. The clients are the same ones that talk to Neon's pageserver.
 */
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fetchBasebackup } from '../drivers/pageserver/basebackup';
import { StorageError } from '../drivers/pageserver/errors';
import { createPageserverClient, PageserverHttpError } from '../drivers/pageserver/mgmt-api';
import { findPostgres, pgBin } from '../common/pg-binaries';
import { chownForPostgres, pgSpawnIdentity, postgresIdentity } from '../common/pg-identity';
import { compareLsn } from '../model/lsn';
import { freePort } from '../dev/processes';
import { startPageserver, type Pageserver } from '../dev/storage/pageserver/pageserver';
import { startSafekeeper, type RunningSafekeeper } from '../dev/storage/safekeeper/safekeeper';
import { neonId } from './helpers/ids';

const run = promisify(execFile);
const install = findPostgres({ pgBinDir: process.env.PG_BIN_DIR });
const TOKEN = 'e2e-storage-token';

let root: string;
let pageserver: Pageserver;
const safekeepers: RunningSafekeeper[] = [];
const logs: string[] = [];
const startedComputes: string[] = [];

beforeAll(async () => {
  root = mkdtempSync(path.join(os.tmpdir(), 'dc-ps-e2e-'));
  // The pageserver runs initdb and replays as the postgres user: it must reach its directory.
  chownForPostgres(root);
  for (let id = 1; id <= 3; id++) {
    safekeepers.push(
      await startSafekeeper({ id, dir: path.join(root, `sk${id}`), host: '127.0.0.1', pgPort: 0, httpPort: 0, authToken: TOKEN, log: (l) => logs.push(`sk${id}: ${l}`) }),
    );
  }
  pageserver = await startPageserver({
    dir: path.join(root, 'pageserver'),
    host: '127.0.0.1',
    pgPort: 0,
    httpPort: 0,
    safekeepers: safekeepers.map((s) => s.httpUrl),
    authToken: TOKEN,
    log: (l) => logs.push(`ps: ${l}`),
  });
});

afterAll(async () => {
  for (const pgdata of startedComputes) {
    await run(pgBin(install, 'pg_ctl'), ['-D', pgdata, '-m', 'immediate', '-w', 'stop'], pgSpawnIdentity()).catch(() => undefined);
  }
  await pageserver?.close();
  await Promise.all(safekeepers.map((s) => s.close()));
  rmSync(root, { recursive: true, force: true });
});

describe('against the dev pageserver', () => {
  const tenant = neonId();
  const timeline = neonId();
  const mgmt = () => createPageserverClient({ httpUrl: `http://127.0.0.1:${pageserver.httpPort}`, token: TOKEN, timeoutMs: 120_000 });
  const connstring = () => `postgresql://no_user@127.0.0.1:${pageserver.pgPort}`;

  it('bootstraps, fetches a base backup and starts PostgreSQL 15 from it', async () => {
    const created = await mgmt().createTimeline(tenant, { new_timeline_id: timeline, pg_version: 15 });
    expect(created.status).toBe(201);
    expect(created.timeline).toMatchObject({ tenant_id: tenant, timeline_id: timeline, pg_version: 15 });
    expect(compareLsn(created.timeline.last_record_lsn, '0/0')).toBe(1);
    expect((await mgmt().getTimeline(tenant, timeline)).timeline_id).toBe(timeline);
    expect((await mgmt().listTimelines(tenant)).map((t) => t.timeline_id)).toContain(timeline);

    const computeRoot = path.join(root, 'compute-1');
    mkdirSync(computeRoot);
    chownForPostgres(computeRoot);
    const pgdata = path.join(computeRoot, 'pgdata');
    const id = postgresIdentity();
    const r = await fetchBasebackup({
      connstring: connstring(),
      tenantId: tenant,
      timelineId: timeline,
      lsn: created.timeline.last_record_lsn,
      token: TOKEN,
      targetDir: pgdata,
      ...(id ? { owner: { uid: id.uid, gid: id.gid } } : {}),
    });
    expect(r.files).toBeGreaterThan(100);
    expect(r.metrics.basebackup_bytes).toBeGreaterThan(10_000);
    expect(r.metrics.pageserver_connect_micros).toBeGreaterThan(0);
    expect(r.metrics.basebackup_ms).toBeGreaterThan(0);
    expect(readFileSync(path.join(pgdata, 'PG_VERSION'), 'utf8').trim()).toBe('15');

    // What compute_ctl's step 2 would write: our own postgresql.conf (the backup has none).
    const port = await freePort();
    writeFileSync(
      path.join(pgdata, 'postgresql.conf'),
      [`port = ${port}`, "listen_addresses = '127.0.0.1'", `unix_socket_directories = '${computeRoot}'`, 'fsync = off', 'wal_level = replica', ''].join('\n'),
    );
    chownForPostgres(pgdata);
    startedComputes.push(pgdata);
    await run(pgBin(install, 'pg_ctl'), ['-D', pgdata, '-l', path.join(computeRoot, 'log'), '-w', '-t', '60', 'start'], pgSpawnIdentity()).catch((err: Error) => {
      throw new Error(`PostgreSQL did not start from the base backup: ${err.message}\n${readFileSync(path.join(computeRoot, 'log'), 'utf8')}`);
    });
    // Over the socket directory: local connections are trusted in the bootstrap image.
    const client = new pg.Client({ host: computeRoot, port, user: 'cloud_admin', database: 'postgres' });
    await client.connect();
    try {
      const res = await client.query<{ v: string; n: string }>("SELECT current_setting('server_version_num') AS v, count(*)::text AS n FROM pg_database");
      expect(res.rows[0]!.v.startsWith('15')).toBe(true);
      expect(Number(res.rows[0]!.n)).toBeGreaterThanOrEqual(3);
      await client.query('CREATE TABLE t (x int); INSERT INTO t VALUES (42)');
      expect((await client.query('SELECT x FROM t')).rows).toEqual([{ x: 42 }]);
    } finally {
      await client.end();
    }
  });

  it('reports an unknown timeline as permanent and a wrong token as an auth failure', async () => {
    const unknown = (await fetchBasebackup({ connstring: connstring(), tenantId: tenant, timelineId: neonId(), token: TOKEN, targetDir: path.join(root, 'nope-1') }).catch(
      (e: unknown) => e,
    )) as StorageError;
    expect(unknown).toBeInstanceOf(StorageError);
    expect(unknown.kind).toBe('not-found');
    expect(unknown.retryable).toBe(false);

    const badToken = (await fetchBasebackup({ connstring: connstring(), tenantId: tenant, timelineId: timeline, token: 'not-the-token', targetDir: path.join(root, 'nope-2') }).catch(
      (e: unknown) => e,
    )) as StorageError;
    expect(badToken.kind).toBe('auth');
    expect(badToken.message).not.toContain('not-the-token');

    const http401 = (await createPageserverClient({ httpUrl: `http://127.0.0.1:${pageserver.httpPort}`, token: 'nope' })
      .getTimeline(tenant, timeline)
      .catch((e: unknown) => e)) as PageserverHttpError;
    expect(http401).toBeInstanceOf(PageserverHttpError);
    expect(http401.status).toBe(401);
  });

  it('keeps the status of management errors and deletes timelines', async () => {
    const missing = (await mgmt().getTimeline(tenant, neonId()).catch((e: unknown) => e)) as PageserverHttpError;
    expect(missing.status).toBe(404);
    expect(missing.msg).toMatch(/not found/);

    const branch = neonId();
    const b = await mgmt().createTimeline(tenant, { new_timeline_id: branch, ancestor_timeline_id: timeline });
    expect(b.timeline.ancestor_timeline_id).toBe(timeline);

    // The branch's ID again, as a bootstrap this time: a conflict, not a second timeline.
    const conflict = (await mgmt()
      .createTimeline(tenant, { new_timeline_id: branch, pg_version: 15 })
      .catch((e: unknown) => e)) as PageserverHttpError;
    expect(conflict).toBeInstanceOf(PageserverHttpError);
    expect(conflict.status).toBe(409);
    expect(conflict.retryable).toBe(false);
    const deleted = await mgmt().deleteTimeline(tenant, branch);
    expect([200, 202]).toContain(deleted.status);
    expect(((await mgmt().getTimeline(tenant, branch).catch((e: unknown) => e)) as PageserverHttpError).status).toBe(404);
  });
});
