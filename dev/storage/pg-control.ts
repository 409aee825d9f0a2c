/**
 * Reads and patches PostgreSQL 15's `global/pg_control` (ControlFileData, little-endian x86-64
 * layout). The CRC32C position is found by searching for the offset whose stored value matches
 * the checksum of everything before it, and the layout is confirmed by the version number and the
 * float-format sentinel, so a different layout is refused rather than misread.
 */
import { closeSync, fchownSync, fsyncSync, openSync, readFileSync, renameSync, statSync, writeSync } from 'node:fs';
import path from 'node:path';

const CRC32C_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    table[i] = c >>> 0;
  }
  return table;
})();

/** Incremental CRC-32C (Castagnoli), as PostgreSQL's pg_crc32c: start with crc32cInit, end with crc32cFinish. */
export const crc32cInit = 0xffffffff;

export function crc32cUpdate(crc: number, data: Uint8Array): number {
  let c = crc;
  for (let i = 0; i < data.length; i++) c = CRC32C_TABLE[(c ^ data[i]!) & 0xff]! ^ (c >>> 8);
  return c >>> 0;
}

export function crc32cFinish(crc: number): number {
  return (crc ^ 0xffffffff) >>> 0;
}

export function crc32c(data: Uint8Array): number {
  return crc32cFinish(crc32cUpdate(crc32cInit, data));
}

export const PG15_CONTROL_VERSION = 1300;
const FLOAT_FORMAT = 1234567.0;

/** DBState from pg_control.h. */
export const DbState = {
  startup: 0,
  shutDown: 1,
  shutDownInRecovery: 2,
  shuttingDown: 3,
  inCrashRecovery: 4,
  inArchiveRecovery: 5,
  inProduction: 6,
} as const;
export type DbStateName = keyof typeof DbState;

// PG15 ControlFileData field offsets (x86-64): confirmed at parse time by version + float sentinel.
const OFF = {
  systemIdentifier: 0,
  pgControlVersion: 8,
  catalogVersion: 12,
  state: 16,
  checkPoint: 32,
  checkPointCopyRedo: 40,
  checkPointCopyTimeline: 48,
  minRecoveryPoint: 136,
  minRecoveryPointTli: 144,
  walLevel: 172,
  maxConnections: 180,
  maxWorkerProcesses: 184,
  maxWalSenders: 188,
  maxPreparedXacts: 192,
  maxLocksPerXact: 196,
  maxAlign: 204,
  floatFormat: 208,
  blcksz: 216,
  xlogBlcksz: 224,
  xlogSegSize: 228,
} as const;

export interface ControlFile {
  systemIdentifier: bigint;
  pgControlVersion: number;
  catalogVersion: number;
  state: number;
  stateName: DbStateName | 'unknown';
  /** LSN of the latest checkpoint record. */
  checkPoint: bigint;
  /** Redo LSN of the latest checkpoint (where recovery starts). */
  redo: bigint;
  timelineId: number;
  minRecoveryPoint: bigint;
  walLevel: number;
  maxConnections: number;
  maxWorkerProcesses: number;
  maxWalSenders: number;
  maxPreparedXacts: number;
  maxLocksPerXact: number;
  maxAlign: number;
  blcksz: number;
  xlogBlcksz: number;
  xlogSegSize: number;
  /** Byte offset of the CRC field (= bytes the CRC covers). */
  crcOffset: number;
}

export class PgControlError extends Error {
  override name = 'PgControlError';
}

function findCrcOffset(buf: Buffer): number {
  // ControlFileData is well under 1 KiB; the file is zero-padded to 8 KiB after it.
  let crc = crc32cInit;
  for (let off = 0; off + 4 <= Math.min(buf.length, 1024); off += 4) {
    if (off >= 16 && crc32cFinish(crc) === buf.readUInt32LE(off)) return off;
    crc = crc32cUpdate(crc, buf.subarray(off, off + 4));
  }
  throw new PgControlError('pg_control has no valid CRC32C (the file is corrupt or not a PostgreSQL control file)');
}

export function parseControlFile(buf: Buffer): ControlFile {
  if (buf.length < 512) throw new PgControlError(`pg_control is too short (${buf.length} bytes)`);
  const crcOffset = findCrcOffset(buf);
  const pgControlVersion = buf.readUInt32LE(OFF.pgControlVersion);
  if (pgControlVersion !== PG15_CONTROL_VERSION) {
    throw new PgControlError(`pg_control version ${pgControlVersion} is not PostgreSQL 15's (${PG15_CONTROL_VERSION})`);
  }
  if (buf.readDoubleLE(OFF.floatFormat) !== FLOAT_FORMAT) {
    throw new PgControlError('pg_control layout is not the expected PostgreSQL 15 x86-64 layout (float format sentinel mismatch)');
  }
  const state = buf.readUInt32LE(OFF.state);
  const stateName = (Object.entries(DbState).find(([, v]) => v === state)?.[0] as DbStateName | undefined) ?? 'unknown';
  return {
    systemIdentifier: buf.readBigUInt64LE(OFF.systemIdentifier),
    pgControlVersion,
    catalogVersion: buf.readUInt32LE(OFF.catalogVersion),
    state,
    stateName,
    checkPoint: buf.readBigUInt64LE(OFF.checkPoint),
    redo: buf.readBigUInt64LE(OFF.checkPointCopyRedo),
    timelineId: buf.readUInt32LE(OFF.checkPointCopyTimeline),
    minRecoveryPoint: buf.readBigUInt64LE(OFF.minRecoveryPoint),
    walLevel: buf.readInt32LE(OFF.walLevel),
    maxConnections: buf.readInt32LE(OFF.maxConnections),
    maxWorkerProcesses: buf.readInt32LE(OFF.maxWorkerProcesses),
    maxWalSenders: buf.readInt32LE(OFF.maxWalSenders),
    maxPreparedXacts: buf.readInt32LE(OFF.maxPreparedXacts),
    maxLocksPerXact: buf.readInt32LE(OFF.maxLocksPerXact),
    maxAlign: buf.readUInt32LE(OFF.maxAlign),
    blcksz: buf.readUInt32LE(OFF.blcksz),
    xlogBlcksz: buf.readUInt32LE(OFF.xlogBlcksz),
    xlogSegSize: buf.readUInt32LE(OFF.xlogSegSize),
    crcOffset,
  };
}

export function controlFilePath(dataDir: string): string {
  return path.join(dataDir, 'global', 'pg_control');
}

export function readControlFile(dataDir: string): ControlFile {
  const file = controlFilePath(dataDir);
  let buf: Buffer;
  try {
    buf = readFileSync(file);
  } catch (err) {
    throw new PgControlError(`cannot read ${file}: ${(err as Error).message}`);
  }
  try {
    return parseControlFile(buf);
  } catch (err) {
    if (err instanceof PgControlError) throw new PgControlError(`${file}: ${err.message}`);
    throw err;
  }
}

/** A copy of the control file bytes with a new state and a recomputed CRC. */
export function withState(buf: Buffer, state: DbStateName): Buffer {
  const { crcOffset } = parseControlFile(buf);
  const out = Buffer.from(buf);
  out.writeUInt32LE(DbState[state], OFF.state);
  out.writeUInt32LE(crc32c(out.subarray(0, crcOffset)), crcOffset);
  return out;
}

/** Rewrites the data directory's control file with a new state (write to a temp file, fsync, rename). */
export function setControlState(dataDir: string, state: DbStateName): void {
  const file = controlFilePath(dataDir);
  const updated = withState(readFileSync(file), state);
  const tmp = `${file}.tmp`;
  const owner = statSync(file);
  const fd = openSync(tmp, 'w', 0o600);
  try {
    // Keep the owner: the server may run as another user than this process.
    fchownSync(fd, owner.uid, owner.gid);
    writeSync(fd, updated);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, file);
}
