/**
 * The dev safekeeper as a real process: HTTP and libpq status, timeline creation, WAL push with
 * fsync'd acknowledgements, truncation by a newer push, the raw WAL route, persistence across a
 * restart, terms, auth, and hostile push frames that must only break their own session.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatLsn, parseLsn } from '../model/lsn';
import { PgClientError, PgConnection } from '../drivers/storage-backend/stock/pg-client';
import { elect, fetchStatus, PushSession, readWal, type SafekeeperTarget } from '../drivers/storage-backend/stock/safekeeper-client';
import { encodeWalFrame, startWalPushCommand } from '../drivers/storage-backend/stock/safekeeper-protocol';
import { freePort } from '../dev/processes';
import { neonId } from './helpers/ids';
import { killAllProcesses, startProcess, type WorkerProcess } from '../dev/child-processes';

const SK_MAIN = 'dev/storage/safekeeper/main.ts';

interface Sk {
  proc: WorkerProcess;
  pgPort: number;
  httpPort: number;
  dir: string;
  args: string[];
}

async function startSk(dir: string, extra: string[] = [], ports?: { pg: number; http: number }): Promise<Sk> {
  const pgPort = ports?.pg ?? (await freePort());
  const httpPort = ports?.http ?? (await freePort());
  const args = ['--id', '1', '--dir', dir, '--pg-port', String(pgPort), '--http-port', String(httpPort), '--host', '127.0.0.1', ...extra];
  const proc = await startProcess(SK_MAIN, args, { readyLine: /safekeeper ready/, timeoutMs: 60_000 });
  return { proc, pgPort, httpPort, dir, args };
}

async function restart(sk: Sk): Promise<Sk> {
  await sk.proc.kill('SIGTERM');
  const proc = await startProcess(SK_MAIN, sk.args, { readyLine: /safekeeper ready/, timeoutMs: 60_000 });
  return { ...sk, proc };
}

function tgt(sk: Sk, tenantId: string, timelineId: string, authToken?: string): SafekeeperTarget {
  return { address: `127.0.0.1:${sk.pgPort}`, tenantId, timelineId, ...(authToken ? { authToken } : {}) };
}

async function http(sk: Sk, pathname: string, init: RequestInit = {}): Promise<Response> {
  return fetch(`http://127.0.0.1:${sk.httpPort}${pathname}`, { ...init, signal: AbortSignal.timeout(10_000) });
}

async function createTimeline(sk: Sk, tenantId: string, timelineId: string, startLsn: string): Promise<Response> {
  return http(sk, '/v1/tenant/timeline', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ tenant_id: tenantId, timeline_id: timelineId, start_lsn: startLsn, pg_version: 15 }),
  });
}

async function collect(gen: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of gen) parts.push(c);
  return Buffer.concat(parts);
}

let root: string;
let sk: Sk;

beforeAll(async () => {
  root = mkdtempSync(path.join(os.tmpdir(), 'dc-sk-'));
  sk = await startSk(path.join(root, 'sk1'));
});

afterAll(async () => {
  await killAllProcesses();
  rmSync(root, { recursive: true, force: true });
});

describe('dev safekeeper', () => {
  it('answers 404 for an unknown timeline, 400 for bad IDs, and no row over libpq', async () => {
    const t = neonId();
    const tl = neonId();
    const res = await http(sk, `/v1/tenant/${t}/timeline/${tl}`);
    expect(res.status).toBe(404);
    expect(((await res.json()) as { msg: string }).msg).toMatch(/not found/);

    const bad = await http(sk, `/v1/tenant/not-an-id/timeline/${tl}`);
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { msg: string }).msg).toMatch(/invalid tenant_id/);
    expect((await http(sk, `/v1/tenant/${t}/timeline/${tl.toUpperCase()}`)).status).toBe(400);
    expect((await http(sk, `/v1/tenant/${t}/timeline/${tl}/wal?start=0/0&end=zz`)).status).toBe(400);

    // A stock libpq client with the IDs in the startup options, as Neon's compute_ctl asks.
    const client = new pg.Client({
      host: '127.0.0.1',
      port: sk.pgPort,
      user: 'cloud_admin',
      database: 'postgres',
      options: `-c tenant_id=${t} -c timeline_id=${tl}`,
    });
    await client.connect();
    try {
      const r = await client.query('TIMELINE_STATUS');
      expect(r.rows).toEqual([]);
      await expect(client.query(`TIMELINE_STATUS ${t} xyz`)).rejects.toThrow(/invalid timeline_id/);
      await expect(client.query('DROP TABLE x')).rejects.toThrow(/unsupported command/);
      // The session survives errors.
      expect((await client.query(`TIMELINE_STATUS ${t} ${tl}`)).rows).toEqual([]);
    } finally {
      await client.end();
    }
  });

  it('creates timelines idempotently and reports Neon-shaped status', async () => {
    const t = neonId();
    const tl = neonId();
    const created = await createTimeline(sk, t, tl, '0/1696628');
    expect(created.status).toBe(201);
    expect((await createTimeline(sk, t, tl, '0/1696628')).status).toBe(200);
    expect((await createTimeline(sk, t, tl, '0/2000000')).status).toBe(409);
    expect((await createTimeline(sk, t, 'nope', '0/2000000')).status).toBe(400);
    const status = (await (await http(sk, `/v1/tenant/${t}/timeline/${tl}`)).json()) as Record<string, unknown>;
    expect(status).toMatchObject({
      tenant_id: t,
      timeline_id: tl,
      commit_lsn: '0/1696628',
      flush_lsn: '0/1696628',
      timeline_start_lsn: '0/1696628',
      backup_lsn: '0/1696628',
      remote_consistent_lsn: '0/0',
      peer_horizon_lsn: '0/1696628',
    });
    const libpq = await fetchStatus(tgt(sk, t, tl));
    expect(libpq).toMatchObject({ flushLsn: parseLsn('0/1696628'), commitLsn: parseLsn('0/1696628'), term: 0n });
  });

  it('stores pushed WAL across a segment boundary, serves it exactly, and keeps it over a restart', async () => {
    const t = neonId();
    const tl = neonId();
    const start = parseLsn('0/FF0000'); // 64 KiB before the 16 MiB segment boundary
    expect((await createTimeline(sk, t, tl, formatLsn(start))).status).toBe(201);
    const vote = await elect(tgt(sk, t, tl), 1n);
    expect(vote.accepted).toBe(true);
    expect((await elect(tgt(sk, t, tl), 1n)).accepted).toBe(false); // a term is granted once

    const wal = randomBytes(200 * 1024);
    const session = await PushSession.open(tgt(sk, t, tl), 1n, start, [
      { term: 0n, lsn: start },
      { term: 1n, lsn: start },
    ]);
    await session.sendWal(start, wal, start + 1000n);
    const end = start + BigInt(wal.length);
    await session.waitUntil((s) => s.flushLsn === end, 20_000, 'flush');
    expect(session.commitLsn).toBe(start + 1000n);
    await session.sendCommit(end);
    await session.waitUntil((s) => s.commitLsn === end, 20_000, 'commit');
    await session.finish();

    const res = await http(sk, `/v1/tenant/${t}/timeline/${tl}/wal?start=${formatLsn(start)}&end=${formatLsn(end)}`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/octet-stream');
    expect(Buffer.from(await res.arrayBuffer()).equals(wal)).toBe(true);
    const mid = start + 70_000n;
    const partial = await http(sk, `/v1/tenant/${t}/timeline/${tl}/wal?start=${formatLsn(mid)}&end=${formatLsn(mid + 1000n)}`);
    expect(Buffer.from(await partial.arrayBuffer()).equals(wal.subarray(70_000, 71_000))).toBe(true);
    expect((await http(sk, `/v1/tenant/${t}/timeline/${tl}/wal?start=${formatLsn(start)}&end=${formatLsn(end + 1n)}`)).status).toBe(416);
    expect((await http(sk, `/v1/tenant/${t}/timeline/${tl}/wal?start=${formatLsn(start - 8n)}&end=${formatLsn(end)}`)).status).toBe(416);
    expect((await collect(readWal(tgt(sk, t, tl), start, end))).equals(wal)).toBe(true);

    sk = await restart(sk);
    const after = (await (await http(sk, `/v1/tenant/${t}/timeline/${tl}`)).json()) as Record<string, unknown>;
    expect(after).toMatchObject({ flush_lsn: formatLsn(end), commit_lsn: formatLsn(end) });
    expect(after.acceptor_state).toMatchObject({ term: 1, epoch: 1 });
    const again = await http(sk, `/v1/tenant/${t}/timeline/${tl}/wal?start=${formatLsn(start)}&end=${formatLsn(end)}`);
    expect(Buffer.from(await again.arrayBuffer()).equals(wal)).toBe(true);
  });

  it('truncates at the start of a newer push, refuses older terms and committed WAL', async () => {
    const t = neonId();
    const tl = neonId();
    const start = parseLsn('0/3000028');
    expect((await createTimeline(sk, t, tl, formatLsn(start))).status).toBe(201);
    const h1 = [
      { term: 0n, lsn: start },
      { term: 1n, lsn: start },
    ];
    const s1 = await PushSession.open(tgt(sk, t, tl), 1n, start, h1);
    const wal = randomBytes(4096);
    await s1.sendWal(start, wal, start);
    await s1.waitUntil((s) => s.flushLsn === start + 4096n, 20_000, 'flush');
    await s1.finish();

    // Term 2 takes over at start+1000: the tail is gone.
    expect((await elect(tgt(sk, t, tl), 2n)).accepted).toBe(true);
    await expect(PushSession.open(tgt(sk, t, tl), 1n, start + 4096n, h1)).rejects.toMatchObject({ code: 'SK001' });
    const cut = start + 1000n;
    const h2 = [...h1, { term: 2n, lsn: cut }];
    const s2 = await PushSession.open(tgt(sk, t, tl), 2n, cut, h2);
    expect(s2.flushLsn).toBe(cut);
    const status = await fetchStatus(tgt(sk, t, tl));
    expect(status?.flushLsn).toBe(cut);
    expect((await http(sk, `/v1/tenant/${t}/timeline/${tl}/wal?start=${formatLsn(start)}&end=${formatLsn(cut + 1n)}`)).status).toBe(416);
    const kept = await http(sk, `/v1/tenant/${t}/timeline/${tl}/wal?start=${formatLsn(start)}&end=${formatLsn(cut)}`);
    expect(Buffer.from(await kept.arrayBuffer()).equals(wal.subarray(0, 1000))).toBe(true);
    const more = randomBytes(500);
    await s2.sendWal(cut, more, cut + 500n);
    await s2.waitUntil((s) => s.commitLsn === cut + 500n, 20_000, 'commit');
    await s2.finish();

    // A push may not start below commit_lsn, nor leave a gap.
    await expect(PushSession.open(tgt(sk, t, tl), 2n, cut + 100n, h2)).rejects.toThrow(/refusing to truncate committed WAL/);
    await expect(PushSession.open(tgt(sk, t, tl), 2n, cut + 600n, h2)).rejects.toThrow(/gap/);
  });

  it('rejects malformed push frames in that session only', async () => {
    const t = neonId();
    const tl = neonId();
    const other = neonId();
    const start = parseLsn('0/5000000');
    expect((await createTimeline(sk, t, tl, formatLsn(start))).status).toBe(201);
    expect((await createTimeline(sk, t, other, formatLsn(start))).status).toBe(201);
    const h = [
      { term: 0n, lsn: start },
      { term: 1n, lsn: start },
    ];
    // A healthy session on another timeline stays open throughout.
    const healthy = await PushSession.open(tgt(sk, t, other), 1n, start, h);

    const hostile = async (frame: Buffer): Promise<string> => {
      const conn = await PgConnection.connect({ host: '127.0.0.1', port: sk.pgPort, user: 'x', database: 'postgres' });
      try {
        const copy = await conn.copyBoth(startWalPushCommand(t, tl, 1n, start, h));
        await copy.send(frame);
        const err = await (async () => {
          try {
            for await (const _ of copy.incoming) {
              /* the first feedback frame, then the error */
            }
            return 'no error';
          } catch (e) {
            return (e as Error).message;
          }
        })();
        return err;
      } finally {
        conn.destroy();
      }
    };
    expect(await hostile(Buffer.from([0x01, 0x02]))).toMatch(/malformed push frame: unknown push frame tag/);
    expect(await hostile(Buffer.alloc(0))).toMatch(/malformed push frame: empty/);
    expect(await hostile(Buffer.from([0x77, 1, 2, 3]))).toMatch(/malformed push frame/);
    expect(await hostile(encodeWalFrame(start + 8n, start, Buffer.from('gap')))).toMatch(/starts at .* but this safekeeper's WAL ends at/);
    expect(await hostile(Buffer.from([0x63, 0, 0]))).toMatch(/commit frame must be 9 bytes/);
    const huge = Buffer.alloc(300 * 1024);
    huge[0] = 0x77;
    expect(await hostile(huge)).toMatch(/more than the limit/);

    // Bad command arguments are errors, not crashes.
    const conn = await PgConnection.connect({ host: '127.0.0.1', port: sk.pgPort, user: 'x', database: 'postgres' });
    try {
      await expect(conn.query(`START_WAL_PUSH ${t} ${tl} 1 0/5000000 3@zz`)).rejects.toThrow(/invalid term_history/);
      await expect(conn.query(`START_WAL_PUSH ${t} ${tl} 99999999999999999999999 0/5000000 -`)).rejects.toThrow(/term must be/);
      await expect(conn.query(`READ_WAL ${t} ${tl} 0/5000000 0/6000000`)).rejects.toThrow(/available only up to/);
      expect((await conn.query(`TIMELINE_STATUS ${t} ${tl}`)).rows).toHaveLength(1);
    } finally {
      await conn.close();
    }

    const data = randomBytes(1000);
    await healthy.sendWal(start, data, start + 1000n);
    await healthy.waitUntil((s) => s.commitLsn === start + 1000n, 20_000, 'healthy session commit');
    await healthy.finish();
    const status = await fetchStatus(tgt(sk, t, tl));
    expect(status?.flushLsn).toBe(start); // nothing hostile was written
  });

  it('requires the auth token on both listeners when configured', async () => {
    const secured = await startSk(path.join(root, 'sk-auth'), ['--auth-token', 'sekrit-token']);
    const t = neonId();
    const tl = neonId();
    const res = await http(secured, `/v1/tenant/${t}/timeline/${tl}`);
    expect(res.status).toBe(401);
    const ok = await http(secured, `/v1/tenant/${t}/timeline/${tl}`, { headers: { authorization: 'Bearer sekrit-token' } });
    expect(ok.status).toBe(404);
    await expect(fetchStatus(tgt(secured, t, tl))).rejects.toBeInstanceOf(PgClientError);
    await expect(fetchStatus(tgt(secured, t, tl, 'wrong'))).rejects.toThrow(/password authentication failed/);
    expect(await fetchStatus(tgt(secured, t, tl, 'sekrit-token'))).toBeNull();
    await secured.proc.kill('SIGTERM');
  });
});
