/** File naming and durability helpers for a safekeeper timeline's WAL segment files. */
import { promises as fsp } from 'node:fs';

export function segmentFileName(segno: bigint): string {
  const hex = (n: bigint) => n.toString(16).toUpperCase().padStart(8, '0');
  return `00000001${hex(segno / 0x100n)}${hex(segno % 0x100n)}`;
}

export async function fsyncDir(dir: string): Promise<void> {
  const fh = await fsp.open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
