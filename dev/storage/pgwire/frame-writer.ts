/** Frame writing for the wire-protocol server, bounded: a client that reads nothing is disconnected. */
import type net from 'node:net';

/** The peer closed the connection or the socket failed while we were writing. */
export class ConnectionGone extends Error {}

/** The peer read nothing of what we sent for too long: the connection was closed. */
export class WriteStalled extends ConnectionGone {}

/** Writes frames to the socket, waiting for 'drain' whenever the kernel buffer is full, at most `stallMs`. */
export class FrameWriter {
  constructor(
    private readonly socket: net.Socket,
    private readonly stallMs: number,
  ) {}

  async write(...frames: Buffer[]): Promise<void> {
    let flushed = true;
    for (const f of frames) {
      if (this.socket.destroyed || !this.socket.writable) throw new ConnectionGone('connection closed');
      flushed = this.socket.write(f);
    }
    if (!flushed) await this.drain();
  }

  private drain(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const done = (err?: Error) => {
        clearTimeout(stall);
        this.socket.off('drain', onDrain);
        this.socket.off('close', onClose);
        if (err) reject(err);
        else resolve();
      };
      const onDrain = () => done();
      const onClose = () => done(new ConnectionGone('connection closed'));
      const stall = setTimeout(() => {
        done(new WriteStalled(`the client read nothing of what was sent for ${this.stallMs} ms`));
        this.socket.destroy();
      }, this.stallMs);
      this.socket.on('drain', onDrain);
      this.socket.on('close', onClose);
    });
  }
}
