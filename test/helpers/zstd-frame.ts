/**
 * A zstd frame written by hand from RFC 8878 (raw blocks, no content size, as a streaming encoder
 * like Neon's leaves it): an encoder independent of the library under test.
 */
export function rawZstdFrame(data: Uint8Array, declaredSize?: bigint): Buffer {
  const parts: Buffer[] = [Buffer.from([0x28, 0xb5, 0x2f, 0xfd])];
  if (declaredSize === undefined) parts.push(Buffer.from([0x00, 0x50])); // no size; window 2^(10+10)
  else {
    const size = Buffer.alloc(8);
    size.writeBigUInt64LE(declaredSize);
    parts.push(Buffer.from([0xe0]), size); // 8-byte content size, single segment
  }
  const maxBlock = 64 * 1024;
  for (let at = 0; at < data.length || at === 0; at += maxBlock) {
    const block = data.subarray(at, at + maxBlock);
    const last = at + maxBlock >= data.length ? 1 : 0;
    const header = (block.length << 3) | last; // block type 0: raw
    parts.push(Buffer.from([header & 0xff, (header >> 8) & 0xff, (header >> 16) & 0xff]), Buffer.from(block));
    if (last) break;
  }
  return Buffer.concat(parts);
}
