import type { ComputeSpec } from '../../model/compute-spec';
import type { TerminateMode } from '../../model/compute-status';
import type { ReplayLag } from '../../drivers/storage-backend/stock/replica';
import type { ComputeCacheActivities } from './cache-node-activities';
import type { StaticLease } from '../../model/static-lease';
import type { PromoteInput, PromoteResult } from './promote';

/**
 * The contract between the compute workflow and its activities. Compute-node activities run in the
 * compute worker inside the compute's VM (they touch its PGDATA and Postgres); control-plane
 * activities run beside the workflows. Every input and output is plain JSON.
 *
 * `incarnation` names one fresh start of PGDATA: preparePgdata writes it into a marker file and
 * every later step checks it, so a step never runs on a directory from another start (or on a
 * replaced VM's empty disk) and fails with the non-retryable type PgdataLost instead.
 */
/** The steps of the one-activity startup, under compute_ctl's metric names where it has one. */
export type StartupStep = 'prepare_pgdata' | 'sync_sk_check' | 'sync_safekeepers' | 'basebackup' | 'start_postgres' | 'config';

export interface StartComputeResult {
  lsn: string | null;
  pid: number;
  /** Each step's whole work, in milliseconds (compute_ctl's names; prepare_pgdata is ours). */
  metrics: {
    prepare_pgdata_ms: number;
    sync_sk_check_ms: number;
    sync_safekeepers_ms: number;
    basebackup_ms: number;
    basebackup_bytes: number;
    pageserver_connect_micros: number;
    start_postgres_ms: number;
    config_ms: number;
  };
}

export interface ComputeNodeActivities extends ComputeCacheActivities {
  /** compute_ctl's whole startup, resumable per step (startup.ts). */
  startCompute(input: { incarnation: string; spec: ComputeSpec }): Promise<StartComputeResult>;
  // The per-step startup activities, kept for workflows that began before startCompute existed.
  preparePgdata(input: { incarnation: string }): Promise<void>;
  writePostgresConfig(input: { incarnation: string; spec: ComputeSpec }): Promise<{ ms: number }>;
  syncSafekeepers(input: { incarnation: string; storageAuthToken?: string }): Promise<{ lsn: string; ms: number }>;
  fetchBasebackup(input: { incarnation: string; spec: ComputeSpec; lsn: string | null }): Promise<{ bytes: number; ms: number; connectMicros: number }>;
  prepareStartupFiles(input: { incarnation: string; spec: ComputeSpec }): Promise<void>;
  startPostgres(input: { incarnation: string; spec: ComputeSpec }): Promise<{ pid: number; ms: number }>;
  applySpec(input: { spec: ComputeSpec }): Promise<{ changes: string[]; ms: number }>;
  /**
   * Returns after `reportAfterSeconds` with last_active, or at once when the postmaster has exited.
   * With `replica`, a streaming Replica also reports its replay lag behind the safekeepers.
   */
  watchPostgres(input: {
    reportAfterSeconds: number;
    lastActive: string | null;
    replica?: { tenantId: string; timelineId: string; safekeepers: string[]; token?: string };
    /** A Static compute's LSN lease, renewed while the round runs (drivers/pageserver/lease-keeper.ts). */
    lease?: StaticLease;
  }): Promise<{ exited: boolean; lastActive: string | null; exitReason?: string; replication?: ReplayLag }>;
  /** compute_ctl's /promote: the Replica becomes the primary of its timeline (promote.ts). */
  promoteReplica(input: PromoteInput): Promise<PromoteResult>;
  /**
   * Rewrites postgresql.conf, reloads, re-applies roles and databases. A setting Postgres rejects
   * fails it (SETTING_REJECTED, the previous configuration back in force); `pendingRestart` names
   * the settings that wait for a restart.
   */
  reconfigurePostgres(input: { spec: ComputeSpec }): Promise<{ changes: string[]; pendingRestart?: string[] }>;
  stopPostgres(input: { mode: TerminateMode }): Promise<void>;
}

export interface ControlPlaneActivities {
  checkSafekeepersSynced(input: {
    tenantId: string;
    timelineId: string;
    safekeepers: string[];
    token?: string;
  }): Promise<{ synced: boolean; lsn: string | null; reason?: string; ms: number }>;
  /** Other computes running as a primary on the timeline (a promote is refused while there is one). */
  findRunningPrimaries(input: { tenantId: string; timelineId: string; exceptComputeId: string }): Promise<{ computeId: string; how: string }[]>;
}

export { PGDATA_LOST } from '../../model/compute-status';
