/** What a Static compute leases: its LSN, on every pageserver of every shard (compute_ctl's lsn_lease task). */
import { pageserverLeaseTargets, type ComputeSpec, type LeaseTarget } from './compute-spec';

export interface StaticLease {
  timelineId: string;
  lsn: string;
  targets: LeaseTarget[];
  token?: string;
}

/** The lease a Static compute holds; undefined for any other mode. */
export function staticLeaseOf(spec: ComputeSpec): StaticLease | undefined {
  if (spec.mode.kind !== 'Static') return undefined;
  return {
    timelineId: spec.timeline_id,
    lsn: spec.mode.lsn,
    targets: pageserverLeaseTargets(spec),
    ...(spec.storage_auth_token !== undefined ? { token: spec.storage_auth_token } : {}),
  };
}
