/**
 * COPY text data (as pg_dump writes a table's data) cut at row ends into batches of about a given
 * size, each with its byte range in the data, so a copy can resume after the batches committed.
 */
export const NL = 0x0a;
const END_MARKER_AFTER_ROW = Buffer.from('\n\\.\n');

/** A batch of rows: the stream's chunks (or parts of them) as they came, never copied together. */
export interface RowBatch {
  start: number;
  chunks: Buffer[];
  length: number;
}

/** The bytes [from, to) of a batch, relative to the stream, as parts of its chunks. */
export function sliceBatch(batch: RowBatch, from: number, to: number): Buffer[] {
  const out: Buffer[] = [];
  let at = batch.start;
  for (const c of batch.chunks) {
    const s = Math.max(from, at);
    const e = Math.min(to, at + c.length);
    if (s < e) out.push(c.subarray(s - at, e - at));
    at += c.length;
    if (at >= to) break;
  }
  return out;
}

/** How many bytes at the end of `chunk` may be the start of the end marker's "\n\\.\n" (held back for the next chunk). */
function markerPrefixAtEnd(chunk: Buffer): number {
  const n = chunk.length;
  if (n >= 3 && chunk[n - 3] === NL && chunk[n - 2] === 0x5c && chunk[n - 1] === 0x2e) return 3;
  if (n >= 2 && chunk[n - 2] === NL && chunk[n - 1] === 0x5c) return 2;
  if (n >= 1 && chunk[n - 1] === NL) return 1;
  return 0;
}

/**
 * Cuts a stream of COPY text data into row-aligned batches of at least `batchBytes` (the last may
 * be shorter), up to the `\.` line that ends the data; what follows it is ignored. The stream's
 * chunks are passed on as they are (a chunk split at a row end becomes two views of it).
 */
export async function* rowBatches(data: AsyncIterable<Buffer>, batchBytes: number): AsyncGenerator<RowBatch> {
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  let offset = 0;
  let ended = false;
  // The data starts at a row start, as if after a newline: a virtual one, never passed on, lets
  // the marker search look for "\n\\.\n" everywhere.
  let carry: Buffer | undefined = Buffer.from('\n');
  let virtualNewline = true;
  const take = (): RowBatch => {
    const batch = { start: offset, chunks: pending, length: pendingBytes };
    offset += pendingBytes;
    pending = [];
    pendingBytes = 0;
    return batch;
  };
  const add = (c: Buffer) => {
    if (c.length === 0) return;
    pending.push(c);
    pendingBytes += c.length;
  };
  for await (const incoming of data) {
    if (ended) continue; // drain: the caller waits for the producer to exit
    const chunk: Buffer = carry ? Buffer.concat([carry, incoming]) : incoming;
    carry = undefined;
    const lead = virtualNewline ? 1 : 0;
    const marker = chunk.indexOf(END_MARKER_AFTER_ROW);
    if (marker !== -1) {
      if (marker + 1 > lead) add(chunk.subarray(lead, marker + 1));
      ended = true;
      continue;
    }
    const hold = markerPrefixAtEnd(chunk);
    if (hold > 0) carry = chunk.subarray(chunk.length - hold);
    if (chunk.length - hold > lead) add(chunk.subarray(lead, chunk.length - hold));
    virtualNewline = virtualNewline && hold === chunk.length;
    if (pendingBytes < batchBytes) continue;
    // Cut after the last complete row; the partial row after it starts the next batch.
    const rest: Buffer[] = [];
    let cut = false;
    while (pending.length > 0) {
      const last = pending.at(-1)!;
      const nl = last.lastIndexOf(NL);
      if (nl !== -1) {
        pending[pending.length - 1] = last.subarray(0, nl + 1);
        pendingBytes -= last.length - nl - 1;
        if (nl + 1 < last.length) rest.unshift(last.subarray(nl + 1));
        cut = true;
        break;
      }
      pending.pop();
      pendingBytes -= last.length;
      rest.unshift(last);
    }
    if (cut && pendingBytes > 0) yield take();
    pending = rest;
    pendingBytes = rest.reduce((n, c) => n + c.length, 0);
  }
  if (!ended && carry) {
    // No end marker line: the data ends with the stream; a "\\." without its newline at the very end is the marker.
    const tail = carry.length === 3 && carry[1] === 0x5c ? carry.subarray(0, 1) : carry;
    add(tail.subarray(virtualNewline ? 1 : 0));
  }
  if (pendingBytes > 0) {
    if (!ended && pending.at(-1)!.at(-1) !== NL) add(Buffer.from('\n'));
    yield take();
  }
}
