/** compute_ctl's compute states, serialized snake_case everywhere. */
export const COMPUTE_STATUSES = [
  'empty',
  'configuration_pending',
  'init',
  'running',
  'configuration',
  'failed',
  'termination_pending_fast',
  'termination_pending_immediate',
  'terminated',
] as const;
export type ComputeStatus = (typeof COMPUTE_STATUSES)[number];

export type TerminateMode = 'fast' | 'immediate';

/** Startup timings under compute_ctl's /metrics.json names. */
export interface ComputeStartupMetrics {
  wait_for_spec_ms: number;
  /** Ours: fresh PGDATA, postgresql.conf, pg_hba.conf and standby.signal (compute_ctl counts them nowhere). */
  prepare_pgdata_ms: number;
  sync_sk_check_ms: number;
  sync_safekeepers_ms: number;
  pageserver_connect_micros: number;
  basebackup_ms: number;
  basebackup_bytes: number;
  start_postgres_ms: number;
  config_ms: number;
  total_startup_ms: number;
}

/** compute_ctl's GET /status shape, plus what an operator needs to find the run. */
export interface ComputeStatusResponse {
  compute_id: string;
  start_time: string;
  tenant: string | null;
  timeline: string | null;
  status: ComputeStatus;
  last_active: string | null;
  error: string | null;
  /** The LSN the compute started from (the safekeepers' or the spec's), when known. */
  start_lsn: string | null;
  /** The LSN returned by terminate. */
  terminate_lsn: string | null;
  metrics: ComputeStartupMetrics;
  /**
   * In the result of a configure of a running compute only: settings of the new configuration
   * that take effect only after a restart (Postgres keeps their old values until then).
   */
  pending_restart?: string[];
  /**
   * A streaming Replica's replay position against the safekeepers' commit LSN, as of the last watch
   * round (drivers/storage-backend/stock/replica.ts).
   */
  replication?: { replay_lsn: string | null; commit_lsn: string | null; lag_bytes: number | null; measured_at: string };
}

export function emptyStartupMetrics(): ComputeStartupMetrics {
  return {
    wait_for_spec_ms: 0,
    prepare_pgdata_ms: 0,
    sync_sk_check_ms: 0,
    sync_safekeepers_ms: 0,
    pageserver_connect_micros: 0,
    basebackup_ms: 0,
    basebackup_bytes: 0,
    start_postgres_ms: 0,
    config_ms: 0,
    total_startup_ms: 0,
  };
}

/** The workflow ID of a compute: one workflow per compute, derived from its ID. */
export function computeWorkflowId(computeId: string): string {
  return `compute-${computeId}`;
}

/** The task queue served by the compute worker inside that compute's VM. */
export function computeTaskQueue(computeId: string): string {
  return `compute-node-${computeId}`;
}

const COMPUTE_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;

export function isValidComputeId(id: string): boolean {
  return COMPUTE_ID.test(id);
}

/** ApplicationFailure type of a step that found PGDATA wiped or from another start; the workflow redoes the fresh start. */
export const PGDATA_LOST = 'PgdataLost';

/** ApplicationFailure type of a reconfigure with a setting Postgres rejected; the previous configuration stays in force. */
export const SETTING_REJECTED = 'PostgresSettingRejected';
