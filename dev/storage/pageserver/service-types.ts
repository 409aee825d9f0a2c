/** The pageserver service's vocabulary: its error, requests, dependencies and timeline state. */
import type { FileHandle } from 'node:fs/promises';
import type { PgInstallation } from '../../../common/pg-binaries';
import type { ImageMeta, ImageRetention } from './images';
import type { PgdataImportRecord } from './pgdata-imports';
import type { SafekeeperClient } from './safekeeper-client';
import type { TimelineMeta, TimelineStore } from './timeline-store';
import { LockWaitTimeout } from './keyed-mutex';

export class PageserverError extends Error {
  override name = 'PageserverError';
  constructor(
    public readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export const SUPPORTED_PG_VERSION = 15;

/** What a base backup is made from: a precomputed gzip'd tar, or an image's pgdata packed per request. */
export type BasebackupSource = { kind: 'tarball'; file: FileHandle } | { kind: 'pgdata'; pgdata: string; release: () => void };

export const DEFAULT_IMAGE_RETENTION: ImageRetention = { keepNewest: 2, graceMs: 10 * 60 * 1000 };

/**
 * Extension point for `import_pgdata`: fetch and validate the data directory (cleanly shut down
 * PostgreSQL 15) into `targetPgdata`. The pageserver then makes it the timeline's first image.
 * With `isCommitted`, the import runs in the background and first waits for the upload's commit
 * marker (Neon's behaviour); `validate` refuses a malformed request before anything is recorded.
 */
export type ImportPgdataHandler = ((request: {
  tenantId: string;
  timelineId: string;
  importPgdata: unknown;
  targetPgdata: string;
  signal?: AbortSignal;
}) => Promise<unknown>) & {
  validate?: (importPgdata: unknown) => unknown;
  isCommitted?: (importPgdata: unknown) => Promise<boolean>;
};

export type CreateTimelineRequest =
  | { mode: 'bootstrap'; timelineId: string; pgVersion: number }
  | { mode: 'branch'; timelineId: string; ancestorTimelineId: string; ancestorStartLsn: bigint | undefined }
  | { mode: 'import'; timelineId: string; importPgdata: unknown; idempotencyKey: string | null };

export interface ServiceDeps {
  store: TimelineStore;
  safekeepers: SafekeeperClient;
  install: PgInstallation;
  materializeTimeoutMs: number;
  /**
   * Longest wait for a timeline's lock before a base backup or branch gives up with an error
   * naming the holder (default: three materializations' worth, so a short queue of replays passes).
   */
  lockWaitMs?: number;
  /** Which images survive once newer ones exist; default: the first, the newest two, and any under 10 minutes old. */
  imageRetention?: ImageRetention;
  importPgdata?: ImportPgdataHandler;
  /** Length of an LSN lease unless the tenant's config sets `lsn_lease_length` (default 10 minutes, as Neon). */
  lsnLeaseLengthMs?: number;
  /** WAL bytes behind the last record a `do_gc` without `gc_horizon` keeps (default 64 MiB, as Neon). */
  gcHorizonBytes?: bigint;
  /** Background imports (with a handler that has `isCommitted`): poll interval and completion callback. */
  imports?: { pollIntervalMs: number; onComplete?: (record: PgdataImportRecord) => Promise<void> };
  /**
   * How often a timeline whose primary compute has started is checked for WAL to ingest (default
   * 500 ms; 0 turns background ingest off, so every new LSN is replayed on request).
   */
  ingestPollMs?: number;
  log: (line: string) => void;
}

/** A timeline as the service sees it: its record, images, safekeeper positions and last_record_lsn. */
export interface TimelineState {
  meta: TimelineMeta;
  images: ImageMeta[];
  lastRecordLsn: bigint;
  prevRecordLsn: bigint | null;
  flushes: Awaited<ReturnType<SafekeeperClient['flushLsns']>>;
  /** Nothing below this LSN is served: the GC cutoff, or the timeline's start before any GC. */
  gcCutoffLsn: bigint;
}

/** A lock wait that gave up is a 503 (busy, try again), with the holder named. */
export function busy(err: unknown): never {
  if (err instanceof LockWaitTimeout) throw new PageserverError(503, err.message);
  throw err;
}
