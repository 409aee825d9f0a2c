/**
 * CRC-32C (Castagnoli), as PostgreSQL computes it for pg_control and WAL records: reflected
 * polynomial 0x82F63B78, initial value and final XOR 0xFFFFFFFF. Table-driven, one byte at a time;
 * only small inputs (pg_control's first few hundred bytes) go through it.
 */
const TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0x82f63b78 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

export function crc32c(data: Uint8Array, initial = 0): number {
  let crc = (initial ^ 0xffffffff) >>> 0;
  for (let i = 0; i < data.length; i++) crc = TABLE[(crc ^ data[i]!) & 0xff]! ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}
