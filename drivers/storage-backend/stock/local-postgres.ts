/**
 * What the pusher learns from the compute's own data directory: how to reach the postmaster, whether
 * it is still alive, and where the image it started from ends.
 */
import { readFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import path from 'node:path';
import type { Lsn } from '../../../model/lsn';

export interface PostmasterInfo {
  pid: number;
  port: number;
  /** First Unix socket directory, or '' when Postgres listens on TCP only. */
  socketDir: string;
  /** First listen address ('' or '*' when unspecified). */
  listenAddress: string;
}

/** Parses PGDATA/postmaster.pid (pid, data dir, start time, port, socket dir, listen address, ...). */
export function readPostmasterPid(pgdata: string): PostmasterInfo {
  const file = path.join(pgdata, 'postmaster.pid');
  let lines: string[];
  try {
    lines = readFileSync(file, 'utf8').split('\n');
  } catch (err) {
    throw new Error(`Postgres is not running in ${pgdata}: cannot read ${file} (${(err as Error).message})`);
  }
  const pid = Number(lines[0]);
  const port = Number(lines[3]);
  if (!Number.isInteger(pid) || pid <= 0 || !Number.isInteger(port) || port <= 0) throw new Error(`${file} is malformed`);
  return { pid, port, socketDir: (lines[4] ?? '').trim(), listenAddress: (lines[5] ?? '').trim().split(/[\s,]+/)[0] ?? '' };
}


/** Where to connect: the Unix socket if there is one, else the listen address (loopback for '*'). */
export function connectHost(info: PostmasterInfo): string {
  if (info.socketDir) return info.socketDir;
  if (!info.listenAddress || info.listenAddress === '*' || info.listenAddress === '0.0.0.0') return '127.0.0.1';
  return info.listenAddress;
}

const MAXALIGN = 8n;
const SHORT_PAGE_HEADER = 24n;
const LONG_PAGE_HEADER = 40n;

export function walFileName(tli: number, lsn: Lsn, segSize: number): string {
  const segno = lsn / BigInt(segSize);
  const perId = 0x100000000n / BigInt(segSize);
  const hex = (n: bigint | number) => n.toString(16).toUpperCase().padStart(8, '0');
  return `${hex(tli)}${hex(segno / perId)}${hex(segno % perId)}`;
}

/** The LSN just past `len` bytes of record data starting at `start`, skipping page headers on the way. */
export function advanceOverPages(start: Lsn, len: number, pageSize: number, segSize: number): Lsn {
  const page = BigInt(pageSize);
  const seg = BigInt(segSize);
  let pos = start;
  let remaining = BigInt(len);
  while (remaining > 0n) {
    const inPage = pos % page;
    if (inPage === 0n) {
      pos += pos % seg === 0n ? LONG_PAGE_HEADER : SHORT_PAGE_HEADER;
      continue;
    }
    const take = page - inPage < remaining ? page - inPage : remaining;
    pos += take;
    remaining -= take;
  }
  return pos;
}

/** Where the record after one ending at `end` starts: MAXALIGN'd, past a page header if on a page boundary. */
export function nextRecordStart(end: Lsn, pageSize: number, segSize: number): Lsn {
  let pos = (end + MAXALIGN - 1n) & ~(MAXALIGN - 1n);
  if (pos % BigInt(pageSize) === 0n) pos += pos % BigInt(segSize) === 0n ? LONG_PAGE_HEADER : SHORT_PAGE_HEADER;
  return pos;
}

/** A record's end as PostgreSQL reports it (EndRecPtr): the end of its bytes, MAXALIGN'd. */
export function alignedRecordEnd(end: Lsn): Lsn {
  return (end + MAXALIGN - 1n) & ~(MAXALIGN - 1n);
}

/**
 * Where the checkpoint record at `checkpointLsn` ends (MAXALIGN'd, as PostgreSQL's flush position
 * after writing it), read from the record's xl_tot_len in pg_wal. The length field is the first
 * field of the record and records are 8-byte aligned, so it never straddles a page boundary.
 */
export async function checkpointRecordEnd(pgdata: string, tli: number, checkpointLsn: Lsn, pageSize: number, segSize: number): Promise<Lsn> {
  const file = path.join(pgdata, 'pg_wal', walFileName(tli, checkpointLsn, segSize));
  const fh = await open(file, 'r');
  try {
    const buf = Buffer.alloc(4);
    const { bytesRead } = await fh.read(buf, 0, 4, Number(checkpointLsn % BigInt(segSize)));
    if (bytesRead !== 4) throw new Error(`${file} is too short to hold the checkpoint record at ${checkpointLsn}`);
    const totLen = buf.readUInt32LE(0);
    if (totLen < 24 || totLen > 1024 * 1024) throw new Error(`implausible checkpoint record length ${totLen} in ${file}`);
    return alignedRecordEnd(advanceOverPages(checkpointLsn, totLen, pageSize, segSize));
  } finally {
    await fh.close();
  }
}
