/**
 * A minimal PostgreSQL v3 wire-protocol client: simple queries, COPY OUT and COPY BOTH. node-pg
 * cannot do COPY BOTH (replication, WAL push), and the pusher needs exact control over how such a
 * stream ends (walsender shutdown, server errors, lost connections), so this speaks the protocol
 * itself. Authentication: trust, cleartext, MD5 and SCRAM-SHA-256 passwords (what the local
 * Postgres and the safekeepers ask for); SCRAM is node-postgres's implementation.
 */
import { createHash } from 'node:crypto';
import * as sasl from 'pg/lib/crypto/sasl.js';
import net from 'node:net';
import path from 'node:path';

export interface PgConnectOptions {
  /** Host name / IP, or an absolute directory holding the Unix socket. */
  host: string;
  port: number;
  user: string;
  database?: string;
  password?: string;
  /** Extra startup parameters (application_name, replication, options, ...). */
  params?: Record<string, string>;
  connectTimeoutMs?: number;
}

/** An ErrorResponse from the server, or a broken connection. */
export class PgClientError extends Error {
  override name = 'PgClientError';
  constructor(
    message: string,
    public readonly code?: string,
  ) {
    super(message);
  }
}

export interface SimpleResult {
  columns: string[];
  rows: (string | null)[][];
  tag: string;
}

interface BackendMessage {
  type: string;
  body: Buffer;
}

const MAX_BACKEND_MESSAGE = 64 * 1024 * 1024;

function frame(type: string, body: Buffer): Buffer {
  const out = Buffer.allocUnsafe(5 + body.length);
  out[0] = type.charCodeAt(0);
  out.writeInt32BE(4 + body.length, 1);
  body.copy(out, 5);
  return out;
}

const cstr = (s: string): Buffer => Buffer.from(`${s}\0`, 'utf8');

function parseErrorFields(body: Buffer): { message: string; code?: string } {
  const fields: Record<string, string> = {};
  let off = 0;
  while (off < body.length && body[off] !== 0) {
    const key = String.fromCharCode(body[off]!);
    const end = body.indexOf(0, off + 1);
    if (end < 0) break;
    fields[key] = body.toString('utf8', off + 1, end);
    off = end + 1;
  }
  return { message: fields.M ?? 'unknown server error', code: fields.C };
}

function errorFromMessage(body: Buffer): PgClientError {
  const f = parseErrorFields(body);
  return new PgClientError(f.message, f.code);
}

/** Buffers socket bytes and hands out whole backend messages. */
class MessageStream {
  private chunks: Buffer[] = [];
  private size = 0;
  private ended: Error | undefined;
  private waiter: (() => void) | undefined;

  constructor(private readonly socket: net.Socket) {
    socket.on('data', (d: Buffer) => {
      this.chunks.push(d);
      this.size += d.length;
      // Demand driven: do not buffer more than a few messages' worth while nobody reads.
      if (this.size > 8 * 1024 * 1024) socket.pause();
      this.wake();
    });
    const finish = (err?: Error) => {
      this.ended ??= err ?? new PgClientError('connection closed by the server');
      this.wake();
    };
    socket.on('end', () => finish());
    socket.on('close', () => finish());
    socket.on('error', (e) => finish(new PgClientError(`connection error: ${e.message}`)));
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
  }

  private compact(): Buffer {
    if (this.chunks.length > 1) this.chunks = [Buffer.concat(this.chunks)];
    return this.chunks[0] ?? Buffer.alloc(0);
  }

  async next(): Promise<BackendMessage> {
    for (;;) {
      if (this.size >= 5) {
        const buf = this.compact();
        const len = buf.readInt32BE(1);
        if (len < 4 || len > MAX_BACKEND_MESSAGE) throw new PgClientError(`invalid message length ${len} from server`);
        if (this.size >= 1 + len) {
          const msg = { type: String.fromCharCode(buf[0]!), body: Buffer.from(buf.subarray(5, 1 + len)) };
          const rest = buf.subarray(1 + len);
          this.chunks = rest.length > 0 ? [rest] : [];
          this.size = rest.length;
          if (this.socket.isPaused() && this.size < 1024 * 1024) this.socket.resume();
          return msg;
        }
      }
      if (this.ended) throw this.ended;
      if (this.socket.isPaused()) this.socket.resume();
      await new Promise<void>((resolve) => (this.waiter = resolve));
    }
  }
}

/** A push/pull stream inside COPY BOTH. */
export interface CopyBothSession {
  /** CopyData payloads from the server until it ends its side of the copy. Throws on a server error. */
  incoming: AsyncIterable<Buffer>;
  send(payload: Buffer): Promise<void>;
  /** Ends our side (CopyDone) and waits until the server completes the command. */
  finish(): Promise<void>;
}

export class PgConnection {
  private busy = false;
  private closed = false;

  private constructor(
    private readonly socket: net.Socket,
    private readonly messages: MessageStream,
  ) {}

  static async connect(opts: PgConnectOptions): Promise<PgConnection> {
    const socket = await openSocket(opts);
    const conn = new PgConnection(socket, new MessageStream(socket));
    try {
      await conn.startup(opts);
    } catch (err) {
      conn.destroy();
      throw err;
    }
    return conn;
  }

  get isClosed(): boolean {
    return this.closed || this.socket.destroyed;
  }

  /** Resolves when the connection is gone for whatever reason. */
  whenClosed(): Promise<void> {
    if (this.socket.destroyed) return Promise.resolve();
    return new Promise((resolve) => this.socket.once('close', () => resolve()));
  }

  private async write(data: Buffer): Promise<void> {
    if (this.socket.destroyed || !this.socket.writable) throw new PgClientError('connection closed');
    if (this.socket.write(data)) return;
    await new Promise<void>((resolve, reject) => {
      const onDrain = () => {
        this.socket.off('close', onClose);
        resolve();
      };
      const onClose = () => {
        this.socket.off('drain', onDrain);
        reject(new PgClientError('connection closed'));
      };
      this.socket.once('drain', onDrain);
      this.socket.once('close', onClose);
    });
  }

  private async startup(opts: PgConnectOptions): Promise<void> {
    const params: Record<string, string> = { user: opts.user, database: opts.database ?? opts.user, ...opts.params };
    const body = Buffer.concat([
      Buffer.from([0, 3, 0, 0]),
      ...Object.entries(params).flatMap(([k, v]) => [cstr(k), cstr(v)]),
      Buffer.from([0]),
    ]);
    const len = Buffer.allocUnsafe(4);
    len.writeInt32BE(body.length + 4, 0);
    await this.write(Buffer.concat([len, body]));
    let session: sasl.SaslSession | undefined;
    for (;;) {
      const m = await this.messages.next();
      switch (m.type) {
        case 'R': {
          const kind = m.body.readInt32BE(0);
          if (kind === 0) break;
          if (kind === 3 || kind === 5) {
            if (opts.password === undefined) throw new PgClientError('the server asks for a password but none was given', '28000');
            const pw =
              kind === 3
                ? opts.password
                : 'md5' +
                  createHash('md5')
                    .update(Buffer.concat([Buffer.from(createHash('md5').update(opts.password + opts.user).digest('hex')), m.body.subarray(4, 8)]))
                    .digest('hex');
            await this.write(frame('p', cstr(pw)));
            break;
          }
          if (kind === 10) {
            // AuthenticationSASL: the mechanisms, NUL-terminated, then an empty one.
            if (opts.password === undefined) throw new PgClientError('the server asks for a password but none was given', '28000');
            const mechanisms = m.body.subarray(4).toString('utf8').split('\0').filter(Boolean);
            session = sasl.startSession(mechanisms);
            const response = Buffer.from(session.response, 'utf8');
            const len = Buffer.allocUnsafe(4);
            len.writeInt32BE(response.length, 0);
            await this.write(frame('p', Buffer.concat([cstr(session.mechanism), len, response])));
            break;
          }
          if (kind === 11 && session && opts.password !== undefined) {
            await sasl.continueSession(session, opts.password, m.body.subarray(4).toString('utf8'));
            await this.write(frame('p', Buffer.from(session.response, 'utf8')));
            break;
          }
          if (kind === 12 && session) {
            // Proves the server knew the password too.
            sasl.finalizeSession(session, m.body.subarray(4).toString('utf8'));
            break;
          }
          throw new PgClientError(`unsupported authentication method ${kind} requested by the server`, '28000');
        }
        case 'E':
          throw errorFromMessage(m.body);
        case 'Z':
          return;
        default:
          break; // ParameterStatus, BackendKeyData, NoticeResponse
      }
    }
  }

  private claim(): void {
    if (this.busy) throw new Error('PgConnection: one command at a time');
    if (this.isClosed) throw new PgClientError('connection closed');
    this.busy = true;
  }

  /** One simple-protocol statement; rows as text. */
  async query(sql: string): Promise<SimpleResult> {
    this.claim();
    try {
      await this.write(frame('Q', cstr(sql)));
      let columns: string[] = [];
      const rows: (string | null)[][] = [];
      let tag = '';
      let error: PgClientError | undefined;
      for (;;) {
        const m = await this.messages.next();
        switch (m.type) {
          case 'T':
            columns = parseRowDescription(m.body);
            break;
          case 'D':
            rows.push(parseDataRow(m.body));
            break;
          case 'C':
            tag = m.body.toString('utf8').replace(/\0$/, '');
            break;
          case 'E':
            error = errorFromMessage(m.body);
            break;
          case 'W':
          case 'H':
          case 'G':
            // A copy where a plain result was expected: end it so the session stays in sync.
            await this.write(frame('c', Buffer.alloc(0)));
            error ??= new PgClientError(`unexpected COPY response to ${sql.split(/\s/)[0]}`);
            break;
          case 'Z':
            if (error) throw error;
            return { columns, rows, tag };
          default:
            break;
        }
      }
    } finally {
      this.busy = false;
    }
  }

  /** COPY OUT as a stream of CopyData payloads. */
  async *copyOut(sql: string): AsyncGenerator<Buffer> {
    this.claim();
    try {
      await this.write(frame('Q', cstr(sql)));
      let error: PgClientError | undefined;
      let inCopy = false;
      for (;;) {
        const m = await this.messages.next();
        switch (m.type) {
          case 'H':
            inCopy = true;
            break;
          case 'd':
            if (inCopy) yield m.body;
            break;
          case 'E':
            error = errorFromMessage(m.body);
            break;
          case 'T':
          case 'D':
            error ??= new PgClientError('expected COPY OUT, got rows');
            break;
          case 'Z':
            if (error) throw error;
            if (!inCopy) throw new PgClientError('expected COPY OUT');
            return;
          default:
            break;
        }
      }
    } finally {
      this.busy = false;
    }
  }

  /**
   * Starts a COPY BOTH command. Resolves once the server accepted it (CopyBothResponse); rejects
   * with the server's error otherwise.
   */
  async copyBoth(sql: string, opts: { maxQueued?: number } = {}): Promise<CopyBothSession> {
    this.claim();
    await this.write(frame('Q', cstr(sql)));
    for (;;) {
      const m = await this.messages.next();
      if (m.type === 'W') break;
      if (m.type === 'E') {
        const err = errorFromMessage(m.body);
        await this.untilReady();
        this.busy = false;
        throw err;
      }
      if (m.type === 'Z') {
        this.busy = false;
        throw new PgClientError('server ended the command without starting COPY BOTH');
      }
    }
    return new CopyBothRunner(this, this.messages, (p) => this.write(p), opts.maxQueued ?? 256, () => (this.busy = false)).session();
  }

  private async untilReady(): Promise<void> {
    for (;;) if ((await this.messages.next()).type === 'Z') return;
  }

  async close(): Promise<void> {
    if (this.isClosed) return;
    this.closed = true;
    try {
      this.socket.write(frame('X', Buffer.alloc(0)));
    } catch {
      /* already gone */
    }
    this.socket.end();
    const gone = this.whenClosed();
    const timer = setTimeout(() => this.socket.destroy(), 2000);
    await gone;
    clearTimeout(timer);
  }

  destroy(): void {
    this.closed = true;
    this.socket.destroy();
  }
}

/**
 * Pumps server messages of one COPY BOTH into a bounded queue. The copy ends when the server sends
 * CopyDone (then we answer with ours), CommandComplete (a walsender that finished streaming at
 * shutdown skips CopyDone), an error, or when the connection drops.
 */
class CopyBothRunner {
  private queue: Buffer[] = [];
  private serverDone = false;
  private failure: Error | undefined;
  private clientDone = false;
  private readonly finished: Promise<void>;
  private wakeConsumer: (() => void) | undefined;
  private wakePump: (() => void) | undefined;
  private abandoned = false;

  constructor(
    private readonly conn: PgConnection,
    private readonly messages: MessageStream,
    private readonly write: (data: Buffer) => Promise<void>,
    private readonly maxQueued: number,
    release: () => void,
  ) {
    this.finished = this.pump().finally(release);
    // Errors surface through `incoming` and `finish()`; this only keeps the rejection handled.
    this.finished.catch(() => undefined);
  }

  private notifyConsumer(): void {
    const w = this.wakeConsumer;
    this.wakeConsumer = undefined;
    w?.();
  }

  private async pump(): Promise<void> {
    try {
      for (;;) {
        while (this.queue.length >= this.maxQueued && !this.abandoned) {
          await new Promise<void>((resolve) => (this.wakePump = resolve));
        }
        const m = await this.messages.next();
        switch (m.type) {
          case 'd':
            if (!this.serverDone && !this.abandoned) this.queue.push(m.body);
            break;
          case 'c':
            this.serverDone = true;
            if (!this.clientDone) {
              this.clientDone = true;
              await this.write(frame('c', Buffer.alloc(0)));
            }
            break;
          case 'C':
            this.serverDone = true;
            break;
          case 'E':
            this.failure ??= errorFromMessage(m.body);
            this.serverDone = true;
            break;
          case 'Z':
            this.serverDone = true;
            return;
          default:
            break; // RowDescription/DataRow of a follow-up result (timeline switch), notices
        }
        this.notifyConsumer();
      }
    } catch (err) {
      // A walsender finishing at shutdown sends CommandComplete and just closes the connection.
      if (this.serverDone && !this.failure) return;
      this.failure ??= err as Error;
      this.serverDone = true;
      throw err;
    } finally {
      this.serverDone = true;
      this.notifyConsumer();
      if (this.failure && !this.conn.isClosed) this.conn.destroy();
    }
  }

  session(): CopyBothSession {
    return this.makeSession(this);
  }

  private makeSession(runner: CopyBothRunner): CopyBothSession {
    return {
      incoming: {
        async *[Symbol.asyncIterator]() {
          try {
            for (;;) {
              const next = runner.queue.shift();
              if (next !== undefined) {
                const w = runner.wakePump;
                runner.wakePump = undefined;
                w?.();
                yield next;
                continue;
              }
              if (runner.failure) throw runner.failure;
              if (runner.serverDone) return;
              await new Promise<void>((resolve) => (runner.wakeConsumer = resolve));
            }
          } finally {
            if (!runner.serverDone) {
              runner.abandoned = true;
              runner.queue = [];
              const w = runner.wakePump;
              runner.wakePump = undefined;
              w?.();
            }
          }
        },
      },
      async send(payload: Buffer) {
        if (runner.failure) throw runner.failure;
        if (runner.clientDone) throw new PgClientError('COPY already ended');
        const header = Buffer.allocUnsafe(5);
        header[0] = 0x64;
        header.writeInt32BE(4 + payload.length, 1);
        await runner.write(Buffer.concat([header, payload]));
      },
      async finish() {
        runner.abandoned = true;
        runner.queue = [];
        const w = runner.wakePump;
        runner.wakePump = undefined;
        w?.();
        if (!runner.clientDone && !runner.conn.isClosed) {
          runner.clientDone = true;
          await runner.write(frame('c', Buffer.alloc(0))).catch(() => undefined);
        }
        await runner.finished;
        if (runner.failure) throw runner.failure;
      },
    };
  }
}

function parseRowDescription(body: Buffer): string[] {
  const n = body.readInt16BE(0);
  const names: string[] = [];
  let off = 2;
  for (let i = 0; i < n; i++) {
    const end = body.indexOf(0, off);
    names.push(body.toString('utf8', off, end));
    off = end + 1 + 18;
  }
  return names;
}

function parseDataRow(body: Buffer): (string | null)[] {
  const n = body.readInt16BE(0);
  const values: (string | null)[] = [];
  let off = 2;
  for (let i = 0; i < n; i++) {
    const len = body.readInt32BE(off);
    off += 4;
    if (len < 0) values.push(null);
    else {
      values.push(body.toString('utf8', off, off + len));
      off += len;
    }
  }
  return values;
}

function openSocket(opts: PgConnectOptions): Promise<net.Socket> {
  const timeoutMs = opts.connectTimeoutMs ?? 10_000;
  const isUnix = opts.host.startsWith('/');
  const socket = isUnix ? net.connect({ path: path.join(opts.host, `.s.PGSQL.${opts.port}`) }) : net.connect({ host: opts.host, port: opts.port });
  const where = isUnix ? `${opts.host} (port ${opts.port})` : `${opts.host}:${opts.port}`;
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new PgClientError(`connecting to ${where} timed out after ${timeoutMs} ms`));
    }, timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.setNoDelay(true);
      resolve(socket);
    });
    socket.once('error', (e) => {
      clearTimeout(timer);
      reject(new PgClientError(`cannot connect to ${where}: ${e.message}`));
    });
  });
}
