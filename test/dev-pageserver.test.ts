/**
 * The dev pageserver on real PostgreSQL 15: bootstrap, base backups (stock psql and
 * pg-copy-streams), stock Postgres computes started from them, WAL replay from safekeepers,
 * branching, bad input, restart durability, and the process entry point.
 *
 * The WAL source here is a small fake safekeeper HTTP server that serves the real WAL the test's
 * computes wrote (copied from their pg_wal after they stop) on the safekeepers' status and WAL
 * routes, so the pageserver is tested on real WAL independently of the dev safekeepers.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, promises as fsp, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import pg from 'pg';
import { to } from 'pg-copy-streams';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { findPostgres, pgBin } from '../common/pg-binaries';
import { chownForPostgres, pgSpawnIdentity } from '../common/pg-identity';
import { formatLsn, parseLsn } from '../model/lsn';
import { freePort } from '../dev/processes';
import { readControlFile, setControlState, parseControlFile, withState, DbState } from '../dev/storage/pg-control';
import { ImageStore } from '../dev/storage/pageserver/images';
import { startPageserver, type Pageserver } from '../dev/storage/pageserver/pageserver';
import { parseSegmentFileName, segmentFileName, DEFAULT_GEOMETRY } from '../dev/storage/pageserver/wal';
import { neonId } from './helpers/ids';
import { basebackupCommand, fetchBasebackupInto, startBareCompute, stopBareComputes, unpackTar, type BareCompute } from './helpers/bare-compute';
import { killAllProcesses, startProcess } from '../dev/child-processes';

const run = promisify(execFile);
const install = findPostgres({ pgBinDir: process.env.PG_BIN_DIR });
const TOKEN = 'dev-storage-token-123';
const G = DEFAULT_GEOMETRY;

// ---------------------------------------------------------------------------------------------
// Fake safekeepers: status + WAL routes over WAL copied from real computes.

interface FakeTimeline {
  flush: bigint;
  walDir: string;
}

interface FakeSafekeeper {
  url: string;
  timelines: Map<string, FakeTimeline>;
  corrupt: boolean;
  walRequests: string[];
  close(): Promise<void>;
}

async function readWal(walDir: string, start: bigint, end: bigint): Promise<Buffer> {
  const out = Buffer.alloc(Number(end - start));
  let at = start;
  while (at < end) {
    const seg = at / BigInt(G.segSize);
    const off = Number(at % BigInt(G.segSize));
    const take = Math.min(Number(end - at), G.segSize - off);
    const fh = await fsp.open(path.join(walDir, segmentFileName(seg, G)), 'r');
    try {
      await fh.read(out, Number(at - start), take, off);
    } finally {
      await fh.close();
    }
    at += BigInt(take);
  }
  return out;
}

async function startFakeSafekeeper(): Promise<FakeSafekeeper> {
  const sk: Omit<FakeSafekeeper, 'url' | 'close'> = { timelines: new Map(), corrupt: false, walRequests: [] };
  const server = http.createServer((req, res) => {
    void (async () => {
      const url = new URL(req.url ?? '/', 'http://sk');
      if (req.headers.authorization !== `Bearer ${TOKEN}`) {
        res.writeHead(401).end('{"msg":"bad token"}');
        return;
      }
      const m = /^\/v1\/tenant\/([0-9a-f]{32})\/timeline\/([0-9a-f]{32})(\/wal)?$/.exec(url.pathname);
      const tl = m ? sk.timelines.get(`${m[1]}/${m[2]}`) : undefined;
      if (!m || !tl) {
        res.writeHead(404).end('{"msg":"timeline not found"}');
        return;
      }
      if (!m[3]) {
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ flush_lsn: formatLsn(tl.flush), commit_lsn: formatLsn(tl.flush) }));
        return;
      }
      const start = parseLsn(url.searchParams.get('start') ?? '');
      const end = parseLsn(url.searchParams.get('end') ?? '');
      sk.walRequests.push(`${formatLsn(start)}..${formatLsn(end)}`);
      if (end > tl.flush || start > end) {
        res.writeHead(416).end('{"msg":"range not available"}');
        return;
      }
      const bytes = await readWal(tl.walDir, start, end);
      // Byte 4 of the first record (xl_xid) is covered by the record's CRC.
      if (sk.corrupt && bytes.length > 200 && start % 8192n !== 0n) bytes[4]! ^= 0x5a;
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': bytes.length }).end(bytes);
    })().catch((err: Error) => res.writeHead(500).end(JSON.stringify({ msg: err.message })));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  return Object.assign(sk, {
    url: `http://127.0.0.1:${port}`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  });
}

// ---------------------------------------------------------------------------------------------
// Base backups and stock Postgres computes.

async function pageClient(port: number, password = TOKEN): Promise<pg.Client> {
  const c = new pg.Client({ host: '127.0.0.1', port, user: 'cloud_admin', database: 'postgres', password, application_name: 'compute_ctl' });
  await c.connect();
  return c;
}

/** Stock PostgreSQL on an unpacked base backup; its WAL stays local until archiveWal copies it. */
const startCompute = (dir: string) => startBareCompute(dir, ['fsync = off', 'wal_level = replica']);

/** Copies a stopped compute's WAL segments into the fake safekeepers' archive (newer bytes win). */
async function archiveWal(compute: BareCompute, archive: string): Promise<void> {
  mkdirSync(archive, { recursive: true });
  for (const name of readdirSync(path.join(compute.pgdata, 'pg_wal'))) {
    if (parseSegmentFileName(name, G) !== undefined) await fsp.copyFile(path.join(compute.pgdata, 'pg_wal', name), path.join(archive, name));
  }
}

async function waldumpFirst(walDir: string, start: string): Promise<string> {
  const { stdout, stderr } = await run(pgBin(install, 'pg_waldump'), ['-p', walDir, '-s', start, '-n', '1']).catch(
    (e: { stdout: string; stderr: string }) => e,
  );
  return `${stdout}${stderr}`;
}

async function api(port: number, method: string, urlPath: string, body?: unknown, token: string | null = TOKEN) {
  const res = await fetch(`http://127.0.0.1:${port}${urlPath}`, {
    method,
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    ...(body !== undefined ? { body: typeof body === 'string' ? body : JSON.stringify(body) } : {}),
  });
  const text = await res.text();
  return { status: res.status, json: text ? (JSON.parse(text) as Record<string, unknown> & { msg?: string }) : {} };
}

async function expectPgError(client: pg.Client, sql: string, pattern: RegExp): Promise<void> {
  await expect(client.query(sql)).rejects.toThrow(pattern);
  // The session stays usable after the error.
  await expect(client.query(basebackupCommand('0'.repeat(32), '0'.repeat(32)))).rejects.toThrow(/not found/);
}

// ---------------------------------------------------------------------------------------------

describe('dev pageserver', () => {
  let root: string;
  let ps: Pageserver;
  let sks: FakeSafekeeper[];
  const logs: string[] = [];
  const tenant = neonId();
  const main = neonId();
  const branch = neonId();
  let initdbLsn: string;

  const start = async () =>
    startPageserver({
      dir: path.join(root, 'ps'),
      host: '127.0.0.1',
      pgPort: 0,
      httpPort: 0,
      safekeepers: sks.map((s) => s.url),
      authToken: TOKEN,
      // Well inside the test timeout: a stuck replay fails with the server log instead of a timeout.
      materializeTimeoutMs: 60_000,
      log: (l) => logs.push(l),
    });

  // What the pageserver did is the first thing to read when a test here fails.
  beforeEach(({ onTestFailed }) => {
    const from = logs.length;
    onTestFailed(() => console.log(`pageserver log during the test:\n${logs.slice(from).join('\n')}`));
  });

  beforeAll(async () => {
    root = mkdtempSync(path.join(os.tmpdir(), 'dc-ps-test-'));
    // PostgreSQL may run as another user (when the tests run as root): let it in.
    await fsp.chmod(root, 0o755);
    sks = await Promise.all([startFakeSafekeeper(), startFakeSafekeeper(), startFakeSafekeeper()]);
    ps = await start();
  });

  afterAll(async () => {
    await stopBareComputes();
    await ps?.close();
    await Promise.all((sks ?? []).map((s) => s.close()));
    await killAllProcesses();
    if (root) rmSync(root, { recursive: true, force: true });
    expect(logs.join('\n')).not.toContain(TOKEN);
  });

  it('bootstraps a timeline with Neon-shaped TimelineInfo, idempotently', async () => {
    const created = await api(ps.httpPort, 'POST', `/v1/tenant/${tenant}/timeline`, { new_timeline_id: main, pg_version: 15 });
    expect(created.json.msg).toBeUndefined();
    expect(created.status).toBe(201);
    const info = created.json;
    expect(info).toMatchObject({
      tenant_id: tenant,
      timeline_id: main,
      ancestor_timeline_id: null,
      ancestor_lsn: null,
      pg_version: 15,
      state: 'Active',
    });
    initdbLsn = info.initdb_lsn as string;
    expect(info.last_record_lsn).toBe(initdbLsn);
    expect(info.disk_consistent_lsn).toBe(initdbLsn);
    expect(info.remote_consistent_lsn).toBe(initdbLsn);
    expect(parseLsn(info.prev_record_lsn as string)).toBeLessThan(parseLsn(initdbLsn));

    // The same request again is fine; different parameters are a conflict.
    const again = await api(ps.httpPort, 'POST', `/v1/tenant/${tenant}/timeline`, { new_timeline_id: main, pg_version: 15 });
    expect(again.status).toBe(201);
    expect(again.json.initdb_lsn).toBe(initdbLsn);
    const conflict = await api(ps.httpPort, 'POST', `/v1/tenant/${tenant}/timeline`, { new_timeline_id: main, ancestor_timeline_id: neonId() });
    expect(conflict.status).toBe(409);
    expect(conflict.json.msg).toContain('already exists with different parameters');

    const list = await api(ps.httpPort, 'GET', `/v1/tenant/${tenant}/timeline`);
    expect(list.status).toBe(200);
    expect((list.json as unknown as { timeline_id: string }[]).map((t) => t.timeline_id)).toEqual([main]);
    const one = await api(ps.httpPort, 'GET', `/v1/tenant/${tenant}/timeline/${main}`);
    expect(one.json.last_record_lsn).toBe(initdbLsn);

    // The initdb image's pg_control agrees: a clean shutdown whose checkpoint is prev_record_lsn.
    const pgdata = path.join(root, 'ps', 'tenants', tenant, 'timelines', main, 'images', parseLsn(initdbLsn).toString(16).toUpperCase().padStart(16, '0'), 'pgdata');
    const control = readControlFile(pgdata);
    expect(control.stateName).toBe('shutDown');
    expect(formatLsn(control.checkPoint)).toBe(info.prev_record_lsn);
  });

  it('serves a fresh timeline base backup fast, and stock Postgres starts from it', async () => {
    // The pageserver's part: connect and stream the whole gzip'd tar.
    const fetchStarted = performance.now();
    const client = await pageClient(ps.pgPort);
    let fetched = 0;
    await pipeline(client.query(to(basebackupCommand(tenant, main))), new Writable({ write: (chunk: Buffer, _e, cb) => ((fetched += chunk.length), cb()) }));
    await client.end();
    const fetchMs = performance.now() - fetchStarted;

    // What a compute sees: fetch, gunzip and unpack into its PGDATA.
    const dir = path.join(root, 'fresh');
    const { names, connectMs, totalMs, bytes } = await fetchBasebackupInto({ port: ps.pgPort, password: TOKEN }, basebackupCommand(tenant, main), path.join(dir, 'pgdata'));
    expect(bytes).toBe(fetched);
    console.log(
      `fresh-timeline basebackup: ${(bytes / 1024 / 1024).toFixed(2)} MiB gzip'd; fetch ${fetchMs.toFixed(0)} ms; ` +
        `fetch+gunzip+unpack ${totalMs.toFixed(0)} ms (connect ${connectMs.toFixed(0)} ms)`,
    );
    expect(fetchMs).toBeLessThan(1000);
    expect(totalMs).toBeLessThan(5000);
    expect(names).not.toContain('postgresql.conf');
    expect(names).not.toContain('postmaster.pid');
    expect(names).not.toContain('postmaster.opts');
    expect(names).toEqual(expect.arrayContaining(['pg_hba.conf', 'pg_ident.conf', 'postgresql.auto.conf', 'PG_VERSION', 'global/pg_control', 'pg_wal/archive_status/', 'pg_tblspc/', 'pg_stat_tmp/', 'pg_replslot/']));

    const compute = await startCompute(dir);
    try {
      const rows = await compute.query<{ user: string; enc: string; lsn: string }>(
        "select current_user as user, pg_encoding_to_char(encoding) as enc, pg_current_wal_flush_lsn()::text as lsn from pg_database where datname = 'postgres'",
      );
      expect(rows[0]).toMatchObject({ user: 'cloud_admin', enc: 'UTF8' });
      // A compute started from the initdb image writes its WAL from initdb_lsn on.
      expect(parseLsn(rows[0]!.lsn)).toBeGreaterThanOrEqual(parseLsn(initdbLsn));
    } finally {
      await compute.stop('immediate');
    }
  });

  it('lets stock psql fetch the base backup as a plain tar', async () => {
    const { stdout } = await run(
      pgBin(install, 'psql'),
      ['-X', '-h', '127.0.0.1', '-p', String(ps.pgPort), '-U', 'cloud_admin', '-d', 'postgres', '-c', basebackupCommand(tenant, main, undefined, false)],
      { env: { ...process.env, PGPASSWORD: TOKEN }, encoding: 'buffer', maxBuffer: 512 * 1024 * 1024 },
    );
    const names = await unpackTar([Readable.from([stdout])], mkdtempSync(path.join(root, 'psql-')));
    expect(names).toContain('global/pg_control');
    expect(names).toContain('base/1/PG_VERSION');
    expect(names).not.toContain('postgresql.conf');
    // A plain tar ends with two 512-byte zero blocks.
    expect(stdout.length % 512).toBe(0);
    expect(stdout.subarray(stdout.length - 1024).every((b) => b === 0)).toBe(true);
  });

  // State shared by the WAL tests below.
  const archive = () => path.join(root, 'archive-main');
  let l1: string; // after row 1
  let l2: string; // after row 2 (end of the first compute's WAL as served)
  let l3: string; // after row 3, written by the second compute

  const serve = (i: number, timeline: string, flush: string | undefined, walDir = archive()) => {
    if (flush === undefined) sks[i]!.timelines.delete(`${tenant}/${timeline}`);
    else sks[i]!.timelines.set(`${tenant}/${timeline}`, { flush: parseLsn(flush), walDir });
  };

  it('replays safekeeper WAL into a base backup, and the next compute continues the WAL exactly there', async () => {
    // Compute 1 from the initdb image writes two rows.
    const dir1 = path.join(root, 'c1');
    await fetchBasebackupInto({ port: ps.pgPort, password: TOKEN }, basebackupCommand(tenant, main), path.join(dir1, 'pgdata'));
    const c1 = await startCompute(dir1);
    await c1.query('create table t (id int primary key, note text)');
    await c1.query("insert into t values (1, 'one')");
    l1 = (await c1.query<{ l: string }>('select pg_current_wal_flush_lsn()::text as l'))[0]!.l;
    await c1.query("insert into t values (2, 'two')");
    l2 = (await c1.query<{ l: string }>('select pg_current_wal_flush_lsn()::text as l'))[0]!.l;
    await c1.stop('fast');
    await archiveWal(c1, archive());

    // Quorum of 3: one safekeeper at l2, one at l1, one does not know the timeline → 2nd highest = l1.
    serve(0, main, l2);
    serve(1, main, l1);
    serve(2, main, undefined);
    expect((await api(ps.httpPort, 'GET', `/v1/tenant/${tenant}/timeline/${main}`)).json.last_record_lsn).toBe(l1);
    serve(2, main, l2);
    const info = (await api(ps.httpPort, 'GET', `/v1/tenant/${tenant}/timeline/${main}`)).json;
    expect(info.last_record_lsn).toBe(l2);
    expect(info.prev_record_lsn).toBeNull();

    // Base backup at the latest LSN (l2): rows 1 and 2.
    const dir2 = path.join(root, 'c2');
    const started = performance.now();
    await fetchBasebackupInto({ port: ps.pgPort, password: TOKEN }, basebackupCommand(tenant, main), path.join(dir2, 'pgdata'));
    console.log(`basebackup with WAL replay (materialization): ${(performance.now() - started).toFixed(0)} ms`);
    expect(sks.some((s) => s.walRequests.includes(`${initdbLsn}..${l2}`))).toBe(true);
    const control = readControlFile(path.join(dir2, 'pgdata'));
    expect(control.stateName).toBe('shutDownInRecovery');
    expect(formatLsn(control.minRecoveryPoint)).toBe(l2);

    const c2 = await startCompute(dir2);
    expect(await c2.query('select id, note from t order by id')).toEqual([
      { id: 1, note: 'one' },
      { id: 2, note: 'two' },
    ]);
    // Compute 2's first own record starts exactly at l2 (no gap, no skipped bytes).
    const first = await waldumpFirst(path.join(c2.pgdata, 'pg_wal'), l2);
    const v = parseLsn(l2);
    expect(first).toContain(`lsn: ${(v >> 32n).toString(16).toUpperCase()}/${(v & 0xffffffffn).toString(16).toUpperCase().padStart(8, '0')},`);
    expect(first).not.toMatch(/skipping over/);
    expect(first).toContain('CHECKPOINT');

    await c2.query("insert into t values (3, 'three')");
    l3 = (await c2.query<{ l: string }>('select pg_current_wal_flush_lsn()::text as l'))[0]!.l;
    await c2.stop('fast');
    await archiveWal(c2, archive());
    for (const i of [0, 1, 2]) serve(i, main, l3);

    // The image at l2 is the base for l3: only WAL from l2 is fetched, and it chains onto l2's history.
    const dir3 = path.join(root, 'c3');
    await fetchBasebackupInto({ port: ps.pgPort, password: TOKEN }, basebackupCommand(tenant, main, l3), path.join(dir3, 'pgdata'));
    expect(sks.some((s) => s.walRequests.includes(`${l2}..${l3}`))).toBe(true);
    const c3 = await startCompute(dir3);
    expect((await c3.query<{ id: number }>('select id from t order by id')).map((r) => r.id)).toEqual([1, 2, 3]);
    await c3.stop('immediate');

    const images = (await api(ps.httpPort, 'GET', `/v1/tenant/${tenant}/timeline/${main}`)).json.image_lsns;
    expect(images).toEqual([initdbLsn, l2, l3]);
    console.log(logs.filter((l) => l.startsWith('materialized')).join('\n'));
  });

  it('serves older LSNs of a timeline, snapping an LSN inside a record to the record before', async () => {
    const dir = path.join(root, 'c-old');
    // l1 + 1 lies inside the next record: same state as at l1.
    const inside = formatLsn(parseLsn(l1) + 1n);
    await fetchBasebackupInto({ port: ps.pgPort, password: TOKEN }, basebackupCommand(tenant, main, inside), path.join(dir, 'pgdata'));
    expect(formatLsn(readControlFile(path.join(dir, 'pgdata')).minRecoveryPoint)).toBe(l1);
    const c = await startCompute(dir);
    expect((await c.query<{ id: number }>('select id from t order by id')).map((r) => r.id)).toEqual([1]);
    await c.stop('immediate');
  });

  it('branches at an older LSN; the branch shows the older state and has its own history', async () => {
    const created = await api(ps.httpPort, 'POST', `/v1/tenant/${tenant}/timeline`, {
      new_timeline_id: branch,
      ancestor_timeline_id: main,
      ancestor_start_lsn: l1,
    });
    expect(created.status).toBe(201);
    expect(created.json).toMatchObject({ ancestor_timeline_id: main, ancestor_lsn: l1, last_record_lsn: l1, initdb_lsn: initdbLsn });
    const again = await api(ps.httpPort, 'POST', `/v1/tenant/${tenant}/timeline`, {
      new_timeline_id: branch,
      ancestor_timeline_id: main,
      ancestor_start_lsn: l1,
    });
    expect(again.status).toBe(201);
    const different = await api(ps.httpPort, 'POST', `/v1/tenant/${tenant}/timeline`, {
      new_timeline_id: branch,
      ancestor_timeline_id: main,
      ancestor_start_lsn: l2,
    });
    expect(different.status).toBe(409);

    const dir = path.join(root, 'c-branch');
    await fetchBasebackupInto({ port: ps.pgPort, password: TOKEN }, basebackupCommand(tenant, branch), path.join(dir, 'pgdata'));
    const c = await startCompute(dir);
    expect((await c.query<{ id: number }>('select id from t order by id')).map((r) => r.id)).toEqual([1]);
    await c.query("insert into t values (10, 'branch only')");
    const bl = (await c.query<{ l: string }>('select pg_current_wal_flush_lsn()::text as l'))[0]!.l;
    await c.stop('fast');
    const branchArchive = path.join(root, 'archive-branch');
    await archiveWal(c, branchArchive);
    for (const i of [0, 1]) serve(i, branch, bl, branchArchive);
    expect((await api(ps.httpPort, 'GET', `/v1/tenant/${tenant}/timeline/${branch}`)).json.last_record_lsn).toBe(bl);

    const dir2 = path.join(root, 'c-branch-2');
    await fetchBasebackupInto({ port: ps.pgPort, password: TOKEN }, basebackupCommand(tenant, branch), path.join(dir2, 'pgdata'));
    const c2 = await startCompute(dir2);
    expect((await c2.query<{ id: number }>('select id from t order by id')).map((r) => r.id)).toEqual([1, 10]);
    await c2.stop('immediate');

    // The parent is untouched.
    const dir3 = path.join(root, 'c-main-after-branch');
    await fetchBasebackupInto({ port: ps.pgPort, password: TOKEN }, basebackupCommand(tenant, main), path.join(dir3, 'pgdata'));
    const c3 = await startCompute(dir3);
    expect((await c3.query<{ id: number }>('select id from t order by id')).map((r) => r.id)).toEqual([1, 2, 3]);
    await c3.stop('immediate');

    // A parent with children cannot be deleted.
    const refused = await api(ps.httpPort, 'DELETE', `/v1/tenant/${tenant}/timeline/${main}`);
    expect(refused.status).toBe(412);
    expect(refused.json.msg).toContain(branch);
  });

  it('refuses WAL that does not check out instead of serving a wrong state', async () => {
    const corruptTimeline = neonId();
    const created = await api(ps.httpPort, 'POST', `/v1/tenant/${tenant}/timeline`, { new_timeline_id: corruptTimeline, ancestor_timeline_id: main, ancestor_start_lsn: initdbLsn });
    expect(created.status).toBe(201);
    expect(created.json.ancestor_lsn).toBe(initdbLsn);
    // Serve main's WAL as if it were this timeline's, with one byte flipped.
    for (const s of sks) s.corrupt = true;
    for (const i of [0, 1, 2]) serve(i, corruptTimeline, l2);
    const client = await pageClient(ps.pgPort);
    try {
      await expect(client.query(basebackupCommand(tenant, corruptTimeline))).rejects.toThrow(/not usable|CRC|invalid|xl_prev/);
      for (const s of sks) s.corrupt = false;
      // Uncorrupted, main's WAL continues from the same initdb image, so the branch replays it fine.
      const res = await client.query(basebackupCommand(tenant, corruptTimeline, l1, false));
      expect(res.command).toBe('COPY');
    } finally {
      for (const s of sks) s.corrupt = false;
      await client.end();
    }
    expect((await api(ps.httpPort, 'DELETE', `/v1/tenant/${tenant}/timeline/${corruptTimeline}`)).status).toBe(202);
  });

  it('answers bad management requests with clear errors', async () => {
    const p = ps.httpPort;
    const bad = 'NOT-A-VALID-ID';
    let r = await api(p, 'GET', `/v1/tenant/${bad}/timeline`);
    expect(r.status).toBe(400);
    expect(r.json.msg).toContain(bad);
    r = await api(p, 'GET', `/v1/tenant/${tenant}/timeline/${'A'.repeat(32)}`);
    expect(r.status).toBe(400);
    expect(r.json.msg).toContain('A'.repeat(32));
    r = await api(p, 'GET', `/v1/tenant/${neonId()}/timeline`);
    expect(r.status).toBe(404);
    r = await api(p, 'GET', `/v1/tenant/${tenant}/timeline/${neonId()}`);
    expect(r.status).toBe(404);
    r = await api(p, 'DELETE', `/v1/tenant/${tenant}/timeline/${neonId()}`);
    expect(r.status).toBe(404);
    r = await api(p, 'POST', `/v1/tenant/${tenant}/timeline`, '{"new_timeline_id": ');
    expect(r.status).toBe(400);
    expect(r.json.msg).toContain('not valid JSON');
    r = await api(p, 'POST', `/v1/tenant/${tenant}/timeline`, { new_timeline_id: 'xyz' });
    expect(r.status).toBe(400);
    expect(r.json.msg).toContain('"xyz"');
    r = await api(p, 'POST', `/v1/tenant/${tenant}/timeline`, { new_timeline_id: neonId(), pg_version: 14 });
    expect(r.status).toBe(400);
    expect(r.json.msg).toContain('pg_version');
    r = await api(p, 'POST', `/v1/tenant/${tenant}/timeline`, { new_timeline_id: neonId(), ancestor_timeline_id: main, ancestor_start_lsn: '12345' });
    expect(r.status).toBe(400);
    expect(r.json.msg).toContain('"12345"');
    r = await api(p, 'POST', `/v1/tenant/${tenant}/timeline`, { new_timeline_id: neonId(), ancestor_timeline_id: main, ancestor_start_lsn: 'FF/0' });
    expect(r.status).toBe(400);
    expect(r.json.msg).toContain('beyond the last record LSN');
    r = await api(p, 'POST', `/v1/tenant/${tenant}/timeline`, { new_timeline_id: neonId(), ancestor_timeline_id: main, ancestor_start_lsn: '0/10' });
    expect(r.status).toBe(400);
    expect(r.json.msg).toContain('before the start');
    r = await api(p, 'POST', `/v1/tenant/${tenant}/timeline`, { new_timeline_id: neonId(), ancestor_timeline_id: neonId() });
    expect(r.status).toBe(404);
    r = await api(p, 'POST', `/v1/tenant/${tenant}/timeline`, {
      new_timeline_id: neonId(),
      import_pgdata: { idempotency_key: 'k', location: { AwsS3: { region: 'us-east-1', bucket: 'b', key: 'k' } } },
    });
    expect(r.status).toBe(501);
    expect(r.json.msg).toBe('import_pgdata is not implemented yet');
    r = await api(p, 'POST', `/v1/tenant/${tenant}/timeline`, JSON.stringify({ new_timeline_id: neonId(), pad: 'x'.repeat(2 * 1024 * 1024) }));
    expect(r.status).toBe(413);
    r = await api(p, 'GET', `/v1/tenant/${tenant}/timeline`, undefined, null);
    expect(r.status).toBe(401);
    r = await api(p, 'GET', `/v1/tenant/${tenant}/timeline`, undefined, 'wrong-token');
    expect(r.status).toBe(401);
    r = await api(p, 'PATCH', `/v1/tenant/${tenant}/timeline`);
    expect(r.status).toBe(405);
    r = await api(p, 'GET', `/v2/whatever`);
    expect(r.status).toBe(404);
    // The server is still fine.
    expect((await api(p, 'GET', `/v1/tenant/${tenant}/timeline/${main}`)).status).toBe(200);
  });

  it('answers bad page service commands with errors and keeps the connection usable', async () => {
    const client = await pageClient(ps.pgPort);
    try {
      await expectPgError(client, basebackupCommand(tenant, neonId()), /timeline .* not found/);
      await expectPgError(client, basebackupCommand('xyz', main), /invalid tenant_id "xyz"/);
      await expectPgError(client, basebackupCommand(tenant, 'ABC'), /invalid timeline_id "ABC"/);
      await expectPgError(client, basebackupCommand(tenant, main, 'zz/zz'), /invalid LSN "zz\/zz"/);
      await expectPgError(client, basebackupCommand(tenant, main, 'FF/0'), /beyond the last record LSN/);
      await expectPgError(client, basebackupCommand(tenant, main, '0/10'), /before the start/);
      await expectPgError(client, `basebackup ${tenant}`, /usage: basebackup/);
      await expectPgError(client, `basebackup ${tenant} ${main} --bogus`, /unknown option --bogus/);
      await expectPgError(client, 'select 1', /unsupported command/);
      // And a real request still works on the same connection.
      const ok = await client.query(`lease lsn ${tenant} ${main} ${l1}`);
      expect(Number(ok.rows[0].valid_until)).toBeGreaterThan(Date.now());
    } finally {
      await client.end();
    }
    await expect(pageClient(ps.pgPort, 'wrong')).rejects.toMatchObject({ code: '28P01' });
  });

  it('keeps timelines and images across a restart; deletes leaves first', async () => {
    await ps.close();
    ps = await start();
    const info = (await api(ps.httpPort, 'GET', `/v1/tenant/${tenant}/timeline/${main}`)).json;
    expect(info.image_lsns).toEqual(expect.arrayContaining([initdbLsn, l1, l2, l3]));
    // Cached images come straight from disk: no WAL fetched.
    const before = sks.reduce((n, s) => n + s.walRequests.length, 0);
    const dir = path.join(root, 'c-after-restart');
    await fetchBasebackupInto({ port: ps.pgPort, password: TOKEN }, basebackupCommand(tenant, main, l2), path.join(dir, 'pgdata'));
    expect(sks.reduce((n, s) => n + s.walRequests.length, 0)).toBe(before);
    const c = await startCompute(dir);
    expect((await c.query<{ id: number }>('select id from t order by id')).map((r) => r.id)).toEqual([1, 2]);
    await c.stop('immediate');

    // Neon's do_gc with its default horizon (64 MiB, far more WAL than this timeline has): the
    // cutoff stays at the start; the first and the newest image stay, and l1's, which the page
    // service test above leased (10 minutes). A state in between is rebuilt from the nearest
    // image below it and the safekeepers' WAL, and is the same state as before.
    const gc = await api(ps.httpPort, 'PUT', `/v1/tenant/${tenant}/timeline/${main}/do_gc`, {});
    expect(gc.status).toBe(200);
    expect(gc.json).toMatchObject({ layers_total: 4, layers_removed: 1, gc_cutoff_lsn: initdbLsn });
    expect((await api(ps.httpPort, 'GET', `/v1/tenant/${tenant}/timeline/${main}`)).json.image_lsns).toEqual([initdbLsn, l1, l3]);
    const rebuilt = path.join(root, 'c-after-gc');
    await fetchBasebackupInto({ port: ps.pgPort, password: TOKEN }, basebackupCommand(tenant, main, l2), path.join(rebuilt, 'pgdata'));
    expect(sks.some((s) => s.walRequests.slice(-3).includes(`${l1}..${l2}`))).toBe(true);
    const cg = await startCompute(rebuilt);
    expect(await cg.query('select id, note from t order by id')).toEqual([
      { id: 1, note: 'one' },
      { id: 2, note: 'two' },
    ]);
    await cg.stop('immediate');
    expect((await api(ps.httpPort, 'PUT', `/v1/tenant/${tenant}/timeline/${neonId()}/do_gc`, {})).status).toBe(404);

    expect((await api(ps.httpPort, 'DELETE', `/v1/tenant/${tenant}/timeline/${branch}`)).status).toBe(202);
    expect((await api(ps.httpPort, 'GET', `/v1/tenant/${tenant}/timeline/${branch}`)).status).toBe(404);
    expect((await api(ps.httpPort, 'DELETE', `/v1/tenant/${tenant}/timeline/${main}`)).status).toBe(202);
    expect((await api(ps.httpPort, 'GET', `/v1/tenant/${tenant}/timeline`)).json).toEqual([]);
  });
});

describe('image retention', () => {
  it('keeps the first image, the newest ones and young ones; deletes the rest whole', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'dc-ps-gc-'));
    try {
      const store = new ImageStore(dir);
      const now = Date.parse('2026-11-22T12:00:00Z');
      const ages = [3600, 3600, 10, 3600, 3600, 3600]; // seconds; the third is younger than the grace period
      for (const [i, age] of ages.entries()) {
        const lsn = BigInt(0x1000 * (i + 1));
        mkdirSync(path.join(store.imageDir(lsn), 'pgdata', 'base'), { recursive: true });
        writeFileSync(path.join(store.imageDir(lsn), 'pgdata', 'base', 'f'), 'x');
        writeFileSync(path.join(store.imageDir(lsn), 'image.json'), JSON.stringify({ lsn: formatLsn(lsn), created_at: new Date(now - age * 1000).toISOString() }));
      }
      const lsns = async () => (await store.list()).map((i) => i.lsn);
      const removed = await store.prune({ keepNewest: 2, graceMs: 60_000 }, now);
      expect(removed.map((i) => i.lsn)).toEqual(['0/2000', '0/4000']);
      expect(await lsns()).toEqual(['0/1000', '0/3000', '0/5000', '0/6000']);
      expect(readdirSync(store.dir).filter((n) => n.startsWith('.'))).toEqual([]);
      await store.prune({ keepNewest: 1, graceMs: 0 }, now);
      expect(await lsns()).toEqual(['0/1000', '0/6000']);
      expect(await store.prune({ keepNewest: 0, graceMs: 0 }, now)).toEqual([]);
      expect(await lsns()).toEqual(['0/1000', '0/6000']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('base backups packed per request (images above the precompute limit)', () => {
  it('serves the same data directory, gzip\'d or plain, with no tarball kept, and pins the image while streaming', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'dc-ps-packed-'));
    await fsp.chmod(dir, 0o755);
    const packed = await startPageserver({ dir: path.join(dir, 'ps'), host: '127.0.0.1', pgPort: 0, httpPort: 0, safekeepers: [], precomputeLimitBytes: 0, log: () => {} });
    try {
      const tenant = neonId();
      const timeline = neonId();
      expect((await api(packed.httpPort, 'POST', `/v1/tenant/${tenant}/timeline`, { new_timeline_id: timeline, pg_version: 15 }, null)).status).toBe(201);
      const [image] = await new ImageStore(path.join(dir, 'ps', 'tenants', tenant, 'timelines', timeline)).list();
      expect(image).toMatchObject({ precomputed_basebackup: false, source: 'initdb' });
      expect(readdirSync(path.join(dir, 'ps', 'tenants', tenant, 'timelines', timeline, 'images', readdirSync(path.join(dir, 'ps', 'tenants', tenant, 'timelines', timeline, 'images'))[0]!))).not.toContain('basebackup.tar.gz');

      // gzip'd, through the same client as a compute; stock Postgres starts from it.
      const c = path.join(dir, 'c');
      const { names } = await fetchBasebackupInto({ port: packed.pgPort }, basebackupCommand(tenant, timeline), path.join(c, 'pgdata'));
      expect(names).toEqual(expect.arrayContaining(['global/pg_control', 'PG_VERSION', 'pg_wal/archive_status/']));
      expect(names).not.toContain('postgresql.conf');
      const compute = await startCompute(c);
      expect((await compute.query<{ user: string }>('select current_user as user'))[0]).toEqual({ user: 'cloud_admin' });
      await compute.stop('immediate');

      // Plain tar through stock psql: the same entries.
      const { stdout } = await run(
        pgBin(install, 'psql'),
        ['-h', '127.0.0.1', '-p', String(packed.pgPort), '-U', 'cloud_admin', '-X', '-A', '-t', '-q', '-c', basebackupCommand(tenant, timeline, undefined, false)],
        { encoding: 'buffer', maxBuffer: 256 * 1024 * 1024 },
      );
      expect((await unpackTar([Readable.from([stdout])], mkdtempSync(path.join(dir, 'plain-')))).sort()).toEqual([...names].sort());

      // While a stream is open the image is pinned; once it ends, the pin is gone.
      const client = await pageClient(packed.pgPort, '');
      const stream = client.query(to(basebackupCommand(tenant, timeline)));
      await new Promise((resolve) => stream.once('data', resolve));
      stream.pause();
      const gc = packed.service.gc;
      expect(gc.pinnedImages()).toEqual([`${tenant}/${timeline}@${image!.lsn}`]);
      stream.resume();
      await pipeline(stream, new Writable({ write: (_c: Buffer, _e, cb) => cb() }));
      await client.end();
      expect(gc.pinnedImages()).toEqual([]);
    } finally {
      await packed.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('pg_control', () => {
  it('reads what pg_controldata reads, and patches the state with a valid CRC', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'dc-pgc-'));
    try {
      chownForPostgres(dir);
      await run(pgBin(install, 'initdb'), ['-D', path.join(dir, 'd'), '-U', 'x', '--no-sync', '--no-instructions'], pgSpawnIdentity());
      const pgdata = path.join(dir, 'd');
      const { stdout } = await run(pgBin(install, 'pg_controldata'), [pgdata], { env: { ...process.env, LC_ALL: 'C' } });
      const field = (name: string) => new RegExp(`^${name}:\\s+(.*)$`, 'm').exec(stdout)![1]!.trim();
      const c = readControlFile(pgdata);
      expect(formatLsn(c.checkPoint)).toBe(field('Latest checkpoint location'));
      expect(formatLsn(c.redo)).toBe(field("Latest checkpoint's REDO location"));
      expect(String(c.systemIdentifier)).toBe(field('Database system identifier'));
      expect(String(c.xlogSegSize)).toBe(field('Bytes per WAL segment'));
      expect(String(c.maxConnections)).toBe(field('max_connections setting'));
      expect(c.stateName).toBe('shutDown');
      expect(c.crcOffset).toBe(288);

      setControlState(pgdata, 'inProduction');
      const after = await run(pgBin(install, 'pg_controldata'), [pgdata], { env: { ...process.env, LC_ALL: 'C' } });
      expect(after.stdout).toMatch(/Database cluster state:\s+in production/);
      expect(after.stderr).not.toMatch(/CRC/i);
      expect(readControlFile(pgdata).state).toBe(DbState.inProduction);

      const raw = readFileSync(path.join(pgdata, 'global', 'pg_control'));
      expect(parseControlFile(withState(raw, 'shutDown')).stateName).toBe('shutDown');
      const broken = Buffer.from(raw);
      broken[40]! ^= 0xff;
      expect(() => parseControlFile(broken)).toThrow(/CRC/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('pageserver process', () => {
  it('prints ready, serves both listeners, and stops gracefully on SIGTERM', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'dc-ps-proc-'));
    try {
      // A --dir PostgreSQL's user cannot enter (root with a private temp dir): images are built
      // where it can work and moved into place.
      if (process.getuid?.() === 0) {
        const [p1, p2] = [await freePort(), await freePort()];
        const locked = await startProcess('dev/storage/pageserver/main.ts', ['--dir', path.join(dir, 'x'), '--pg-port', String(p1), '--http-port', String(p2)], {
          readyLine: /pageserver ready/,
          timeoutMs: 60_000,
        });
        expect(locked.output()).toMatch(/note: PostgreSQL runs as user \S+, which cannot enter/);
        const res = await fetch(`http://127.0.0.1:${p2}/v1/tenant/${neonId()}/timeline`, { method: 'POST', body: JSON.stringify({ new_timeline_id: neonId() }) });
        expect(res.status).toBe(201);
        await locked.kill('SIGTERM');
      }
      await fsp.chmod(dir, 0o755);
      const [pgPort, httpPort] = [await freePort(), await freePort()];
      const proc = await startProcess(
        'dev/storage/pageserver/main.ts',
        ['--dir', dir, '--pg-port', String(pgPort), '--http-port', String(httpPort), '--host', '127.0.0.1', '--safekeepers', 'http://127.0.0.1:9'],
        { readyLine: /pageserver ready/, timeoutMs: 60_000 },
      );
      const tl = neonId();
      const t = neonId();
      const res = await fetch(`http://127.0.0.1:${httpPort}/v1/tenant/${t}/timeline`, { method: 'POST', body: JSON.stringify({ new_timeline_id: tl }) });
      expect(res.status).toBe(201);
      const c = new pg.Client({ host: '127.0.0.1', port: pgPort, user: 'cloud_admin', database: 'postgres' });
      await c.connect();
      const sink = createHash('sha256');
      await pipeline(c.query(to(`basebackup ${t} ${tl} --gzip`)), new Writable({ write: (chunk: Buffer, _e, cb) => (sink.update(chunk), cb()) }));
      await c.end();
      proc.child.kill('SIGTERM');
      const exit = await proc.exited;
      expect(exit.code).toBe(0);
      expect(proc.output()).toContain('pageserver stopping (SIGTERM)');

      // Bad arguments are a clear error, not a crash.
      await expect(startProcess('dev/storage/pageserver/main.ts', ['--dir', dir, '--pg-port', 'x', '--http-port', '1'], { readyLine: /pageserver ready/, timeoutMs: 30_000 })).rejects.toThrow(
        /--pg-port must be a port number/,
      );
    } finally {
      await killAllProcesses();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
