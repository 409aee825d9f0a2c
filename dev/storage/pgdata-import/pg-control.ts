import { formatLsn } from '../../../model/lsn';
import { crc32c } from './crc32c';

/**
 * Reading an untrusted global/pg_control. Offsets are those of ControlFileData for the 1300
 * format (PostgreSQL 13 to 16) on 64-bit little-endian machines, checked against a real
 * PostgreSQL 15 pg_control and pg_controldata's reading of it.
 */
export const PG_CONTROL_FILE_SIZE = 8192;

/** Catalog versions (catversion.h) of the released majors the import format knows. */
const CATALOG_VERSIONS: Record<number, number> = {
  202107181: 14,
  202209061: 15,
  202307071: 16,
  202406281: 17,
};

const CONTROL_FORMAT_BY_MAJOR: Record<number, number> = { 14: 1300, 15: 1300, 16: 1300, 17: 1700 };

const LAYOUT_1300 = {
  systemIdentifier: 0,
  controlVersion: 8,
  catalogVersion: 12,
  state: 16,
  checkPoint: 32,
  checkPointTimeline: 48,
  blcksz: 216,
  relsegSize: 220,
  xlogBlcksz: 224,
  xlogSegSize: 228,
  crc: 288,
} as const;

const DB_STATES = ['starting up', 'shut down', 'shutting down', 'in crash recovery', 'in archive recovery', 'in production'] as const;

export class PgControlError extends Error {
  override name = 'PgControlError';
}

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
 * Parses and checks pg_control: exact size, known catalog version, matching control format,
 * CRC-32C, then the settings a page-level import relies on (8 KiB blocks, 1 GiB segments) and
 * a clean shutdown. `startableMajors` limits which versions are accepted at all.
 */
export function parsePgControl(buf: Buffer, startableMajors: readonly number[] = [15]): PgControlInfo {
  if (buf.length !== PG_CONTROL_FILE_SIZE) throw new PgControlError(`pg_control is ${buf.length} bytes, expected ${PG_CONTROL_FILE_SIZE}`);
  const catalogVersion = buf.readUInt32LE(LAYOUT_1300.catalogVersion);
  const pgMajor = majorOfCatalogVersion(catalogVersion);
  const controlVersion = buf.readUInt32LE(LAYOUT_1300.controlVersion);
  if (controlVersion !== CONTROL_FORMAT_BY_MAJOR[pgMajor]) {
    throw new PgControlError(`pg_control format ${controlVersion} does not match catalog version ${catalogVersion} (PostgreSQL ${pgMajor} writes format ${CONTROL_FORMAT_BY_MAJOR[pgMajor]})`);
  }
  if (!startableMajors.includes(pgMajor)) {
    throw new PgControlError(`The data directory is from PostgreSQL ${pgMajor}; only PostgreSQL ${startableMajors.join(', ')} can be started here`);
  }
  if (controlVersion !== 1300) throw new PgControlError(`pg_control format ${controlVersion} is not readable here`);
  const stored = buf.readUInt32LE(LAYOUT_1300.crc);
  const computed = crc32c(buf.subarray(0, LAYOUT_1300.crc));
  if (stored !== computed) {
    throw new PgControlError(`pg_control fails its CRC-32C check (stored 0x${stored.toString(16).padStart(8, '0')}, computed 0x${computed.toString(16).padStart(8, '0')})`);
  }
  const stateCode = buf.readInt32LE(LAYOUT_1300.state);
  const state = DB_STATES[stateCode] ?? `unknown state ${stateCode}`;
  const blockSize = buf.readUInt32LE(LAYOUT_1300.blcksz);
  const segmentBlocks = buf.readUInt32LE(LAYOUT_1300.relsegSize);
  const walSegmentSize = buf.readUInt32LE(LAYOUT_1300.xlogSegSize);
  if (blockSize !== 8192) throw new PgControlError(`pg_control says the block size is ${blockSize}; only 8192 is supported`);
  if (segmentBlocks !== 131072) throw new PgControlError(`pg_control says relation segments hold ${segmentBlocks} blocks; only 131072 (1 GiB) is supported`);
  if (walSegmentSize < 1 << 20 || walSegmentSize > 1 << 30 || (walSegmentSize & (walSegmentSize - 1)) !== 0) {
    throw new PgControlError(`pg_control has an invalid WAL segment size ${walSegmentSize}`);
  }
  if (stateCode !== 1) throw new PgControlError(`The data directory was not shut down cleanly (pg_control state: ${state})`);
  const raw = buf.readBigUInt64LE(LAYOUT_1300.checkPoint);
  const aligned = (raw + 7n) & ~7n;
  return {
    pgMajor,
    catalogVersion,
    systemIdentifier: buf.readBigUInt64LE(LAYOUT_1300.systemIdentifier),
    state,
    checkpointLsn: formatLsn(aligned),
    checkpointLsnValue: aligned,
    timeline: buf.readUInt32LE(LAYOUT_1300.checkPointTimeline),
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

/** Recomputes the CRC after a deliberate change (used to build hostile test inputs). */
export function resealPgControl(buf: Buffer): Buffer {
  const copy = Buffer.from(buf);
  copy.writeUInt32LE(crc32c(copy.subarray(0, LAYOUT_1300.crc)), LAYOUT_1300.crc);
  return copy;
}
