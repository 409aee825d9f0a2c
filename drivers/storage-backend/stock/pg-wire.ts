/** The PostgreSQL v3 wire format: message framing, the backend message stream, error and row decoding. */
import type net from 'node:net';

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

export interface BackendMessage {
  type: string;
  body: Buffer;
}

export const MAX_BACKEND_MESSAGE = 64 * 1024 * 1024;

export function frame(type: string, body: Buffer): Buffer {
  const out = Buffer.allocUnsafe(5 + body.length);
  out[0] = type.charCodeAt(0);
  out.writeInt32BE(4 + body.length, 1);
  body.copy(out, 5);
  return out;
}

export const cstr = (s: string): Buffer => Buffer.from(`${s}\0`, 'utf8');

export function parseErrorFields(body: Buffer): { message: string; code?: string } {
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

export function errorFromMessage(body: Buffer): PgClientError {
  const f = parseErrorFields(body);
  return new PgClientError(f.message, f.code);
}

/** Buffers socket bytes and hands out whole backend messages. */
export class MessageStream {
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

export function parseRowDescription(body: Buffer): string[] {
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

export function parseDataRow(body: Buffer): (string | null)[] {
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
