/**
 * PostgreSQL's `global/pg_control` (ControlFileData, format 1300: PostgreSQL 13 to 16 on 64-bit
 * little-endian machines) and the CRC-32C that guards it, in one place for every part of the
 * dev storage. Two readers share the layout:
 *
 * - parseControlFile: a data directory the dev storage itself runs. The CRC field is found by
 *   searching for the offset whose stored value matches the checksum of everything before it,
 *   and the layout is confirmed by the version number and the float-format sentinel, so a
 *   different layout is refused rather than misread. withState/setControlState patch it.
 * - parsePgControl: an untrusted upload (import_pgdata). Exact file size, a known catalog
 *   version, the matching control format, the CRC at its fixed place, 8 KiB blocks, 1 GiB
 *   segments and a clean shutdown, each refused with a message naming what is wrong.
 *
 * Offsets were checked against a real PostgreSQL 15 pg_control and pg_controldata's reading of it.
 */
import { writeFileAtomicSync } from '../../common/atomic-write';
import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { formatLsn } from '../../model/lsn';

const CRC32C_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    table[i] = c >>> 0;
  }
  return table;
})();

/**
 * Incremental CRC-32C (Castagnoli: reflected polynomial 0x82F63B78), as PostgreSQL's pg_crc32c
 * computes it for pg_control and WAL records: start with crc32cInit, end with crc32cFinish.
 */
export const crc32cInit = 0xffffffff;

export function crc32cUpdate(crc: number, data: Uint8Array): number {
  let c = crc;
  for (let i = 0; i < data.length; i++) c = CRC32C_TABLE[(c ^ data[i]!) & 0xff]! ^ (c >>> 8);
  return c >>> 0;
}

export function crc32cFinish(crc: number): number {
  return (crc ^ 0xffffffff) >>> 0;
}

/** The CRC-32C of `data`; `previous` continues a finished CRC over more bytes. */
export function crc32c(data: Uint8Array, previous = 0): number {
  return crc32cFinish(crc32cUpdate((previous ^ 0xffffffff) >>> 0, data));
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

// ControlFileData field offsets (format 1300, x86-64). parseControlFile confirms them by version +
// float sentinel; parsePgControl by the CRC at its fixed place.
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
  relsegSize: 220,
  xlogBlcksz: 224,
  xlogSegSize: 228,
  crc: 288,
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
  const { uid, gid } = statSync(file);
  // Keep the owner: the server may run as another user than this process.
  writeFileAtomicSync(file, updated, { mode: 0o600, owner: { uid, gid }, durability: 'file' });
}

/* ---- Untrusted uploads (import_pgdata) ---- */

export const PG_CONTROL_FILE_SIZE = 8192;

/** Catalog versions (catversion.h) of the released majors the import format knows. */
const CATALOG_VERSIONS: Record<number, number> = {
  202107181: 14,
  202209061: 15,
  202307071: 16,
  202406281: 17,
};

const CONTROL_FORMAT_BY_MAJOR: Record<number, number> = { 14: 1300, 15: 1300, 16: 1300, 17: 1700 };

const DB_STATE_TEXT = ['starting up', 'shut down', 'shutting down', 'in crash recovery', 'in archive recovery', 'in production'] as const;

export interface PgControlInfo {
  pgMajor: number;
  catalogVersion: number;
  systemIdentifier: bigint;
  state: string;
  /** The last checkpoint record's location, aligned to 8 bytes as Neon does. */
  checkpointLsn: string;
  checkpointLsnValue: bigint;
  timeline: number;
  blockSize: number;
  segmentBlocks: number;
  walSegmentSize: number;
}

/** The catalog version's major, or an error naming the unknown version. */
export function majorOfCatalogVersion(catalogVersion: number): number {
  const major = CATALOG_VERSIONS[catalogVersion];
  if (major === undefined) throw new PgControlError(`pg_control has an unrecognized catalog version ${catalogVersion} (known: ${Object.keys(CATALOG_VERSIONS).join(', ')})`);
  return major;
}

/**
 * Parses and checks an uploaded pg_control: exact size, known catalog version, matching control
 * format, CRC-32C, then the settings a page-level import relies on (8 KiB blocks, 1 GiB
 * segments) and a clean shutdown. `startableMajors` limits which versions are accepted at all.
 */
export function parsePgControl(buf: Buffer, startableMajors: readonly number[] = [15]): PgControlInfo {
  if (buf.length !== PG_CONTROL_FILE_SIZE) throw new PgControlError(`pg_control is ${buf.length} bytes, expected ${PG_CONTROL_FILE_SIZE}`);
  const catalogVersion = buf.readUInt32LE(OFF.catalogVersion);
  const pgMajor = majorOfCatalogVersion(catalogVersion);
  const controlVersion = buf.readUInt32LE(OFF.pgControlVersion);
  if (controlVersion !== CONTROL_FORMAT_BY_MAJOR[pgMajor]) {
    throw new PgControlError(`pg_control format ${controlVersion} does not match catalog version ${catalogVersion} (PostgreSQL ${pgMajor} writes format ${CONTROL_FORMAT_BY_MAJOR[pgMajor]})`);
  }
  if (!startableMajors.includes(pgMajor)) {
    throw new PgControlError(`The data directory is from PostgreSQL ${pgMajor}; only PostgreSQL ${startableMajors.join(', ')} can be started here`);
  }
  if (controlVersion !== PG15_CONTROL_VERSION) throw new PgControlError(`pg_control format ${controlVersion} is not readable here`);
  const stored = buf.readUInt32LE(OFF.crc);
  const computed = crc32c(buf.subarray(0, OFF.crc));
  if (stored !== computed) {
    throw new PgControlError(`pg_control fails its CRC-32C check (stored 0x${stored.toString(16).padStart(8, '0')}, computed 0x${computed.toString(16).padStart(8, '0')})`);
  }
  const stateCode = buf.readInt32LE(OFF.state);
  const state = DB_STATE_TEXT[stateCode] ?? `unknown state ${stateCode}`;
  const blockSize = buf.readUInt32LE(OFF.blcksz);
  const segmentBlocks = buf.readUInt32LE(OFF.relsegSize);
  const walSegmentSize = buf.readUInt32LE(OFF.xlogSegSize);
  if (blockSize !== 8192) throw new PgControlError(`pg_control says the block size is ${blockSize}; only 8192 is supported`);
  if (segmentBlocks !== 131072) throw new PgControlError(`pg_control says relation segments hold ${segmentBlocks} blocks; only 131072 (1 GiB) is supported`);
  if (walSegmentSize < 1 << 20 || walSegmentSize > 1 << 30 || (walSegmentSize & (walSegmentSize - 1)) !== 0) {
    throw new PgControlError(`pg_control has an invalid WAL segment size ${walSegmentSize}`);
  }
  if (stateCode !== DbState.shutDown) throw new PgControlError(`The data directory was not shut down cleanly (pg_control state: ${state})`);
  const raw = buf.readBigUInt64LE(OFF.checkPoint);
  const aligned = (raw + 7n) & ~7n;
  return {
    pgMajor,
    catalogVersion,
    systemIdentifier: buf.readBigUInt64LE(OFF.systemIdentifier),
    state,
    checkpointLsn: formatLsn(aligned),
    checkpointLsnValue: aligned,
    timeline: buf.readUInt32LE(OFF.checkPointCopyTimeline),
    blockSize,
    segmentBlocks,
    walSegmentSize,
  };
}

/** Name of the WAL segment file holding `lsn` (e.g. 000000010000000000000001). */
export function walSegmentName(timeline: number, lsn: bigint, segmentSize: number): string {
  const segNo = lsn / BigInt(segmentSize);
  const perXlogId = 0x100000000n / BigInt(segmentSize);
  const hex = (n: bigint | number) => n.toString(16).toUpperCase().padStart(8, '0');
  return `${hex(timeline)}${hex(segNo / perXlogId)}${hex(segNo % perXlogId)}`;
}

/** Recomputes the CRC at its fixed place after a deliberate change (used to build hostile test inputs). */
export function resealPgControl(buf: Buffer): Buffer {
  const copy = Buffer.from(buf);
  copy.writeUInt32LE(crc32c(copy.subarray(0, OFF.crc)), OFF.crc);
  return copy;
}
