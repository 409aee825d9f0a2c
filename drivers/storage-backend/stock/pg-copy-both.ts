/** COPY BOTH over a PgConnection: the server's messages pumped into a bounded queue, our data written back. */
import type { PgConnection } from './pg-client';
import { errorFromMessage, frame, PgClientError, type MessageStream } from './pg-wire';

/** A push/pull stream inside COPY BOTH. */
export interface CopyBothSession {
  /** CopyData payloads from the server until it ends its side of the copy. Throws on a server error. */
  incoming: AsyncIterable<Buffer>;
  send(payload: Buffer): Promise<void>;
  /** Ends our side (CopyDone) and waits until the server completes the command. */
  finish(): Promise<void>;
}

/**
 * Pumps server messages of one COPY BOTH into a bounded queue. The copy ends when the server sends
 * CopyDone (then we answer with ours), CommandComplete (a walsender that finished streaming at
 * shutdown skips CopyDone), an error, or when the connection drops.
 */
export class CopyBothRunner {
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
