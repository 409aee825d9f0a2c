/**
 * A Static compute's LSN lease (compute_ctl's lsn_lease task): the watch activity renews it while
 * each round runs, so holding it costs no Temporal action beyond the watch's own. Workflows that
 * were already watching when this arrived start leasing from their next round (behind a patch, so
 * their recorded histories replay).
 */
import { patched } from '@temporalio/workflow';
import type { ComputeSpec } from '../../model/compute-spec';
import { staticLeaseOf, type StaticLease } from '../../model/static-lease';

const STATIC_LSN_LEASE_PATCH = 'static-lsn-lease';

/** The watch's lease input for a Static compute; nothing for any other mode. */
export function staticLeaseArgs(spec: ComputeSpec | undefined): { lease?: StaticLease } {
  const lease = spec ? staticLeaseOf(spec) : undefined;
  if (!lease || !patched(STATIC_LSN_LEASE_PATCH)) return {};
  return { lease };
}
