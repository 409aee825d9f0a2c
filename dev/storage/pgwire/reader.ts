import type { Socket } from 'node:net';

/** A frontend message that breaks the protocol: the connection gets a FATAL error and is closed. */
export class ProtocolViolation extends Error {
  override name = 'ProtocolViolation';
}

export interface FrontendMessage {
  /** The type byte as a character ('Q', 'X', 'd', ...). */
  type: string;
  body: Buffer;
}

/**
 * Pulls length-prefixed frontend messages off a socket. Reading is demand driven: the socket is
 * paused while more than one message's worth of bytes waits, so a fast sender cannot make the
 * server buffer without bound.
 */
export class MessageReader {
  /** Unread bytes are buf[pos..]. */
  private buf: Buffer = Buffer.alloc(0);
  private pos = 0;
  private ended = false;
  private failure: Error | undefined;
  private wake: (() => void) | undefined;

  constructor(
    private readonly socket: Socket,
    private readonly maxMessageBytes: number,
  ) {
    socket.on('data', (chunk: Buffer) => {
      this.buf = this.pos === this.buf.length ? chunk : Buffer.concat([this.buf.subarray(this.pos), chunk]);
      this.pos = 0;
      if (this.buffered > this.maxMessageBytes + 5) socket.pause();
      this.notify();
    });
    socket.on('end', () => {
      this.ended = true;
      this.notify();
    });
    socket.on('close', () => {
      this.ended = true;
      this.notify();
    });
    socket.on('error', (err) => {
      this.failure = err;
      this.notify();
    });
  }

  private notify(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }

  /** Resolves once at least `n` bytes are buffered; false if the peer went away first. */
  private async fill(n: number): Promise<boolean> {
    while (this.buffered < n) {
      if (this.failure || this.ended) return false;
      if (this.socket.isPaused()) this.socket.resume();
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
    return true;
  }

  private get buffered(): number {
    return this.buf.length - this.pos;
  }

  /** Copies the bytes out so the caller's message does not pin the whole receive buffer. */
  private take(n: number): Buffer {
    const out = Buffer.from(this.buf.subarray(this.pos, this.pos + n));
    this.pos += n;
    if (this.buffered <= this.maxMessageBytes && this.socket.isPaused()) this.socket.resume();
    return out;
  }

  private peekInt32(offset: number): number {
    return this.buf.readInt32BE(this.pos + offset);
  }

  private checkedLength(length: number, minimum: number): number {
    if (length < minimum) throw new ProtocolViolation(`invalid message length ${length}`);
    if (length > this.maxMessageBytes) {
      throw new ProtocolViolation(`message of ${length} bytes exceeds the limit of ${this.maxMessageBytes} bytes`);
    }
    return length;
  }

  /** A startup-phase packet (no type byte): int32 length including itself, then the body. */
  async readStartupPacket(): Promise<Buffer | null> {
    if (!(await this.fill(4))) return null;
    const length = this.checkedLength(this.peekInt32(0), 8);
    if (!(await this.fill(length))) return null;
    return this.take(length).subarray(4);
  }

  /** The next typed message, or null when the peer closed the connection. */
  async readMessage(): Promise<FrontendMessage | null> {
    if (!(await this.fill(5))) return null;
    const length = this.checkedLength(this.peekInt32(1), 4);
    if (!(await this.fill(1 + length))) return null;
    const raw = this.take(1 + length);
    return { type: String.fromCharCode(raw[0]!), body: raw.subarray(5) };
  }
}
