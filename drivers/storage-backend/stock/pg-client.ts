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
import { CopyBothRunner, type CopyBothSession } from './pg-copy-both';
import { cstr, errorFromMessage, frame, MessageStream, parseDataRow, parseRowDescription, PgClientError } from './pg-wire';

export { PgClientError } from './pg-wire';
export type { CopyBothSession } from './pg-copy-both';

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

export interface SimpleResult {
  columns: string[];
  rows: (string | null)[][];
  tag: string;
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
