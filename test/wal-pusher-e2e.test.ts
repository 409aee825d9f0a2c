/**
 * End to end with every piece a separate process, as in the dev stack: three safekeepers and the
 * pageserver (all requiring a storage auth token), computes on stock PostgreSQL started from the
 * pageserver's base backups with the stock storage backend, the detached WAL pusher, and the sync
 * command. A commit acknowledged right before SIGKILL of the whole Postgres, and one before a fast
 * shutdown, are both in the base backup taken at the LSN the sync command prints.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, promises as fsp, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stockStorageBackend } from '../drivers/storage-backend';
import { processStartTime } from '../common/process-start-time';
import { livePusherPid } from '../drivers/storage-backend/stock/pusher-files';
import { findPostgres, pgBin } from '../common/pg-binaries';
import { pgSpawnIdentity } from '../common/pg-identity';
import { formatLsn, isLsn, parseLsn } from '../model/lsn';
import { freePort } from '../dev/processes';
import { neonId } from './helpers/ids';
import { killAllProcesses, startProcess } from '../dev/child-processes';
import { basebackupCommand, fetchBasebackupInto, startBareCompute, type BareCompute } from './helpers/bare-compute';
import { waitFor } from './helpers/wait';

const run = promisify(execFile);
const install = findPostgres({ pgBinDir: process.env.PG_BIN_DIR });
const asPostgres = pgSpawnIdentity();
const TOKEN = 'e2e-storage-token';

describe('stock compute → WAL pusher → safekeepers → sync → pageserver base backup', () => {
  let root: string;
  const skAddrs: string[] = [];
  const skHttp: string[] = [];
  let psPg = 0;
  let psHttp = 0;
  const started: string[] = [];
  const tenant = neonId();
  const timeline = neonId();

  beforeAll(async () => {
    root = mkdtempSync(path.join(os.tmpdir(), 'dc-pusher-e2e-'));
    await fsp.chmod(root, 0o755); // PostgreSQL (run by the pageserver as `postgres`) must enter it
    await Promise.all(
      [1, 2, 3].map(async (id) => {
        const pgPort = await freePort();
        const httpPort = await freePort();
        await startProcess(
          'dev/storage/safekeeper/main.ts',
          ['--id', String(id), '--dir', path.join(root, `sk${id}`), '--pg-port', String(pgPort), '--http-port', String(httpPort), '--auth-token', TOKEN],
          { readyLine: /safekeeper ready/ },
        );
        skAddrs.push(`127.0.0.1:${pgPort}`);
        skHttp.push(`http://127.0.0.1:${httpPort}`);
      }),
    );
    psPg = await freePort();
    psHttp = await freePort();
    await startProcess(
      'dev/storage/pageserver/main.ts',
      ['--dir', path.join(root, 'ps'), '--pg-port', String(psPg), '--http-port', String(psHttp), '--safekeepers', skHttp.join(','), '--auth-token', TOKEN],
      { readyLine: /pageserver ready/ },
    );
  }, 180_000);

  afterAll(async () => {
    for (const pgdata of started) {
      await run(pgBin(install, 'pg_ctl'), ['-D', pgdata, '-m', 'immediate', '-w', 'stop'], asPostgres).catch(() => undefined);
      const pusher = livePusherPid(pgdata);
      if (pusher !== undefined) process.kill(pusher, 'SIGKILL');
    }
    await killAllProcesses();
    if (root) rmSync(root, { recursive: true, force: true });
  });

  async function startCompute(name: string, lsn?: string): Promise<BareCompute> {
    const dir = path.join(root, name);
    await fetchBasebackupInto({ port: psPg, password: TOKEN }, basebackupCommand(tenant, timeline, lsn), path.join(dir, 'pgdata'));
    const compute = await startBareCompute(
      dir,
      [stockStorageBackend.postgresqlConf({ tenantId: tenant, timelineId: timeline, safekeepers: skAddrs, mode: 'Primary' })],
      stockStorageBackend.hbaLines(),
    );
    started.push(compute.pgdata);
    await stockStorageBackend.afterPostgresReady({
      pgdata: compute.pgdata,
      socketDir: dir,
      port: compute.port,
      tenantId: tenant,
      timelineId: timeline,
      safekeepers: skAddrs,
      authToken: TOKEN,
      superuser: 'cloud_admin',
    });
    return compute;
  }

  async function sync(c: BareCompute): Promise<string> {
    const [cmd, ...args] = stockStorageBackend.syncSafekeepersCommand(install.binDir);
    const { stdout } = await run(cmd!, [...args, '-D', c.pgdata], { timeout: 120_000, env: { ...process.env, NEON_AUTH_TOKEN: TOKEN } });
    const lsn = stdout.trim();
    expect(isLsn(lsn)).toBe(true);
    return lsn;
  }

  /** SIGKILL the postmaster and all its children at once. */
  async function killPostgres(c: BareCompute): Promise<void> {
    const pm = Number(readFileSync(path.join(c.pgdata, 'postmaster.pid'), 'utf8').split('\n')[0]);
    const pids = [pm];
    for (const entry of readdirSync('/proc')) {
      if (!/^\d+$/.test(entry)) continue;
      try {
        const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
        if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === pm) pids.push(Number(entry));
      } catch {
        /* gone */
      }
    }
    for (const pid of pids) process.kill(pid, 'SIGKILL');
    await waitFor('Postgres to die', async () => (pids.every((p) => processStartTime(p) === undefined) ? true : undefined));
  }

  it('keeps commits acknowledged before SIGKILL and before a fast shutdown', async () => {
    const created = await fetch(`http://127.0.0.1:${psHttp}/v1/tenant/${tenant}/timeline`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TOKEN}` },
      body: JSON.stringify({ new_timeline_id: timeline, pg_version: 15 }),
    });
    expect(created.status).toBe(201);
    // As the control plane does: register the timeline on the safekeepers where its WAL starts.
    const initdbLsn = ((await created.json()) as { initdb_lsn: string }).initdb_lsn;
    expect(isLsn(initdbLsn)).toBe(true);
    for (const http of skHttp) {
      const res = await fetch(`${http}/v1/tenant/timeline`, {
        method: 'POST',
        headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
        body: JSON.stringify({ tenant_id: tenant, timeline_id: timeline, start_lsn: initdbLsn, pg_version: 15 }),
      });
      expect(res.status).toBe(201);
    }

    // Generation A: write, then SIGKILL everything right after the COMMIT returned.
    const a = await startCompute('a');
    await a.query('CREATE TABLE items (id int PRIMARY KEY, gen text)');
    const client = new pg.Client({ host: a.socketDir, port: a.port, user: 'cloud_admin', database: 'postgres' });
    client.on('error', () => undefined); // the connection dies with Postgres below
    await client.connect();
    await client.query('BEGIN');
    await client.query("INSERT INTO items SELECT g, 'a' FROM generate_series(1, 20) g");
    // The commit record goes after this position.
    const beforeCommit = parseLsn((await client.query<{ l: string }>('SELECT pg_current_wal_insert_lsn()::text AS l')).rows[0]!.l);
    await client.query('COMMIT');
    await killPostgres(a);
    await client.end().catch(() => undefined);
    const la = await sync(a);
    expect(parseLsn(la)).toBeGreaterThan(beforeCommit);
    await waitFor('pusher A to exit', async () => (livePusherPid(a.pgdata) === undefined ? true : undefined));

    // Generation B starts at that LSN and sees A's rows; writes; fast shutdown.
    const b = await startCompute('b', la);
    expect(await b.query('SELECT gen, count(*)::int AS n FROM items GROUP BY gen')).toEqual([{ gen: 'a', n: 20 }]);
    await b.query("INSERT INTO items VALUES (100, 'b')");
    await run(pgBin(install, 'pg_ctl'), ['-D', b.pgdata, '-m', 'fast', '-w', '-t', '60', 'stop'], asPostgres);
    await waitFor('pusher B to exit', async () => (livePusherPid(b.pgdata) === undefined ? true : undefined));
    const lb = await sync(b);
    expect(parseLsn(lb)).toBeGreaterThan(parseLsn(la));

    // The base backup at B's LSN holds both generations' commits.
    const c = await startCompute('c', lb);
    expect(await c.query('SELECT gen, count(*)::int AS n FROM items GROUP BY gen ORDER BY gen')).toEqual([
      { gen: 'a', n: 20 },
      { gen: 'b', n: 1 },
    ]);
    const status = await fetch(`http://127.0.0.1:${psHttp}/v1/tenant/${tenant}/timeline/${timeline}`, { headers: { authorization: `Bearer ${TOKEN}` } });
    expect(parseLsn(((await status.json()) as { last_record_lsn: string }).last_record_lsn)).toBeGreaterThanOrEqual(parseLsn(lb));
    await killPostgres(c);
    expect(formatLsn(parseLsn(await sync(c)))).toMatch(/^[0-9A-F]+\/[0-9A-F]+$/);
  });
});
