/**
 * The pageserver client against real PostgreSQL (COPY OUT streaming and memory) and against
 * crafted libpq/HTTP servers that answer the way Neon's pageserver does, including the ways it
 * fails. The end-to-end run against the dev pageserver is in pageserver-client-dev.test.ts.
 */
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { basebackupCommand, fetchBasebackup } from '../drivers/pageserver/basebackup';
import { parseConninfo, pgClientConfig, shardZeroConnstring } from '../drivers/pageserver/conninfo';
import { runCopyOut } from '../drivers/pageserver/copy-out';
import { StorageError } from '../drivers/pageserver/errors';
import { createPageserverClient, PageserverHttpError } from '../drivers/pageserver/mgmt-api';
import { freePort } from '../dev/processes';
import { PgWireError, startPgWireServer, type PgWireServer, type PgWireSession, type QueryResult } from '../dev/storage/pgwire/server';
import { neonId } from './helpers/ids';
import { startThrowawayPostgres, type ThrowawayPostgres } from '../dev/throwaway-postgres';
import { packEntries } from './fixtures/tar-crafting';

const MiB = 1024 * 1024;
const tenant = neonId();
const timeline = neonId();

let scratch: string;
let n = 0;
const freshDir = () => path.join(scratch, `pgdata-${++n}`);

beforeAll(() => {
  scratch = mkdtempSync(path.join(os.tmpdir(), 'dc-ps-client-'));
});
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

async function failure(p: Promise<unknown>): Promise<StorageError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, 'the call should have failed').toBeInstanceOf(StorageError);
  return err as StorageError;
}

describe('connection strings', () => {
  it('parses URL and keyword forms', () => {
    expect(parseConninfo('postgresql://no_user@pageserver-0.local:6400')).toEqual({ host: 'pageserver-0.local', port: 6400, user: 'no_user' });
    expect(parseConninfo('postgres://u:p%40ss@[::1]:6400/db?application_name=x&options=-c%20a%3Db')).toEqual({
      host: '::1',
      port: 6400,
      user: 'u',
      password: 'p@ss',
      database: 'db',
      applicationName: 'x',
      options: '-c a=b',
    });
    expect(parseConninfo("host=127.0.0.1 port = 6400 user=cloud_admin password='it\\'s a \\\\ secret' options='-c x=y'")).toEqual({
      host: '127.0.0.1',
      port: 6400,
      user: 'cloud_admin',
      password: "it's a \\ secret",
      options: '-c x=y',
    });
    expect(shardZeroConnstring('postgresql://a@h0:6400,postgresql://a@h1:6400')).toBe('postgresql://a@h0:6400');
  });

  it('refuses what it cannot honour, without echoing passwords', () => {
    expect(() => parseConninfo('')).toThrow(/empty/);
    expect(() => parseConninfo('port=6400')).toThrow(/no host/);
    expect(() => parseConninfo('host=h port=99999')).toThrow(/invalid port/);
    expect(() => parseConninfo('host=h sslkey=/x')).toThrow(/unsupported connection option "sslkey"/);
    expect(() => parseConninfo('http://h:80')).toThrow(/not a libpq connection string/);
    expect(() => parseConninfo("host=h password='unterminated")).toThrow(/unterminated/);
    const err = (() => {
      try {
        parseConninfo('postgresql://u:hunter2@h:6400?bogus=1');
      } catch (e) {
        return e as Error;
      }
    })();
    expect(err?.message).toMatch(/unsupported connection option "bogus"/);
    expect(err?.message).not.toContain('hunter2');
  });

  it('leaves nothing for pg to take from the environment', () => {
    const cfg = pgClientConfig(parseConninfo('postgresql://h:1'), { password: 'tok' });
    expect(cfg).toMatchObject({ host: 'h', port: 1, user: 'no_user', database: 'no_user', application_name: 'compute_ctl', ssl: false });
    expect(typeof cfg.password).toBe('function');
    expect((cfg.password as () => string)()).toBe('tok');
    const none = pgClientConfig(parseConninfo('postgresql://h:1'));
    expect(() => (none.password as () => string)()).toThrow(/no storage auth token/);
  });

  it('builds the page service command like compute_ctl', () => {
    expect(basebackupCommand(tenant, timeline)).toBe(`basebackup ${tenant} ${timeline} --gzip`);
    expect(basebackupCommand(tenant, timeline, '0/16b5a50', true)).toBe(`basebackup ${tenant} ${timeline} 0/16B5A50 --gzip --replica`);
    expect(basebackupCommand(tenant, timeline, '0/0')).toBe(`basebackup ${tenant} ${timeline} --gzip`);
    expect(() => basebackupCommand('nope', timeline)).toThrow(/tenant_id/);
    expect(() => basebackupCommand(tenant, timeline, '1; DROP')).toThrow(/not an LSN/);
  });
});

describe('COPY OUT from real PostgreSQL', () => {
  let pgServer: ThrowawayPostgres;
  beforeAll(async () => {
    pgServer = await startThrowawayPostgres();
  });
  afterAll(async () => {
    await pgServer?.stop();
  });

  it('streams ~200 MB to a slow consumer with bounded memory', async () => {
    const base = process.memoryUsage();
    let peak = 0;
    let progressCalls = 0;
    const r = await runCopyOut(
      {
        connstring: pgServer.url(),
        command: "COPY (SELECT repeat('x', 1000) FROM generate_series(1, 200000)) TO STDOUT",
        onBytes: () => progressCalls++,
      },
      async (data) => {
        let received = 0;
        let chunks = 0;
        for await (const chunk of data as AsyncIterable<Buffer>) {
          received += chunk.length;
          if (++chunks % 4 === 0) {
            const m = process.memoryUsage();
            peak = Math.max(peak, m.heapUsed + m.arrayBuffers - base.heapUsed - base.arrayBuffers);
            // A slow disk: without backpressure the rest of the stream would pile up in memory.
            await sleep(1);
          }
        }
        return received;
      },
    );
    expect(r.result).toBe(200_200_000);
    expect(r.bytes).toBe(200_200_000);
    expect(progressCalls).toBeGreaterThan(100);
    expect(r.connectMicros).toBeGreaterThan(0);
    expect(peak).toBeLessThan(100 * MiB);
  });

  it('reports a failing query as the server error it is', async () => {
    const err = await failure(runCopyOut({ connstring: pgServer.url(), command: 'COPY (SELECT 1/0) TO STDOUT' }, async (d) => d.resume()));
    expect(err.kind).toBe('server');
    expect(err.details.sqlState).toBe('22012');
    expect(err.message).toMatch(/division by zero/);
  });
});

/** A libpq server answering `basebackup` the way `handler` says, recording what it was asked. */
async function fakePageserver(handler: (args: string[], session: PgWireSession) => Promise<QueryResult>, password?: string) {
  const sessions: PgWireSession[] = [];
  const commands: string[] = [];
  const server: PgWireServer = await startPgWireServer({
    host: '127.0.0.1',
    port: 0,
    ...(password ? { password } : {}),
    async onQuery(session, sql) {
      sessions.push(session);
      commands.push(sql);
      const words = sql.trim().split(/\s+/);
      if (words[0] !== 'basebackup') throw new PgWireError(`unsupported command ${sql}`, 'XX000');
      return handler(words.slice(1), session);
    },
  });
  return { connstring: `postgresql://no_user@127.0.0.1:${server.port}`, port: server.port, sessions, commands, close: () => server.close() };
}

function copyOf(...chunks: (Buffer | Error)[]): QueryResult {
  async function* gen() {
    for (const c of chunks) {
      if (c instanceof Error) throw c;
      yield c;
      await sleep(5);
    }
  }
  return { kind: 'copyOut', stream: gen() };
}

describe('fetchBasebackup against crafted pageservers', () => {
  const servers: { close(): Promise<void> }[] = [];
  let archive: Buffer;
  let tarGz: Buffer;
  afterAll(async () => {
    await Promise.all(servers.map((s) => s.close()));
  });
  beforeAll(async () => {
    archive = await packEntries([
      { name: 'PG_VERSION', content: '15\n' },
      { name: 'global', type: 'directory' },
      { name: 'global/pg_control', content: Buffer.alloc(8192, 7) },
      { name: 'pg_wal', type: 'directory' },
      { name: 'base/1/1259', content: Buffer.alloc(20000, 1) },
    ]);
    tarGz = gzipSync(archive);
  });
  const serve = async (handler: Parameters<typeof fakePageserver>[0], password?: string) => {
    const s = await fakePageserver(handler, password);
    servers.push(s);
    return s;
  };

  it('unpacks the archive and reports compute_ctl metrics', async () => {
    const ps = await serve(async () => copyOf(tarGz.subarray(0, 100), tarGz.subarray(100)), 'storage-token');
    const targetDir = freshDir();
    const progress: number[] = [];
    const r = await fetchBasebackup({ connstring: ps.connstring, tenantId: tenant, timelineId: timeline, token: 'storage-token', targetDir, onProgress: (p) => progress.push(p.receivedBytes) });
    expect(r.files).toBe(3);
    expect(r.extractedBytes).toBe(3 + 8192 + 20000);
    expect(r.metrics.basebackup_bytes).toBe(tarGz.length);
    expect(r.metrics.pageserver_connect_micros).toBeGreaterThan(0);
    expect(r.metrics.basebackup_ms).toBeGreaterThanOrEqual(r.metrics.pageserver_connect_micros / 1000 - 1);
    expect(progress.at(-1)).toBe(tarGz.length);
    expect(readFileSync(path.join(targetDir, 'PG_VERSION'), 'utf8')).toBe('15\n');
    expect(statSync(targetDir).mode & 0o777).toBe(0o700);
    expect(ps.commands).toEqual([`basebackup ${tenant} ${timeline} --gzip`]);
    const session = ps.sessions[0]!;
    expect(session.applicationName).toBe('compute_ctl');
    expect(session.params['neon.compute_mode']).toBe('primary');
  });

  it('asks for an LSN and a replica backup, naming the compute mode', async () => {
    const ps = await serve(async () => copyOf(tarGz));
    await fetchBasebackup({ connstring: ps.connstring, tenantId: tenant, timelineId: timeline, lsn: '0/16b5a50', replica: true, targetDir: freshDir() });
    await fetchBasebackup({ connstring: `host=127.0.0.1 port=${ps.port} user=no_user`, tenantId: tenant, timelineId: timeline, replica: true, targetDir: freshDir() });
    expect(ps.commands).toEqual([`basebackup ${tenant} ${timeline} 0/16B5A50 --gzip --replica`, `basebackup ${tenant} ${timeline} --gzip --replica`]);
    expect(ps.sessions.map((s) => s.params['neon.compute_mode'])).toEqual(['static', 'replica']);
  });

  it('classifies the errors Neon pageservers send', async () => {
    const cases: [string, string, StorageError['kind'], boolean][] = [
      [`Not found: Tenant ${tenant} not found`, 'XX000', 'not-found', false],
      [`Not found: Timeline ${tenant}/${timeline} was not found`, 'XX000', 'not-found', false],
      ['invalid parameter for basebackup command: --gzp', 'XX000', 'bad-request', false],
      ['invalid basebackup lsn', 'XX000', 'bad-request', false],
      ['Unauthorized: malformed jwt token', 'XX000', 'auth', false],
      ['Timed out while waiting for WAL record at LSN 0/9000000 to arrive', 'XX000', 'server', true],
      ['Shutting down', '57P01', 'unavailable', true],
    ];
    for (const [message, code, kind, retryable] of cases) {
      const ps = await serve(async () => {
        throw new PgWireError(message, code);
      });
      const targetDir = freshDir();
      const err = await failure(fetchBasebackup({ connstring: ps.connstring, tenantId: tenant, timelineId: timeline, targetDir }));
      expect(err.kind, message).toBe(kind);
      expect(err.retryable, message).toBe(retryable);
      expect(err.message).toContain(message);
      expect(err.details.serverMessage).toBe(message);
    }
  });

  it('fails on an error in the middle of the stream and removes the partial extraction', async () => {
    const ps = await serve(async () => copyOf(tarGz.subarray(0, 2000), new PgWireError('could not read layer file', 'XX000')));
    const targetDir = freshDir();
    const err = await failure(fetchBasebackup({ connstring: ps.connstring, tenantId: tenant, timelineId: timeline, targetDir }));
    expect(err.kind).toBe('server');
    expect(err.retryable).toBe(true);
    expect(err.message).toMatch(/could not read layer file/);
    expect(existsSync(targetDir) ? readdirSync(targetDir) : []).toEqual([]);
  });

  it('fails on an error sent after a complete archive', async () => {
    // Neon's tar builder writes the end-of-archive marker even when the backup then fails.
    const ps = await serve(async () => copyOf(tarGz, new PgWireError('basebackup failed after the tarball', 'XX000')));
    const err = await failure(fetchBasebackup({ connstring: ps.connstring, tenantId: tenant, timelineId: timeline, targetDir: freshDir() }));
    expect(err.message).toMatch(/basebackup failed after the tarball/);
  });

  it('stops a gzip bomb at the size cap', async () => {
    // 64 MiB of zero blocks (an endless "end of archive") in ~64 KiB on the wire.
    const bomb = gzipSync(Buffer.alloc(64 * MiB));
    expect(bomb.length).toBeLessThan(MiB);
    const ps = await serve(async () => copyOf(bomb));
    const err = await failure(fetchBasebackup({ connstring: ps.connstring, tenantId: tenant, timelineId: timeline, targetDir: freshDir(), maxBytes: 8 * MiB }));
    expect(err.kind).toBe('too-large');
    expect(err.retryable).toBe(false);
  });

  it('rejects hostile archives and data that is not gzip', async () => {
    const evil = gzipSync(await packEntries([{ name: 'ok', content: 'x' }, { name: '../../escape', content: 'owned' }]));
    const ps = await serve(async () => copyOf(evil));
    const targetDir = freshDir();
    const err = await failure(fetchBasebackup({ connstring: ps.connstring, tenantId: tenant, timelineId: timeline, targetDir }));
    expect(err.kind).toBe('bad-archive');
    expect(err.retryable).toBe(false);
    expect(err.message).toContain('"../../escape"');
    expect(existsSync(path.join(scratch, 'escape'))).toBe(false);

    const plain = await serve(async () => copyOf(archive));
    const notGzip = await failure(fetchBasebackup({ connstring: plain.connstring, tenantId: tenant, timelineId: timeline, targetDir: freshDir() }));
    expect(notGzip.kind).toBe('bad-archive');
    expect(notGzip.message).toMatch(/gzip/);

    // A target that cannot be created is our disk's problem, not the archive's.
    const good = await serve(async () => copyOf(tarGz));
    const blocked = await failure(
      fetchBasebackup({ connstring: good.connstring, tenantId: tenant, timelineId: timeline, targetDir: path.join(scratch, 'pgdata-1', 'PG_VERSION', 'sub') }),
    );
    expect(blocked.kind).toBe('local-io');
  });

  it('tells refused, hung and silent servers apart', async () => {
    const refused = await failure(fetchBasebackup({ connstring: `postgresql://no_user@127.0.0.1:${await freePort()}`, tenantId: tenant, timelineId: timeline, targetDir: freshDir() }));
    expect(refused.kind).toBe('connection-refused');
    expect(refused.retryable).toBe(true);

    const silentSockets = new Set<net.Socket>();
    const silent = net.createServer((s) => {
      silentSockets.add(s);
      s.on('error', () => undefined);
      s.resume();
    });
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    try {
      const port = (silent.address() as net.AddressInfo).port;
      const hung = await failure(
        fetchBasebackup({ connstring: `postgresql://no_user@127.0.0.1:${port}`, tenantId: tenant, timelineId: timeline, targetDir: freshDir(), connectTimeoutMs: 300 }),
      );
      expect(hung.kind).toBe('connect-timeout');
      expect(hung.retryable).toBe(true);
    } finally {
      for (const s of silentSockets) s.destroy();
      await new Promise<void>((resolve) => silent.close(() => resolve()));
    }

    // Connected, but the pageserver sends nothing (e.g. waiting for WAL that never comes).
    const stalled = await serve(() => new Promise<QueryResult>(() => undefined));
    const started = Date.now();
    const idle = await failure(fetchBasebackup({ connstring: stalled.connstring, tenantId: tenant, timelineId: timeline, targetDir: freshDir(), idleTimeoutMs: 400 }));
    expect(idle.kind).toBe('timeout');
    expect(idle.retryable).toBe(true);
    expect(Date.now() - started).toBeLessThan(5000);
  });

  it('reports a connection cut mid-stream as retryable and leaves nothing behind', async () => {
    const big = gzipSync(await packEntries([{ name: 'base/1/big', content: Buffer.alloc(4 * MiB, 5) }]), { level: 0 });
    const ps = await serve(async () => copyOf(big.subarray(0, MiB), big.subarray(MiB)));
    // A TCP proxy that drops both sides once 200 KiB have come back from the pageserver.
    const sockets = new Set<net.Socket>();
    const proxy = net.createServer((client) => {
      const upstream = net.connect(ps.port, '127.0.0.1');
      sockets.add(client).add(upstream);
      client.on('error', () => undefined);
      upstream.on('error', () => undefined);
      let down = 0;
      client.pipe(upstream);
      upstream.on('data', (d: Buffer) => {
        down += d.length;
        if (down > 200 * 1024) {
          client.destroy();
          upstream.destroy();
        } else client.write(d);
      });
    });
    await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
    try {
      const port = (proxy.address() as net.AddressInfo).port;
      const targetDir = freshDir();
      const err = await failure(fetchBasebackup({ connstring: `postgresql://no_user@127.0.0.1:${port}`, tenantId: tenant, timelineId: timeline, targetDir }));
      expect(err.kind).toBe('connection-lost');
      expect(err.retryable).toBe(true);
      expect(existsSync(targetDir) ? readdirSync(targetDir) : []).toEqual([]);
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => proxy.close(() => resolve()));
    }
  });

  it('aborts promptly mid-stream', async () => {
    const ps = await serve(async () => {
      async function* trickle() {
        yield tarGz.subarray(0, 50);
        await sleep(60_000);
        yield tarGz.subarray(50);
      }
      return { kind: 'copyOut', stream: trickle() };
    });
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 200);
    const started = Date.now();
    const err = await failure(fetchBasebackup({ connstring: ps.connstring, tenantId: tenant, timelineId: timeline, targetDir: freshDir(), signal: ac.signal }));
    expect(err.kind).toBe('aborted');
    expect(Date.now() - started).toBeLessThan(5000);
  });

  it('uses the token over the connection string password and never shows either in errors', async () => {
    const ps = await serve(async () => copyOf(tarGz), 'the-real-token');
    const withBoth = `postgresql://no_user:conn-password-xyz@127.0.0.1:${ps.port}`;
    await fetchBasebackup({ connstring: withBoth, tenantId: tenant, timelineId: timeline, token: 'the-real-token', targetDir: freshDir() });
    const wrong = await failure(fetchBasebackup({ connstring: withBoth, tenantId: tenant, timelineId: timeline, token: 'wrong-token-abc', targetDir: freshDir() }));
    expect(wrong.kind).toBe('auth');
    expect(wrong.retryable).toBe(false);
    expect(wrong.message).not.toContain('wrong-token-abc');
    expect(wrong.message).not.toContain('conn-password-xyz');
    const missing = await failure(fetchBasebackup({ connstring: `postgresql://no_user@127.0.0.1:${ps.port}`, tenantId: tenant, timelineId: timeline, targetDir: freshDir() }));
    expect(missing.kind).toBe('auth');
  });
});

describe('management API against a crafted pageserver', () => {
  let server: http.Server;
  let url: string;
  const requests: { method: string; url: string; auth: string | undefined; body: string }[] = [];
  let reply: (req: http.IncomingMessage) => { status: number; body?: unknown; raw?: string; hang?: boolean };

  const info = (timelineId: string) => ({
    tenant_id: tenant,
    timeline_id: timelineId,
    ancestor_timeline_id: null,
    ancestor_lsn: null,
    last_record_lsn: '0/14EE150',
    prev_record_lsn: '0/14EE118',
    disk_consistent_lsn: '0/14EE150',
    remote_consistent_lsn: '0/14EE150',
    initdb_lsn: '0/14EE150',
    pg_version: 15,
    state: 'Active',
    current_logical_size: 123,
  });

  beforeAll(async () => {
    server = http.createServer((req, res) => {
      let body = '';
      req.on('data', (d: Buffer) => (body += d.toString()));
      req.on('end', () => {
        requests.push({ method: req.method!, url: req.url!, auth: req.headers.authorization, body });
        const r = reply(req);
        if (r.hang) return;
        res.writeHead(r.status, { 'content-type': 'application/json' });
        res.end(r.raw ?? (r.body === undefined ? '' : JSON.stringify(r.body)));
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
  });
  afterAll(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  it('creates timelines in all three modes with the wire format and bearer token', async () => {
    const client = createPageserverClient({ httpUrl: `${url}/`, token: 'mgmt-token' });
    reply = () => ({ status: 201, body: info(timeline) });
    const created = await client.createTimeline(tenant, { new_timeline_id: timeline, pg_version: 15 });
    expect(created.status).toBe(201);
    expect(created.timeline.last_record_lsn).toBe('0/14EE150');
    expect(created.timeline.current_logical_size).toBe(123);
    const branch = neonId();
    await client.createTimeline(tenant, { new_timeline_id: branch, ancestor_timeline_id: timeline, ancestor_start_lsn: '0/14ee150' });
    await client.createTimeline(tenant, {
      new_timeline_id: neonId(),
      import_pgdata: { idempotency_key: 'wf-1/import', location: { AwsS3: { region: 'us-east-1', bucket: 'b', key: 'imports/1/' } } },
    });
    const posted = requests.slice(-3);
    expect(posted.every((r) => r.method === 'POST' && r.url === `/v1/tenant/${tenant}/timeline` && r.auth === 'Bearer mgmt-token')).toBe(true);
    expect(JSON.parse(posted[0]!.body)).toEqual({ new_timeline_id: timeline, pg_version: 15 });
    expect(JSON.parse(posted[1]!.body)).toEqual({ new_timeline_id: branch, ancestor_timeline_id: timeline, ancestor_start_lsn: '0/14EE150' });
    expect(JSON.parse(posted[2]!.body).import_pgdata).toEqual({ idempotency_key: 'wf-1/import', location: { AwsS3: { region: 'us-east-1', bucket: 'b', key: 'imports/1/' } } });
  });

  it('keeps the HTTP status and the service message on errors', async () => {
    const client = createPageserverClient({ httpUrl: url });
    for (const [status, retryable] of [
      [409, false],
      [429, true],
      [404, false],
      [400, false],
      [503, true],
    ] as const) {
      reply = () => ({ status, body: { msg: `status ${status} because reasons` } });
      const err = (await client.createTimeline(tenant, { new_timeline_id: timeline, pg_version: 15 }).catch((e: unknown) => e)) as PageserverHttpError;
      expect(err).toBeInstanceOf(PageserverHttpError);
      expect(err.status).toBe(status);
      expect(err.msg).toBe(`status ${status} because reasons`);
      expect(err.retryable).toBe(retryable);
    }
    expect(requests.at(-1)!.auth).toBeUndefined();
  });

  it('gets, lists and deletes timelines', async () => {
    const client = createPageserverClient({ httpUrl: url });
    reply = (req) => (req.method === 'DELETE' ? { status: 202 } : req.url!.endsWith('/timeline') ? { status: 200, body: [info(timeline), info(neonId())] } : { status: 200, body: info(timeline) });
    expect((await client.getTimeline(tenant, timeline)).timeline_id).toBe(timeline);
    expect(await client.listTimelines(tenant)).toHaveLength(2);
    expect(await client.deleteTimeline(tenant, timeline)).toEqual({ status: 202 });
    expect(requests.at(-1)).toMatchObject({ method: 'DELETE', url: `/v1/tenant/${tenant}/timeline/${timeline}` });
  });

  it('rejects answers that are not TimelineInfo, bad IDs, and times out', async () => {
    const client = createPageserverClient({ httpUrl: url, timeoutMs: 300 });
    reply = () => ({ status: 200, body: { tenant_id: tenant, timeline_id: timeline, last_record_lsn: 'garbage' } });
    await expect(client.getTimeline(tenant, timeline)).rejects.toThrow(/unexpected TimelineInfo: last_record_lsn/);
    reply = () => ({ status: 200, raw: '<html>proxy error</html>' });
    await expect(client.getTimeline(tenant, timeline)).rejects.toThrow(/not JSON/);
    await expect(client.getTimeline('../../etc', timeline)).rejects.toThrow(/tenant_id must be 32/);
    reply = () => ({ status: 200, hang: true });
    const err = (await client.getTimeline(tenant, timeline).catch((e: unknown) => e)) as PageserverHttpError;
    expect(err.status).toBe(0);
    expect(err.retryable).toBe(true);
    expect(err.msg).toMatch(/no answer within 300 ms/);
    const refused = (await createPageserverClient({ httpUrl: `http://127.0.0.1:${await freePort()}` })
      .getTimeline(tenant, timeline)
      .catch((e: unknown) => e)) as PageserverHttpError;
    expect(refused.status).toBe(0);
    expect(refused.msg).toBe('connection refused');
  });
});
