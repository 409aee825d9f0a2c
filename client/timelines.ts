import { createPageserverClient, type CreateTimelineRequest, type TimelineInfo } from '../drivers/pageserver';
import { createSafekeeperTimeline } from '../drivers/safekeepers/timeline-create';
import type { StorageConfig } from '../common/config';
import { UserFacingError } from '../common/errors';

/**
 * Creates a timeline the way Neon's storage controller does: on the pageserver first, then on
 * every safekeeper, starting at the pageserver's LSN, so a compute's first sync agrees at once.
 * Idempotent: creating the same timeline again is a no-op everywhere.
 */
export async function createTimeline(storage: StorageConfig, tenantId: string, request: CreateTimelineRequest): Promise<TimelineInfo> {
  if (!storage.pageserverHttp) throw new UserFacingError('no pageserver: set PAGESERVER_HTTP_URL or start the dev stack (durable-compute dev up)');
  const { timeline } = await createPageserverClient({ httpUrl: storage.pageserverHttp, token: storage.authToken }).createTimeline(tenantId, request);
  await Promise.all(
    storage.safekeepersHttp.map((http) =>
      createSafekeeperTimeline(http, {
        tenant_id: tenantId,
        timeline_id: timeline.timeline_id,
        start_lsn: timeline.last_record_lsn,
        commit_lsn: timeline.last_record_lsn,
        pg_version: timeline.pg_version ?? 15,
      }, { token: storage.authToken }),
    ),
  );
  return timeline;
}
