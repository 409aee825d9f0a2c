/**
 * A small PostgreSQL v3 wire-protocol server: startup (SSL/GSS refused, optional cleartext
 * password), the simple query protocol, COPY OUT and COPY BOTH streams. The dev pageserver and
 * safekeepers speak Neon's libpq protocols through it, so stock clients (psql, pg) work unchanged.
 */
import { createHash, randomInt, timingSafeEqual } from 'node:crypto';
import net from 'node:net';
import * as msg from './messages';
import { ConnectionGone, FrameWriter, WriteStalled } from './frame-writer';
import { MessageReader, ProtocolViolation, type FrontendMessage } from './reader';

export interface PgWireSession {
  user: string;
  database: string;
  applicationName?: string;
  /** All startup parameters; `-c key=value` / `--key=value` pairs of `options` land here too. */
  params: Record<string, string>;
}

export type QueryResult =
  | { kind: 'rows'; columns: string[]; rows: (string | null)[][]; tag?: string }
  | { kind: 'command'; tag: string }
  | { kind: 'copyOut'; stream: NodeJS.ReadableStream | AsyncIterable<Buffer> }
  | {
      kind: 'copyBoth';
      run: (io: { incoming: AsyncIterable<Buffer>; send(payload: Buffer): Promise<void> }) => Promise<void>;
    };

/** An error reported to the client as ErrorResponse; the session stays usable. */
export class PgWireError extends Error {
  override name = 'PgWireError';
  constructor(
    message: string,
    public code = 'XX000',
  ) {
    super(message);
  }
}

export interface PgWireServerOptions {
  host: string;
  /** 0 = any free port. */
  port: number;
  /** If set, clients must send it (cleartext password authentication). */
  password?: string;
  onQuery(session: PgWireSession, sql: string): Promise<QueryResult>;
  log?: (line: string) => void;
  /**
   * How long a client may leave what we send unread before the connection is closed (default
   * DEFAULT_WRITE_STALL_MS). Without it, a client that stops reading mid-COPY (its consumer
   * failed) holds the connection, and what the stream pins, forever.
   */
  writeStallTimeoutMs?: number;
}

export const DEFAULT_WRITE_STALL_MS = 120_000;

export interface PgWireServer {
  port: number;
  close(): Promise<void>;
}

const MAX_MESSAGE_BYTES = 1024 * 1024;
/** CopyData payloads we send are split to this size so no client meets a message above our own cap. */
const MAX_COPY_CHUNK = 256 * 1024;

const PROTOCOL_V3 = 196608;
const SSL_REQUEST = 80877103;
const GSSENC_REQUEST = 80877104;
const CANCEL_REQUEST = 80877102;

function passwordMatches(given: string, expected: string): boolean {
  // Hash both so the comparison is constant time regardless of the lengths.
  const a = createHash('sha256').update(given, 'utf8').digest();
  const b = createHash('sha256').update(expected, 'utf8').digest();
  return timingSafeEqual(a, b);
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

async function* toBuffers(stream: NodeJS.ReadableStream | AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  for await (const chunk of stream as AsyncIterable<Buffer | string>) {
    yield typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : chunk;
  }
}

class Connection {
  private readonly reader: MessageReader;
  private readonly writer: FrameWriter;
  private session: PgWireSession | undefined;

  constructor(
    private readonly socket: net.Socket,
    private readonly opts: PgWireServerOptions,
    private readonly log: (line: string) => void,
  ) {
    this.reader = new MessageReader(socket, MAX_MESSAGE_BYTES);
    this.writer = new FrameWriter(socket, opts.writeStallTimeoutMs ?? DEFAULT_WRITE_STALL_MS);
  }

  async serve(): Promise<void> {
    try {
      if (!(await this.startup())) return;
      await this.queryLoop();
    } catch (err) {
      if (err instanceof WriteStalled) {
        this.log(`pgwire: closed the connection of ${this.peer()}: ${err.message}`);
      } else if (err instanceof ProtocolViolation) {
        this.log(`pgwire: protocol violation from ${this.peer()}: ${err.message}`);
        await this.fatal('08P01', err.message);
      } else if (!(err instanceof ConnectionGone)) {
        this.log(`pgwire: connection ${this.peer()} failed: ${errorText(err)}`);
        await this.fatal('XX000', errorText(err));
      }
    } finally {
      this.socket.end(() => this.socket.destroy());
    }
  }

  private peer(): string {
    return `${this.socket.remoteAddress ?? '?'}:${this.socket.remotePort ?? '?'}`;
  }

  private async fatal(code: string, message: string): Promise<void> {
    await this.writer.write(msg.errorResponse('FATAL', code, message)).catch(() => undefined);
  }

  /** Negotiates until a v3 StartupMessage and authentication succeed; false if the connection should just close. */
  private async startup(): Promise<boolean> {
    for (;;) {
      const packet = await this.reader.readStartupPacket();
      if (!packet) return false;
      if (packet.length < 4) throw new ProtocolViolation('startup packet too short');
      const code = packet.readInt32BE(0);
      if (code === SSL_REQUEST || code === GSSENC_REQUEST) {
        await this.writer.write(Buffer.from('N'));
        continue;
      }
      if (code === CANCEL_REQUEST) return false; // nothing runs long enough to be worth cancelling
      if (code !== PROTOCOL_V3) {
        throw new ProtocolViolation(`unsupported frontend protocol ${code >>> 16}.${code & 0xffff}: server supports 3.0`);
      }
      const params = msg.parseStartupParams(packet.subarray(4));
      if (params.options) Object.assign(params, { ...msg.parseOptions(params.options), options: params.options });
      const user = params.user;
      if (!user) {
        await this.fatal('28000', 'no PostgreSQL user name specified in startup packet');
        return false;
      }
      this.session = {
        user,
        database: params.database ?? user,
        ...(params.application_name !== undefined ? { applicationName: params.application_name } : {}),
        params,
      };
      if (this.opts.password !== undefined && !(await this.authenticate(user))) return false;
      await this.writer.write(
        msg.authenticationOk(),
        msg.parameterStatus('server_version', '15.0'),
        msg.parameterStatus('server_encoding', 'UTF8'),
        msg.parameterStatus('client_encoding', 'UTF8'),
        msg.parameterStatus('standard_conforming_strings', 'on'),
        msg.parameterStatus('DateStyle', 'ISO, MDY'),
        msg.parameterStatus('integer_datetimes', 'on'),
        msg.backendKeyData(randomInt(1, 2 ** 31 - 1), randomInt(0, 2 ** 31 - 1)),
        msg.readyForQuery(),
      );
      return true;
    }
  }

  private async authenticate(user: string): Promise<boolean> {
    await this.writer.write(msg.authenticationCleartextPassword());
    const reply = await this.reader.readMessage();
    if (!reply) return false;
    if (reply.type !== 'p') throw new ProtocolViolation(`expected a password message, got message type '${reply.type}'`);
    const given = reply.body.toString('utf8').replace(/\0$/, '');
    if (passwordMatches(given, this.opts.password!)) return true;
    this.log(`pgwire: password authentication failed for user ${JSON.stringify(user)} from ${this.peer()}`);
    await this.fatal('28P01', `password authentication failed for user "${user}"`);
    return false;
  }

  private async queryLoop(): Promise<void> {
    for (;;) {
      const m = await this.reader.readMessage();
      if (!m) return;
      switch (m.type) {
        case 'Q':
          await this.simpleQuery(m.body.toString('utf8').replace(/\0$/, ''));
          break;
        case 'X':
          return;
        case 'P':
        case 'B':
        case 'D':
        case 'E':
        case 'C':
        case 'H':
        case 'F':
          await this.refuseExtendedProtocol();
          break;
        case 'S':
          await this.writer.write(msg.readyForQuery());
          break;
        case 'd':
        case 'c':
        case 'f':
          // Copy messages arriving after a copy ended with an error are ignored, as PostgreSQL does.
          break;
        default:
          throw new ProtocolViolation(`invalid frontend message type ${m.type.charCodeAt(0)}`);
      }
    }
  }

  /** Error for the extended protocol, then discard messages until Sync as the protocol requires. */
  private async refuseExtendedProtocol(): Promise<void> {
    await this.writer.write(msg.errorResponse('ERROR', '0A000', 'unsupported: this server speaks only the simple query protocol'));
    for (;;) {
      const m = await this.reader.readMessage();
      if (!m) return;
      if (m.type === 'X') throw new ConnectionGone('terminated');
      if (m.type === 'S') break;
    }
    await this.writer.write(msg.readyForQuery());
  }

  private async simpleQuery(sql: string): Promise<void> {
    if (sql.trim() === '' || sql.trim() === ';') {
      await this.writer.write(msg.emptyQueryResponse(), msg.readyForQuery());
      return;
    }
    try {
      const result = await this.opts.onQuery(this.session!, sql);
      await this.sendResult(result);
    } catch (err) {
      if (err instanceof ConnectionGone || err instanceof ProtocolViolation) throw err;
      const code = err instanceof PgWireError ? err.code : 'XX000';
      if (!(err instanceof PgWireError)) this.log(`pgwire: query failed: ${errorText(err)}`);
      await this.writer.write(msg.errorResponse('ERROR', code, errorText(err)));
    }
    await this.writer.write(msg.readyForQuery());
  }

  private async sendResult(result: QueryResult): Promise<void> {
    switch (result.kind) {
      case 'command':
        await this.writer.write(msg.commandComplete(result.tag));
        return;
      case 'rows':
        await this.writer.write(msg.rowDescription(result.columns));
        for (const row of result.rows) {
          if (row.length !== result.columns.length) {
            throw new Error(`row has ${row.length} values for ${result.columns.length} columns`);
          }
          await this.writer.write(msg.dataRow(row));
        }
        await this.writer.write(msg.commandComplete(result.tag ?? `SELECT ${result.rows.length}`));
        return;
      case 'copyOut':
        await this.copyOut(result.stream);
        return;
      case 'copyBoth':
        await this.copyBoth(result.run);
        return;
    }
  }

  private async sendCopyData(payload: Buffer): Promise<void> {
    for (let off = 0; off < payload.length; off += MAX_COPY_CHUNK) {
      const part = payload.subarray(off, Math.min(payload.length, off + MAX_COPY_CHUNK));
      await this.writer.write(msg.copyDataHeader(part.length), part);
    }
  }

  private async copyOut(stream: NodeJS.ReadableStream | AsyncIterable<Buffer>): Promise<void> {
    await this.writer.write(msg.copyOutResponse());
    // A failing stream ends the copy with ErrorResponse (sent by the caller), which clients accept in COPY OUT.
    for await (const chunk of toBuffers(stream)) {
      if (chunk.length > 0) await this.sendCopyData(chunk);
    }
    await this.writer.write(msg.copyDone(), msg.commandComplete('COPY'));
  }

  private async copyBoth(run: Extract<QueryResult, { kind: 'copyBoth' }>['run']): Promise<void> {
    await this.writer.write(msg.copyBothResponse());
    const incoming = new CopyInStream(this.reader);
    await run({ incoming, send: (payload) => this.sendCopyData(payload) });
    await this.writer.write(msg.copyDone());
    // The copy ends only once both sides sent CopyDone: drain what the client still sends.
    await incoming.drain();
    await this.writer.write(msg.commandComplete('COPY'));
  }
}

/** The client's side of a COPY BOTH: CopyData payloads until CopyDone; CopyFail becomes an error. */
class CopyInStream implements AsyncIterable<Buffer> {
  private finished = false;

  constructor(private readonly reader: MessageReader) {}

  private async next(): Promise<Buffer | null> {
    while (!this.finished) {
      const m: FrontendMessage | null = await this.reader.readMessage();
      if (!m) throw new ConnectionGone('client closed the connection during COPY');
      switch (m.type) {
        case 'd':
          return m.body;
        case 'c':
          this.finished = true;
          return null;
        case 'f':
          this.finished = true;
          throw new PgWireError(`COPY from client failed: ${m.body.toString('utf8').replace(/\0$/, '')}`, '57014');
        case 'H':
        case 'S':
          continue; // Flush/Sync are allowed (and ignored) during copy
        case 'X':
          throw new ConnectionGone('client terminated during COPY');
        default:
          throw new ProtocolViolation(`unexpected message type '${m.type}' during COPY`);
      }
    }
    return null;
  }

  async drain(): Promise<void> {
    while ((await this.next()) !== null) {
      /* discard */
    }
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<Buffer> {
    for (;;) {
      const payload = await this.next();
      if (payload === null) return;
      yield payload;
    }
  }
}

export async function startPgWireServer(opts: PgWireServerOptions): Promise<PgWireServer> {
  const log = opts.log ?? (() => {});
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.setNoDelay(true);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {
      /* reported through the reader; never crash the server */
    });
    void new Connection(socket, opts, log).serve();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('error', (err) => log(`pgwire: listener error: ${err.message}`));
  const address = server.address();
  if (!address || typeof address === 'string') throw new Error('pgwire server has no TCP address');
  return {
    port: address.port,
    async close() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const s of sockets) s.destroy();
      await closed;
    },
  };
}
