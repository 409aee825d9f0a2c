/** The TimelineInfo JSON the management API answers with, for a timeline and for one still importing. */
import { formatLsn } from '../../../model/lsn';
import type { PgdataImportRecord } from './pgdata-imports';
import { SUPPORTED_PG_VERSION, type TimelineState } from './service-types';

/** Neon's TimelineInfo of a timeline, plus the dev extras (its images, the import that made it). */
export function timelineInfoOf(s: TimelineState): Record<string, unknown> {
  const newest = s.images[s.images.length - 1]!;
  return {
    tenant_id: s.meta.tenant_id,
    timeline_id: s.meta.timeline_id,
    ancestor_timeline_id: s.meta.ancestor_timeline_id,
    ancestor_lsn: s.meta.ancestor_lsn,
    last_record_lsn: formatLsn(s.lastRecordLsn),
    prev_record_lsn: s.prevRecordLsn === null ? null : formatLsn(s.prevRecordLsn),
    disk_consistent_lsn: newest.lsn,
    remote_consistent_lsn: newest.lsn,
    remote_consistent_lsn_visible: newest.lsn,
    initdb_lsn: s.meta.initdb_lsn,
    latest_gc_cutoff_lsn: formatLsn(s.gcCutoffLsn),
    applied_gc_cutoff_lsn: formatLsn(s.gcCutoffLsn),
    pg_version: s.meta.pg_version,
    state: 'Active',
    walreceiver_status: s.flushes.length > 0 ? 'connected' : 'disconnected',
    current_logical_size: 0,
    current_physical_size: s.images.reduce((n, i) => n + i.basebackup_bytes, 0),
    is_archived: false,
    // Dev extras: the images the pageserver holds (each a cheap base backup).
    image_lsns: s.images.map((i) => i.lsn),
    // The import that created the timeline, from its durable record (Neon keeps it in the
    // timeline's index_part as import_pgdata Done {idempotency_key}): who may delete it.
    import_pgdata: s.meta.creation.mode === 'import' ? { state: 'done', idempotency_key: s.meta.creation.idempotency_key } : null,
  };
}

/** A timeline whose import has not finished: Loading while it runs, Broken with the reason once it failed. */
export function importingInfoOf(record: PgdataImportRecord): Record<string, unknown> {
  return {
    tenant_id: record.tenant_id,
    timeline_id: record.timeline_id,
    ancestor_timeline_id: null,
    ancestor_lsn: null,
    last_record_lsn: '0/0',
    prev_record_lsn: null,
    disk_consistent_lsn: '0/0',
    remote_consistent_lsn: '0/0',
    pg_version: SUPPORTED_PG_VERSION,
    state: record.state === 'failed' ? { Broken: { reason: `import_pgdata failed: ${record.error}`, backtrace: '' } } : 'Loading',
    // Dev extra: what the import is doing.
    import_pgdata: {
      state: record.state,
      // The durable import record's key (Neon's index_part import_pgdata InProgress {idempotency_key}).
      idempotency_key: record.idempotency_key,
      error: record.error,
      started_at: record.started_at,
      finished_at: record.finished_at,
    },
  };
}
