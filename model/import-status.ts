/**
 * Fast import: identities, names and the status shape shared by the workflow, the workers, the
 * client and the CLI. Pure code (no I/O), so the workflow may import it.
 */

/** Where an import is. `prepare`: spec written and the pageserver told; `done`, `failed`, `cancelled` are final. */
export const IMPORT_PHASES = ['prepare', 'init', 'dump', 'restore', 'upload', 'pageserver_import', 'done', 'failed', 'cancelled'] as const;
export type ImportPhase = (typeof IMPORT_PHASES)[number];

export function isFinalImportPhase(phase: ImportPhase): boolean {
  return phase === 'done' || phase === 'failed' || phase === 'cancelled';
}

const IMPORT_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;

export function isValidImportId(id: string): boolean {
  return IMPORT_ID.test(id);
}

/** One workflow per import, found again from the import ID alone. */
export function importWorkflowId(importId: string): string {
  return `import-${importId}`;
}

/**
 * The pageserver's idempotency key: derived from the import's identity, never from a run, so a
 * retried start (or a new run of the same import) is recognised as the same import.
 */
export function importIdempotencyKey(importId: string): string {
  return `durable-compute/import/${importId}`;
}

/** The import's S3 prefix (relative to the bucket): spec.json, pgdata/ and status/ live below it. */
export function importPrefix(importId: string): string {
  return `imports/${importId}`;
}

/** The two modes of Neon's fast_import: a data directory for the pageserver, or straight into a running database. */
export type ImportMode = 'pgdata' | 'dump-restore';

/**
 * Why `--s3-prefix` (fast_import's flag: where spec.json and status/ live) is refused, or
 * undefined when it is usable. The import owns everything below it: it is emptied at the start.
 */
export function s3PrefixProblem(prefix: string): string | undefined {
  if (prefix.length === 0) return 'must not be empty';
  if (prefix.startsWith('/')) return 'must be relative to the bucket: no leading /';
  if (prefix.split('/').includes('..')) return 'must not contain ..';
  if (prefix.endsWith('/')) return 'must not end with /';
  if (prefix.length > 512) return 'must be at most 512 characters';
  if (prefix.split('/').some((seg) => seg === '' || seg === '.')) return 'must not contain empty or . segments (//, /./)';
  if (!/^[A-Za-z0-9!_.*'()/-]+$/.test(prefix)) return "may hold only letters, digits, / and !_.*'()-";
  return undefined;
}

/** The default queue every importer polls: only the first step of each local run goes there. */
export const IMPORTER_SHARED_TASK_QUEUE = 'durable-compute-importer';

/** The queue only one importer host polls: the steps whose files live on that host. */
export function importerHostTaskQueue(sharedQueue: string, hostId: string): string {
  return `${sharedQueue}-host-${hostId}`;
}

const HOST_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$/;

export function isValidImporterHostId(id: string): boolean {
  return HOST_ID.test(id);
}

/** Databases the scratch server needs for itself; an import cannot restore into them. */
export const RESERVED_TARGET_DATABASES = ['postgres', 'template0', 'template1'] as const;

/** The database a source is restored into when none is named: the source's own, unless it is reserved. */
export function defaultTargetDatabase(sourceDatabase: string | undefined): string {
  if (!sourceDatabase || (RESERVED_TARGET_DATABASES as readonly string[]).includes(sourceDatabase)) return 'neondb';
  return sourceDatabase;
}

function utf8Length(text: string): number {
  let n = 0;
  for (const ch of text) {
    const c = ch.codePointAt(0)!;
    n += c < 0x80 ? 1 : c < 0x800 ? 2 : c < 0x10000 ? 3 : 4;
  }
  return n;
}

export function targetDatabaseProblem(name: string): string | undefined {
  if (name.length === 0 || utf8Length(name) > 63 || name.includes('\0')) return 'must be 1-63 bytes without NUL';
  if ((RESERVED_TARGET_DATABASES as readonly string[]).includes(name)) return `${name} is the scratch server's own database`;
  return undefined;
}

/** One move of the local steps to another importer host. */
export interface ImportHostChange {
  from: string;
  to: string | null;
  reason: string;
  at: string;
}

/** Progress of the step that runs now, from its heartbeats (dump: bytes written so far; upload: of the data directory). */
export interface ImportProgress {
  bytesDone: number;
  bytesTotal: number | null;
  filesDone: number | null;
  filesTotal: number | null;
  /** dump-restore: tables whose data is in the destination, of all. */
  tablesDone?: number;
  tablesTotal?: number;
  /** dump-restore: the restore's section (pre-data, data, post-data). */
  section?: string;
}

/** What a dump-restore import's restore did (this attempt and the ones before it). */
export interface DumpRestoreSummary {
  tables_total: number;
  tables_done: number;
  /** Dump bytes (compressed table data files) of all tables, and of the tables done. */
  bytes_total: number;
  bytes_done: number;
  /** TOC entries restored, of all selected. */
  entries_total: number;
  entries_done: number;
  /** Tables whose data an interrupted attempt had finished: not restored again. */
  tables_kept: number;
  /** Tables an interrupted attempt was copying: truncated and copied again, and their dump bytes. */
  tables_redone: number;
  bytes_redone: number;
  /** Tables copied in batches that an interrupted attempt was copying: resumed after its last committed batch. */
  tables_resumed?: number;
  /** COPY data bytes of batched tables found committed by an earlier attempt (not sent again), and sent by this one. */
  batch_bytes_kept?: number;
  batch_bytes_sent?: number;
  /** Attempts of the restore step (1 when never interrupted). */
  attempts: number;
}

/** What `import status` shows. Keys are only ever added. */
export interface ImportStatus {
  import_id: string;
  tenant_id: string;
  timeline_id: string;
  database: string;
  phase: ImportPhase;
  /** The importer host doing the local steps, once one claimed them. */
  host: string | null;
  host_changes: ImportHostChange[];
  /** Local runs (1 + host changes): each starts again from an empty working directory. */
  local_run: number;
  started_at: string;
  finished_at: string | null;
  error: string | null;
  /** Steps done, in order, with how long they took. */
  steps: { name: string; ms: number; note?: string }[];
  /** Filled by the workflow at phase ends; `import status` overlays the running step's heartbeat. */
  progress: ImportProgress | null;
  dump: { bytes: number; files: number; skipped: boolean } | null;
  upload: {
    files_total: number;
    bytes_total: number;
    uploaded_files: number;
    uploaded_bytes: number;
    skipped_files: number;
    skipped_bytes: number;
    resumed_parts: number;
    /** Half-sent files whose earlier multipart upload S3 no longer had, so were sent again whole. */
    restarted_files: number;
    /** What the interrupted attempt's last heartbeat said, when the upload resumed from it. */
    resumed_from: { files_done: number; bytes_done: number } | null;
  } | null;
  /** The timeline's start LSN once the pageserver finished. */
  start_lsn: string | null;
  /** Absent (pgdata) in imports started before dump-restore existed. */
  mode?: ImportMode;
  /** Where spec.json and status/ live. */
  s3_prefix?: string;
  /** dump-restore: the destination (without password) and what the restore did. */
  destination?: string | null;
  restore?: DumpRestoreSummary | null;
}

/** A new import's status before its first step: what both modes' workflows start from. */
export function initialImportStatus(fields: Pick<ImportStatus, 'import_id' | 'tenant_id' | 'timeline_id' | 'database' | 'started_at' | 'mode' | 's3_prefix'> & Partial<ImportStatus>): ImportStatus {
  return {
    phase: 'prepare',
    host: null,
    host_changes: [],
    local_run: 0,
    finished_at: null,
    error: null,
    steps: [],
    progress: null,
    dump: null,
    upload: null,
    start_lsn: null,
    ...fields,
  };
}
