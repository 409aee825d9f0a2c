/**
 * The dev pageserver with the real dev safekeepers, the stock WAL pusher and the sync command:
 * computes started from base backups write WAL that reaches the safekeepers, the sync command
 * names the LSN, and the next base backup at that LSN shows exactly the committed state — across
 * several compute generations and a branch.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, promises as fsp, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stockStorageBackend } from '../drivers/storage-backend';
import { livePusherPid } from '../drivers/storage-backend/stock/pusher-files';
import { findPostgres, pgBin } from '../common/pg-binaries';
import { pgSpawnIdentity } from '../common/pg-identity';
import { isLsn, parseLsn } from '../model/lsn';
import { startPageserver, type Pageserver } from '../dev/storage/pageserver/pageserver';
import { startSafekeeper, type RunningSafekeeper } from '../dev/storage/safekeeper/safekeeper';
import { neonId } from './helpers/ids';
import { basebackupCommand, fetchBasebackupInto, startBareCompute, type BareCompute } from './helpers/bare-compute';
import { waitFor } from './helpers/wait';

const run = promisify(execFile);
const install = findPostgres({ pgBinDir: process.env.PG_BIN_DIR });

describe('dev pageserver with the dev safekeepers, WAL pusher and sync command', () => {
  let root: string;
  let sks: RunningSafekeeper[] = [];
  let ps: Pageserver;
  const running: string[] = [];
  const tenant = neonId();
  const main = neonId();
  const branch = neonId();

  beforeAll(async () => {
    root = mkdtempSync(path.join(os.tmpdir(), 'dc-ps-stack-'));
    await fsp.chmod(root, 0o755);
    sks = await Promise.all([1, 2, 3].map((id) => startSafekeeper({ id, dir: path.join(root, `sk${id}`), host: '127.0.0.1', pgPort: 0, httpPort: 0 })));
    ps = await startPageserver({ dir: path.join(root, 'ps'), host: '127.0.0.1', pgPort: 0, httpPort: 0, safekeepers: sks.map((s) => s.httpUrl), log: () => {} });
  });

  afterAll(async () => {
    for (const pgdata of running) {
      await run(pgBin(install, 'pg_ctl'), ['-D', pgdata, '-m', 'immediate', '-w', 'stop'], pgSpawnIdentity()).catch(() => undefined);
      const pusher = livePusherPid(pgdata);
      if (pusher !== undefined) process.kill(pusher, 'SIGKILL');
    }
    await ps?.close();
    await Promise.all(sks.map((s) => s.close()));
    if (root) rmSync(root, { recursive: true, force: true });
  });

  const safekeeperAddrs = () => sks.map((s) => s.pgAddress);

  async function startCompute(name: string, timeline: string, lsn?: string): Promise<BareCompute> {
    const dir = path.join(root, name);
    await fetchBasebackupInto({ port: ps.pgPort }, basebackupCommand(tenant, timeline, lsn), path.join(dir, 'pgdata'));
    const compute = await startBareCompute(
      dir,
      ['fsync = off', stockStorageBackend.postgresqlConf({ tenantId: tenant, timelineId: timeline, safekeepers: safekeeperAddrs(), mode: 'Primary' })],
      stockStorageBackend.hbaLines(),
    );
    running.push(compute.pgdata);
    await stockStorageBackend.afterPostgresReady({ pgdata: compute.pgdata, socketDir: dir, port: compute.port, tenantId: tenant, timelineId: timeline, safekeepers: safekeeperAddrs(), superuser: 'cloud_admin' });
    return compute;
  }

  /** Fast shutdown, wait for the pusher to drain, then the sync command's LSN. */
  async function stopAndSync(c: BareCompute): Promise<string> {
    await run(pgBin(install, 'pg_ctl'), ['-D', c.pgdata, '-m', 'fast', '-w', '-t', '60', 'stop'], pgSpawnIdentity());
    await waitFor('the WAL pusher to exit', async () => (livePusherPid(c.pgdata) === undefined ? true : undefined));
    const [cmd, ...args] = stockStorageBackend.syncSafekeepersCommand(install.binDir);
    const { stdout } = await run(cmd!, [...args, '-D', c.pgdata], { timeout: 120_000 });
    const lsn = stdout.trim().split('\n').pop()!.trim();
    expect(isLsn(lsn)).toBe(true);
    return lsn;
  }

  async function lastRecordLsn(timeline: string): Promise<string> {
    const res = await fetch(`http://127.0.0.1:${ps.httpPort}/v1/tenant/${tenant}/timeline/${timeline}`);
    return ((await res.json()) as { last_record_lsn: string }).last_record_lsn;
  }

  it('carries committed data from compute to compute through safekeepers and base backups', async () => {
    const created = await fetch(`http://127.0.0.1:${ps.httpPort}/v1/tenant/${tenant}/timeline`, {
      method: 'POST',
      body: JSON.stringify({ new_timeline_id: main, pg_version: 15 }),
    });
    expect(created.status).toBe(201);

    const a = await startCompute('a', main);
    await a.query('create table items (id int primary key, gen text)');
    await a.query("insert into items select g, 'a' from generate_series(1, 100) g");
    const la = await stopAndSync(a);
    expect(await lastRecordLsn(main)).toBe(la);

    const b = await startCompute('b', main, la);
    expect((await b.query<{ n: string }>("select count(*) as n from items where gen = 'a'"))[0]!.n).toBe('100');
    await b.query("insert into items select g, 'b' from generate_series(101, 150) g");
    const lb = await stopAndSync(b);
    expect(parseLsn(lb)).toBeGreaterThan(parseLsn(la));
    expect(await lastRecordLsn(main)).toBe(lb);

    const c = await startCompute('c', main, lb);
    expect(await c.query('select gen, count(*)::int as n from items group by gen order by gen')).toEqual([
      { gen: 'a', n: 100 },
      { gen: 'b', n: 50 },
    ]);
    await stopAndSync(c);

    // A branch at compute a's end sees only generation a.
    const br = await fetch(`http://127.0.0.1:${ps.httpPort}/v1/tenant/${tenant}/timeline`, {
      method: 'POST',
      body: JSON.stringify({ new_timeline_id: branch, ancestor_timeline_id: main, ancestor_start_lsn: la }),
    });
    expect(br.status).toBe(201);
    const d = await startCompute('d', branch);
    expect(await d.query('select gen, count(*)::int as n from items group by gen order by gen')).toEqual([{ gen: 'a', n: 100 }]);
    await d.query("insert into items values (1000, 'd')");
    const ld = await stopAndSync(d);
    const e = await startCompute('e', branch, ld);
    expect(await e.query('select gen, count(*)::int as n from items group by gen order by gen')).toEqual([
      { gen: 'a', n: 100 },
      { gen: 'd', n: 1 },
    ]);
    await stopAndSync(e);
  });
});
