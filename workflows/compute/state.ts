import { log, setCurrentDetails, upsertSearchAttributes, workflowInfo } from '@temporalio/workflow';
import type { ReplayLag } from '../../drivers/storage-backend/stock/replica';
import type { ComputeConfig } from '../../model/compute-spec';
import { emptyStartupMetrics, type ComputeStartupMetrics, type ComputeStatus, type ComputeStatusResponse, type TerminateMode } from '../../model/compute-status';
import { COMPUTE_STATUS, TENANT_ID, TIMELINE_ID } from '../../model/search-attributes';
import type { CarriedComputeState } from './carry-over';

/**
 * What one compute workflow knows about its compute: the status compute_ctl reports, the config,
 * the startup's results. Every status change goes through setStatus, which keeps the search
 * attribute and the Web UI's details in step.
 */
export class ComputeState {
  config: ComputeConfig | undefined;
  status: ComputeStatus;
  error: string | null;
  lastActive: string | null;
  startLsn: string | null;
  terminateLsn: string | null = null;
  terminationMode: TerminateMode | undefined;
  postgresRunning: boolean;
  /** The incarnation of the last startup, which the final safekeeper sync names. */
  incarnation: string;
  /** Set once a startCompute has been scheduled: its failure may leave Postgres running. */
  startupMayHaveStartedPostgres = false;
  /** A reconfiguration is running: neither terminate nor continue-as-new may start meanwhile. */
  reconfiguring = false;
  /** Filled in by the promote module (./promote.ts): whether a promote runs, and a replica's replay lag. */
  promotion: { promoting(): boolean; replication(): ReplayLag | undefined } = { promoting: () => false, replication: () => undefined };
  readonly startTime: string;
  readonly metrics: ComputeStartupMetrics;

  constructor(
    readonly computeId: string,
    carried: CarriedComputeState | undefined,
  ) {
    this.config = carried?.config;
    this.status = carried?.status ?? 'empty';
    this.error = carried?.error ?? null;
    this.lastActive = carried?.lastActive ?? null;
    this.startLsn = carried?.startLsn ?? null;
    this.postgresRunning = carried !== undefined;
    this.incarnation = carried?.incarnation ?? '';
    this.startTime = carried?.startTime ?? new Date(workflowInfo().startTime).toISOString();
    this.metrics = { ...emptyStartupMetrics(), ...carried?.metrics };
  }

  setStatus(next: ComputeStatus, reason?: string): void {
    this.status = next;
    if (next === 'failed') this.error = reason ?? this.error ?? 'unknown failure';
    upsertSearchAttributes([{ key: COMPUTE_STATUS, value: next }]);
    setCurrentDetails(
      [
        `**status:** ${next}`,
        this.config ? `**tenant:** ${this.config.spec.tenant_id}  **timeline:** ${this.config.spec.timeline_id}` : '',
        this.startLsn ? `**start LSN:** ${this.startLsn}` : '',
        this.error && next === 'failed' ? `**error:** ${this.error}` : '',
      ]
        .filter(Boolean)
        .join('\n'),
    );
    log.info('compute status', { status: next });
  }

  adoptConfig(next: ComputeConfig): void {
    this.config = next;
    upsertSearchAttributes([
      { key: TENANT_ID, value: next.spec.tenant_id },
      { key: TIMELINE_ID, value: next.spec.timeline_id },
    ]);
  }

  /** Whether a startup, watch or termination has ended (running, failed or terminated). */
  get settled(): boolean {
    return this.status === 'running' || this.status === 'failed' || this.status === 'terminated';
  }

  response(): ComputeStatusResponse {
    return {
      compute_id: this.computeId,
      start_time: this.startTime,
      tenant: this.config?.spec.tenant_id ?? null,
      timeline: this.config?.spec.timeline_id ?? null,
      status: this.status,
      last_active: this.lastActive,
      error: this.status === 'failed' ? this.error : null,
      start_lsn: this.startLsn,
      terminate_lsn: this.terminateLsn,
      metrics: { ...this.metrics },
      ...(this.promotion.replication() ? { replication: this.promotion.replication() } : {}),
    };
  }
}
