/**
 * Atomic, single-fsync persistence of a small JSON document. The file has two fixed-size slots;
 * each save writes the slot not holding the newest copy (sequence number, length, SHA-256 and the
 * JSON) and fdatasyncs it. A torn write damages at most the slot being written, whose checksum then
 * fails, so loading always finds the previous complete state. This keeps the WAL acknowledgement
 * path at one fsync for the data and one for the state instead of a write-rename-fsync dance.
 */
import { createHash } from 'node:crypto';
import { constants, promises as fsp } from 'node:fs';

const SLOT_SIZE = 64 * 1024;
const HEADER = 4 + 8 + 4 + 32; // magic, sequence, length, sha256
const MAGIC = 0x44435343; // "DCSC"
export const MAX_CONTROL_JSON = SLOT_SIZE - HEADER;

export class ControlFile {
  private constructor(
    private readonly fh: fsp.FileHandle,
    private seq: bigint,
  ) {}

  /** Opens (creating if needed) and returns the newest valid document, or null if there is none. */
  static async open(file: string): Promise<{ control: ControlFile; document: unknown }> {
    const fh = await fsp.open(file, constants.O_RDWR | constants.O_CREAT, 0o600);
    try {
      let best: { seq: bigint; doc: unknown } | undefined;
      for (const slot of [0, 1]) {
        const buf = Buffer.alloc(SLOT_SIZE);
        const { bytesRead } = await fh.read(buf, 0, SLOT_SIZE, slot * SLOT_SIZE);
        const parsed = parseSlot(buf.subarray(0, bytesRead));
        if (parsed && (!best || parsed.seq > best.seq)) best = parsed;
      }
      return { control: new ControlFile(fh, best?.seq ?? 0n), document: best?.doc ?? null };
    } catch (err) {
      await fh.close();
      throw err;
    }
  }

  async save(document: unknown): Promise<void> {
    const json = Buffer.from(JSON.stringify(document), 'utf8');
    if (json.length > MAX_CONTROL_JSON) throw new Error(`control document of ${json.length} bytes exceeds ${MAX_CONTROL_JSON}`);
    const seq = this.seq + 1n;
    const buf = Buffer.alloc(HEADER + json.length);
    buf.writeUInt32BE(MAGIC, 0);
    buf.writeBigUInt64BE(seq, 4);
    buf.writeUInt32BE(json.length, 12);
    createHash('sha256').update(buf.subarray(4, 16)).update(json).digest().copy(buf, 16);
    json.copy(buf, HEADER);
    await this.fh.write(buf, 0, buf.length, Number(seq % 2n) * SLOT_SIZE);
    await this.fh.datasync();
    this.seq = seq;
  }

  async close(): Promise<void> {
    await this.fh.close();
  }
}

function parseSlot(buf: Buffer): { seq: bigint; doc: unknown } | undefined {
  if (buf.length < HEADER || buf.readUInt32BE(0) !== MAGIC) return undefined;
  const len = buf.readUInt32BE(12);
  if (len > MAX_CONTROL_JSON || HEADER + len > buf.length) return undefined;
  const json = buf.subarray(HEADER, HEADER + len);
  const sum = createHash('sha256').update(buf.subarray(4, 16)).update(json).digest();
  if (!sum.equals(buf.subarray(16, 48))) return undefined;
  try {
    return { seq: buf.readBigUInt64BE(4), doc: JSON.parse(json.toString('utf8')) };
  } catch {
    return undefined;
  }
}
