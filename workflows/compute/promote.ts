/**
 * compute_ctl's /promote as a durable update of the compute workflow, and the replica's replay lag
 * in its status. Deterministic workflow code only.
 *
 * The promote runs as one activity on the compute (activities/compute/promote.ts) that journals
 * its steps in PGDATA, so a compute worker killed mid-promote resumes after its last finished step.
 * While it runs, the watch sees the standby's postmaster stop: that exit belongs to the promote
 * and the watch carries on with the primary's postmaster (`exitBelongsToPromote`).
 */
import { ApplicationFailure, condition, patched, proxyActivities, setHandler } from '@temporalio/workflow';
import type { ComputeNodeActivities, ControlPlaneActivities } from '../../activities/compute/types';
import type { ReplayLag } from '../../drivers/storage-backend/stock/replica';
import { parseComputeConfig, type ComputeConfig } from '../../model/compute-spec';
import { isLsn } from '../../model/lsn';
import type { ComputeStatus } from '../../model/compute-status';
import { computeModeQuery, promoteUpdate, type PromoteState } from './promote-messages';

/** Marks histories that ran a promote or reported a replica's lag from the watch. */
export const PROMOTE_PATCH = 'replica-promote-and-lag';
/** A Replica's watch rounds: its lag in status is at most this old. */
export const REPLICA_LAG_REPORT_SECONDS = 10;

export interface PromoteHost {
  computeId: string;
  nodeTaskQueue: string;
  config(): ComputeConfig | undefined;
  adoptConfig(next: ComputeConfig): void;
  status(): ComputeStatus;
  postgresRunning(): boolean;
  incarnation(): string;
  /** Why another operation forbids a promote now (a reconfiguration, a termination), if one does. */
  busy(): string | undefined;
  onVm<T>(work: () => Promise<T>): Promise<T>;
}

function describe(err: unknown): string {
  let cause: unknown = err;
  while (cause instanceof Error && cause.cause) cause = cause.cause;
  return cause instanceof Error ? cause.message : String(cause);
}

export function installPromote(host: PromoteHost) {
  const node = proxyActivities<ComputeNodeActivities>({
    taskQueue: host.nodeTaskQueue,
    // Catch-up (21 s at most), a fast stop, a start with the WAL pusher, the spec: minutes at most.
    startToCloseTimeout: '5 minutes',
    heartbeatTimeout: '10 seconds',
    retry: { initialInterval: '1 second', maximumAttempts: 5 },
    summary: 'promote replica',
  });
  const controlPlane = proxyActivities<ControlPlaneActivities>({
    startToCloseTimeout: '30 seconds',
    retry: { initialInterval: '500 ms', maximumAttempts: 3 },
    summary: 'find running primaries on the timeline',
  });

  let state: PromoteState = { status: 'not_promoted' };
  let promoting = false;
  /** Set when a promote may have stopped the standby's postmaster and the watch has not yet seen that exit. */
  let standbyExitExpected = false;
  let replication: ReplayLag | undefined;

  setHandler(computeModeQuery, () => host.config()?.spec.mode.kind ?? null);

  const primaryConfig = (raw: unknown): ComputeConfig => {
    const current = host.config()!;
    if (raw === undefined) return { ...current, spec: { ...current.spec, mode: { kind: 'Primary' } } };
    const parsed = parseComputeConfig(raw);
    if (!parsed.ok) throw new Error(`invalid compute spec: ${parsed.errors.join('; ')}`);
    return parsed.config;
  };

  setHandler(
    promoteUpdate,
    async (req) => {
      patched(PROMOTE_PATCH);
      promoting = true;
      try {
        const current = host.config()!;
        const next = primaryConfig(req.spec);
        const others = await controlPlane.findRunningPrimaries({ tenantId: current.spec.tenant_id, timelineId: current.spec.timeline_id, exceptComputeId: host.computeId });
        if (others.length > 0) {
          state = { status: 'failed', error: `another primary is running on timeline ${current.spec.timeline_id}: ${others.map((o) => `${o.computeId} (${o.how})`).join(', ')}; terminate it first` };
          throw ApplicationFailure.nonRetryable(state.error, 'PromoteRefused');
        }
        standbyExitExpected = true;
        try {
          const result = await host.onVm(() =>
            node.promoteReplica({ incarnation: host.incarnation(), spec: next.spec, ...(req.safekeepersLsn !== undefined ? { safekeepersLsn: req.safekeepersLsn } : {}) }),
          );
          host.adoptConfig(next);
          replication = undefined;
          state = { status: 'completed', ...result };
        } catch (err) {
          state = { status: 'failed', error: describe(err) };
          throw ApplicationFailure.nonRetryable(`promote failed: ${state.error}`, 'PromoteFailed');
        }
        return state;
      } finally {
        promoting = false;
      }
    },
    {
      validator: (req) => {
        const cfg = host.config();
        if (host.status() !== 'running' || !host.postgresRunning() || !cfg) throw new Error(`compute ${host.computeId} is ${host.status()}; promote needs a running replica`);
        if (cfg.spec.mode.kind !== 'Replica') throw new Error(`compute mode is ${cfg.spec.mode.kind}, not Replica`);
        if (promoting) throw new Error('a promote is already running');
        const busy = host.busy();
        if (busy) throw new Error(busy);
        if (req?.safekeepersLsn !== undefined && (typeof req.safekeepersLsn !== 'string' || !isLsn(req.safekeepersLsn))) {
          throw new Error(`safekeepers LSN must look like 0/16B5A50, got ${JSON.stringify(req.safekeepersLsn)}`);
        }
        const next = primaryConfig(req?.spec);
        if (next.spec.mode.kind !== 'Primary') throw new Error(`the promote spec must be a Primary's, got mode ${next.spec.mode.kind}`);
        if (next.spec.tenant_id !== cfg.spec.tenant_id || next.spec.timeline_id !== cfg.spec.timeline_id) {
          throw new Error('a promote cannot switch tenant or timeline');
        }
      },
    },
  );

  return {
    state: () => state,
    promoting: () => promoting,
    /** The replica's last measured lag (Replica computes only). */
    replication: () => (host.config()?.spec.mode.kind === 'Replica' ? replication : undefined),

    /**
     * The watch input and round length for the current mode: a Replica's rounds are short and
     * measure its lag. Unchanged for every other compute, so their histories are the same.
     */
    watchArgs(reportSeconds: number): { reportAfterSeconds: number; replica?: { tenantId: string; timelineId: string; safekeepers: string[]; token?: string } } {
      const spec = host.config()?.spec;
      if (!spec || spec.mode.kind !== 'Replica' || !patched(PROMOTE_PATCH)) return { reportAfterSeconds: reportSeconds };
      return {
        reportAfterSeconds: Math.min(reportSeconds, REPLICA_LAG_REPORT_SECONDS),
        replica: {
          tenantId: spec.tenant_id,
          timelineId: spec.timeline_id,
          safekeepers: spec.safekeeper_connstrings,
          ...(spec.storage_auth_token !== undefined ? { token: spec.storage_auth_token } : {}),
        },
      };
    },

    recordLag(lag: ReplayLag | undefined): void {
      if (lag) replication = lag;
    },

    /**
     * The watch saw the postmaster exit: true if a promote stopped it and then started Postgres
     * again as the primary (keep watching); false if the exit is the compute's end.
     */
    async exitBelongsToPromote(): Promise<boolean> {
      if (!standbyExitExpected) return false;
      standbyExitExpected = false;
      await condition(() => !promoting);
      return state.status === 'completed';
    },
  };
}
