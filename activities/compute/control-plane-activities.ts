import { checkSafekeepersSynced } from '../../drivers/safekeepers';
import { findRunningPrimaries } from './running-primaries';
import type { ControlPlaneActivities } from './types';

/** Control-plane side of the compute workflow: storage calls that need no access to the compute VM. */
export function createControlPlaneActivities(deps: { safekeeperTimeoutMs?: number } = {}): ControlPlaneActivities {
  return {
    // compute_ctl's fast "already synced?" check: TIMELINE_STATUS from a quorum, 100 ms each.
    async checkSafekeepersSynced({ tenantId, timelineId, safekeepers, token }) {
      const result = await checkSafekeepersSynced({ safekeepers, tenantId, timelineId, token, timeoutMs: deps.safekeeperTimeoutMs });
      return result.synced
        ? { synced: true, lsn: result.lsn, ms: result.elapsedMs }
        : { synced: false, lsn: null, reason: result.reason, ms: result.elapsedMs };
    },
    findRunningPrimaries,
  };
}
