import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import net from 'node:net';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import pg from 'pg';
import { to } from 'pg-copy-streams';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findPostgres, pgBin } from '../common/pg-binaries';
import { copyBoth } from '../dev/storage/pgwire/copy-both-client';
import { PgWireError, startPgWireServer, type PgWireSession, type QueryResult } from '../dev/storage/pgwire/server';

const run = promisify(execFile);
const psqlPath = pgBin(findPostgres({ pgBinDir: process.env.PG_BIN_DIR }), 'psql');

const CHUNK = 1024 * 1024;
const BIG_CHUNKS = 48;

/** A deterministic chunk `i` so both ends can agree on the bytes without keeping them. */
function chunkBytes(i: number): Buffer {
  const b = Buffer.alloc(CHUNK, i & 0xff);
  b.writeUInt32BE(i, 0);
  return b;
}

function expectedBigDigest(): string {
  const h = createHash('sha256');
  for (let i = 0; i < BIG_CHUNKS; i++) h.update(chunkBytes(i));
  return h.digest('hex');
}

let produced = 0;

async function onQuery(session: PgWireSession, sql: string): Promise<QueryResult> {
  const q = sql.trim().replace(/;$/, '');
  if (q === 'hello') return { kind: 'rows', columns: ['greeting', 'nothing'], rows: [['hello ' + session.user, null], ['second', 'x']] };
  if (q === 'session') {
    return { kind: 'rows', columns: ['key', 'value'], rows: Object.entries(session.params).sort().map(([k, v]) => [k, v]) };
  }
  if (q === 'noop') return { kind: 'command', tag: 'NOOP' };
  if (q === 'fail') throw new PgWireError('this command always fails', '22023');
  if (q === 'crash') throw new Error('unexpected crash inside the handler');
  if (q === 'big') {
    produced = 0;
    async function* gen() {
      for (let i = 0; i < BIG_CHUNKS; i++) {
        produced += CHUNK;
        yield chunkBytes(i);
      }
    }
    return { kind: 'copyOut', stream: gen() };
  }
  if (q === 'failing stream') {
    async function* gen() {
      yield Buffer.from('partial');
      throw new PgWireError('stream broke halfway', '58030');
    }
    return { kind: 'copyOut', stream: gen() };
  }
  if (q === 'echo') {
    return {
      kind: 'copyBoth',
      run: async ({ incoming, send }) => {
        for await (const payload of incoming) await send(Buffer.concat([Buffer.from('echo:'), payload]));
      },
    };
  }
  throw new PgWireError(`unknown command: ${q}`, '42601');
}

let server: Awaited<ReturnType<typeof startPgWireServer>>;
let secured: Awaited<ReturnType<typeof startPgWireServer>>;
const logLines: string[] = [];

beforeAll(async () => {
  server = await startPgWireServer({ host: '127.0.0.1', port: 0, onQuery, log: (l) => logLines.push(l) });
  secured = await startPgWireServer({ host: '127.0.0.1', port: 0, password: 's3cret-pw', onQuery, log: (l) => logLines.push(l) });
});

afterAll(async () => {
  await server?.close();
  await secured?.close();
});

async function client(port = server.port, extra: Partial<pg.ClientConfig> = {}): Promise<pg.Client> {
  const c = new pg.Client({ host: '127.0.0.1', port, user: 'tester', database: 'db1', ...extra });
  await c.connect();
  return c;
}

function psql(port: number, command: string, env: Record<string, string> = {}) {
  return run(psqlPath, ['-X', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-h', '127.0.0.1', '-p', String(port), '-U', 'tester', '-d', 'db1', '-c', command], {
    env: { ...process.env, PGCONNECT_TIMEOUT: '10', ...env },
    encoding: 'buffer',
    maxBuffer: 256 * 1024 * 1024,
    timeout: 60_000,
  });
}

/** Sends raw bytes on a fresh socket and collects everything until the server closes it. */
function rawExchange(bytes: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(server.port, '127.0.0.1');
    const got: Buffer[] = [];
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error('server did not close the connection'));
    }, 10_000);
    sock.on('data', (d) => got.push(d));
    sock.on('error', () => undefined);
    sock.on('close', () => {
      clearTimeout(timer);
      resolve(Buffer.concat(got));
    });
    sock.write(bytes);
  });
}

function startupPacket(params: Record<string, string>): Buffer {
  const body = Buffer.concat([...Object.entries(params).flatMap(([k, v]) => [Buffer.from(k + '\0'), Buffer.from(v + '\0')]), Buffer.from([0])]);
  const head = Buffer.alloc(8);
  head.writeInt32BE(8 + body.length, 0);
  head.writeInt32BE(196608, 4);
  return Buffer.concat([head, body]);
}

describe('pgwire server', () => {
  it('answers rows, commands and errors to node-postgres, and the session survives errors', async () => {
    const c = await client();
    try {
      const r = await c.query('hello');
      expect(r.fields.map((f) => f.name)).toEqual(['greeting', 'nothing']);
      expect(r.rows).toEqual([
        { greeting: 'hello tester', nothing: null },
        { greeting: 'second', nothing: 'x' },
      ]);
      const n = await c.query('noop');
      expect(n.command).toBe('NOOP');
      await expect(c.query('fail')).rejects.toMatchObject({ message: 'this command always fails', code: '22023' });
      await expect(c.query('crash')).rejects.toMatchObject({ message: 'unexpected crash inside the handler', code: 'XX000' });
      // Extended protocol (a parameterized query) is refused, and the session stays usable.
      await expect(c.query('hello where $1', ['x'])).rejects.toMatchObject({ code: '0A000' });
      expect((await c.query('hello')).rows).toHaveLength(2);
      // An empty query string gets EmptyQueryResponse, not an error.
      await expect(c.query('')).resolves.toBeDefined();
    } finally {
      await c.end();
    }
  });

  it('passes startup parameters and parsed options to the handler', async () => {
    const c = await client(server.port, { application_name: 'unit-test', options: '-c tenant_id=abc --timeline-id=def -c app.note=with\\ space' });
    try {
      const rows = Object.fromEntries((await c.query('session')).rows.map((r: { key: string; value: string }) => [r.key, r.value]));
      expect(rows).toMatchObject({ user: 'tester', database: 'db1', application_name: 'unit-test', tenant_id: 'abc', timeline_id: 'def', 'app.note': 'with space' });
    } finally {
      await c.end();
    }
  });

  it('serves stock psql (SSL negotiation refused, rows and errors)', async () => {
    const { stdout } = await psql(server.port, 'hello');
    expect(stdout.toString()).toBe('hello tester|\nsecond|x\n');
    const failed = await psql(server.port, 'fail').then(
      () => undefined,
      (e: { stderr: Buffer; code: number }) => e,
    );
    expect(failed?.stderr.toString()).toContain('this command always fails');
  });

  it('streams a large COPY OUT with backpressure to a slow pg-copy-streams reader', async () => {
    const c = await client();
    try {
      let received = 0;
      let maxAhead = 0;
      const hash = createHash('sha256');
      const slowSink = new Writable({
        highWaterMark: 64 * 1024,
        write(chunk: Buffer, _enc, cb) {
          received += chunk.length;
          maxAhead = Math.max(maxAhead, produced - received);
          hash.update(chunk);
          setTimeout(cb, 1);
        },
      });
      await pipeline(c.query(to('big')), slowSink);
      expect(received).toBe(BIG_CHUNKS * CHUNK);
      expect(hash.digest('hex')).toBe(expectedBigDigest());
      // The producer never ran far ahead of the consumer: the stream is not buffered whole.
      expect(maxAhead).toBeLessThan(BIG_CHUNKS * CHUNK / 3);
      console.log(`copyOut: producer at most ${(maxAhead / CHUNK).toFixed(1)} MiB ahead of a slow reader`);
      expect((await c.query('hello')).rows).toHaveLength(2);
    } finally {
      await c.end();
    }
  });

  it('delivers COPY OUT to psql stdout byte for byte', async () => {
    const { stdout } = await psql(server.port, 'big');
    expect(stdout.length).toBe(BIG_CHUNKS * CHUNK);
    expect(createHash('sha256').update(stdout).digest('hex')).toBe(expectedBigDigest());
  });

  it('reports a stream that fails midway as an error and keeps the session', async () => {
    const c = await client();
    try {
      const sink = new Writable({ write: (_c, _e, cb) => cb() });
      await expect(pipeline(c.query(to('failing stream')), sink)).rejects.toThrow('stream broke halfway');
      expect((await c.query('hello')).rows).toHaveLength(2);
    } finally {
      await c.end();
    }
  });

  it('echoes COPY BOTH with pg-copy-streams both()', async () => {
    const c = await client();
    try {
      const duplex = c.query(copyBoth('echo'));
      const got: Buffer[] = [];
      duplex.on('data', (d: Buffer) => got.push(d));
      const ended = new Promise<void>((resolve, reject) => {
        duplex.on('end', resolve);
        duplex.on('error', reject);
      });
      const finished = new Promise<void>((resolve, reject) => {
        duplex.on('finish', resolve);
        duplex.on('error', reject);
      });
      duplex.write(Buffer.from('one'));
      duplex.write(Buffer.from('two'));
      duplex.end(Buffer.from('three'));
      await Promise.all([ended, finished]);
      expect(Buffer.concat(got).toString()).toBe('echo:oneecho:twoecho:three');
      expect((await c.query('hello')).rows).toHaveLength(2);
    } finally {
      await c.end();
    }
  });

  it('checks the cleartext password (pg and psql), wrong password is FATAL 28P01', async () => {
    const ok = await client(secured.port, { password: 's3cret-pw' });
    expect((await ok.query('hello')).rows).toHaveLength(2);
    await ok.end();
    const bad = new pg.Client({ host: '127.0.0.1', port: secured.port, user: 'tester', database: 'db1', password: 'wrong' });
    await expect(bad.connect()).rejects.toMatchObject({ code: '28P01' });
    await bad.end().catch(() => undefined);

    const { stdout } = await psql(secured.port, 'hello', { PGPASSWORD: 's3cret-pw' });
    expect(stdout.toString()).toContain('hello tester');
    const failed = await psql(secured.port, 'hello', { PGPASSWORD: 'nope' }).then(
      () => undefined,
      (e: { stderr: Buffer }) => e,
    );
    expect(failed?.stderr.toString()).toContain('password authentication failed');
    expect(logLines.join('\n')).not.toContain('nope');
  });

  it('answers malformed and oversized messages with FATAL, closes only that connection, and keeps serving', async () => {
    const hugeStartup = Buffer.alloc(8);
    hugeStartup.writeInt32BE(0x7fffffff, 0);
    hugeStartup.writeInt32BE(196608, 4);
    const r1 = await rawExchange(hugeStartup);
    expect(r1.toString('latin1')).toContain('exceeds the limit');
    expect(r1[0]).toBe('E'.charCodeAt(0));

    const tooShort = Buffer.from([0, 0, 0, 2]);
    expect((await rawExchange(tooShort)).toString('latin1')).toContain('invalid message length');

    const badVersion = Buffer.alloc(8);
    badVersion.writeInt32BE(8, 0);
    badVersion.writeInt32BE(0x00020000, 4);
    expect((await rawExchange(badVersion)).toString('latin1')).toContain('unsupported frontend protocol');

    const junkType = Buffer.concat([startupPacket({ user: 'raw' }), Buffer.from([0x01, 0, 0, 0, 4])]);
    const r4 = await rawExchange(junkType);
    expect(r4.toString('latin1')).toContain('invalid frontend message type');

    const oversizedQuery = Buffer.alloc(5);
    oversizedQuery[0] = 'Q'.charCodeAt(0);
    oversizedQuery.writeInt32BE(2 * 1024 * 1024, 1);
    const r5 = await rawExchange(Buffer.concat([startupPacket({ user: 'raw' }), oversizedQuery, Buffer.alloc(1000, 0x41)]));
    expect(r5.toString('latin1')).toContain('exceeds the limit');

    const c = await client();
    expect((await c.query('hello')).rows).toHaveLength(2);
    await c.end();
  });

  it('psql can fetch through a stalled client without blocking other connections', async () => {
    // A connection that sent half a startup packet must not hold up anybody else.
    const stalled = net.connect(server.port, '127.0.0.1');
    stalled.on('error', () => undefined);
    stalled.write(Buffer.from([0, 0, 0, 100, 0, 3]));
    const child = spawn(psqlPath, ['-X', '-A', '-t', '-h', '127.0.0.1', '-p', String(server.port), '-U', 'tester', '-d', 'db1', '-c', 'hello']);
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
    stalled.destroy();
    expect(code).toBe(0);
    expect(out).toContain('hello tester');
  });
});
