/** A new timeline's durable record: how it was created and where it starts. */
import { formatLsn } from '../../../model/lsn';
import type { ImageMeta } from './images';
import { SUPPORTED_PG_VERSION, type CreateTimelineRequest } from './service-types';
import type { TimelineCreation, TimelineMeta } from './timeline-store';

/** How a timeline was created, as its durable record keeps it. */
export function creationOf(req: CreateTimelineRequest): TimelineCreation {
  switch (req.mode) {
    case 'bootstrap':
      return { mode: 'bootstrap', pg_version: req.pgVersion };
    case 'branch':
      return {
        mode: 'branch',
        ancestor_timeline_id: req.ancestorTimelineId,
        ancestor_start_lsn: req.ancestorStartLsn === undefined ? null : formatLsn(req.ancestorStartLsn),
      };
    case 'import':
      return { mode: 'import', idempotency_key: req.idempotencyKey };
  }
}

/** The durable record of a timeline whose first image is `image`. */
export function newTimelineMeta(
  tenantId: string,
  timelineId: string,
  image: ImageMeta,
  creation: TimelineCreation,
  extra: { initdbLsn: string; ancestorTimelineId?: string; ancestorLsn?: string },
): TimelineMeta {
  return {
    tenant_id: tenantId,
    timeline_id: timelineId,
    pg_version: SUPPORTED_PG_VERSION,
    ancestor_timeline_id: extra.ancestorTimelineId ?? null,
    ancestor_lsn: extra.ancestorLsn ?? null,
    initdb_lsn: extra.initdbLsn,
    start_lsn: image.lsn,
    created_at: new Date().toISOString(),
    creation,
  };
}
