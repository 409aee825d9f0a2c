/**
 * The WAL the pusher received from Postgres and still needs to hand to some safekeeper: a contiguous
 * byte range [start, end) kept as the chunks Postgres sent.
 */
import type { Lsn } from '../../../model/lsn';

export class WalBuffer {
  private chunks: { start: Lsn; data: Buffer }[] = [];
  private bytes = 0;

  constructor(private startLsn: Lsn) {}

  /** First LSN still held (equals `end` when empty). */
  get start(): Lsn {
    return this.chunks[0]?.start ?? this.startLsn;
  }

  get end(): Lsn {
    const last = this.chunks[this.chunks.length - 1];
    return last ? last.start + BigInt(last.data.length) : this.startLsn;
  }

  get size(): number {
    return this.bytes;
  }

  /** Appends WAL that starts at or before `end`; bytes already held are skipped. A gap is an error. */
  append(start: Lsn, data: Buffer): void {
    const end = this.end;
    if (start > end) throw new Error(`WAL gap: received data from ${start} but the stream ended at ${end}`);
    const skip = end - start;
    if (skip >= BigInt(data.length)) return;
    const fresh = data.subarray(Number(skip));
    this.chunks.push({ start: end, data: fresh });
    this.bytes += fresh.length;
  }

  /** Up to `max` bytes from `from` (which must lie within [start, end]). */
  read(from: Lsn, max: number): Buffer {
    if (from < this.start || from > this.end) throw new RangeError(`WAL at ${from} is not buffered (have ${this.start}..${this.end})`);
    const parts: Buffer[] = [];
    let need = max;
    let pos = from;
    for (const c of this.chunks) {
      const cEnd = c.start + BigInt(c.data.length);
      if (cEnd <= pos) continue;
      if (need <= 0) break;
      const off = Number(pos - c.start);
      const piece = c.data.subarray(off, Math.min(c.data.length, off + need));
      parts.push(piece);
      need -= piece.length;
      pos += BigInt(piece.length);
    }
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
  }

  /** Drops whole chunks that end at or before `lsn`. */
  trimTo(lsn: Lsn): void {
    while (this.chunks.length > 0) {
      const c = this.chunks[0]!;
      if (c.start + BigInt(c.data.length) > lsn) break;
      this.chunks.shift();
      this.bytes -= c.data.length;
      this.startLsn = c.start + BigInt(c.data.length);
    }
  }
}
