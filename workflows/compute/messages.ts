import { defineQuery, defineSignal, defineUpdate } from '@temporalio/workflow';
import type { CACHE_METRICS, OffloadState, PrewarmState } from '../../model/cache-state';
import type { ComputeStatusResponse, TerminateMode } from '../../model/compute-status';

/** compute_ctl's POST /configure: takes a ComputeConfig or bare ComputeSpec JSON; returns the final status. */
export const configureUpdate = defineUpdate<ComputeStatusResponse, [unknown]>('configure');

/** compute_ctl's POST /terminate?mode=: returns the LSN the safekeepers were synced at after Postgres stopped. */
export const terminateUpdate = defineUpdate<{ lsn: string | null }, [{ mode?: TerminateMode }]>('terminate');

/**
 * Waits until the startup has ended (running, failed or terminated) and returns the status. With
 * update-with-start, a control plane starts a compute and learns it is running in one call.
 */
export const awaitStartupUpdate = defineUpdate<ComputeStatusResponse, []>('awaitStartup');

/**
 * From the VM platform: the compute's VM is gone (its Postgres with it). The compute fails at once
 * with the reason, instead of waiting out the watch's heartbeat timeout. A signal, not an update:
 * the platform must be able to fire it whatever state the compute is in, without waiting on it.
 */
export const vmLostSignal = defineSignal<[{ reason: string }]>('vmLost');

/** compute_ctl's GET /status, plus startup timings under /metrics.json names. */
export const statusQuery = defineQuery<ComputeStatusResponse>('status');

/** compute_ctl's POST /lfc/prewarm[?from_endpoint=]: starts a prewarm; refused while one runs (429). */
export const prewarmUpdate = defineUpdate<PrewarmState, [{ fromEndpoint?: string }]>('lfcPrewarm');

/** compute_ctl's DELETE /lfc/prewarm: cancels the running prewarm, down to its SQL. */
export const cancelPrewarmUpdate = defineUpdate<PrewarmState, []>('lfcCancelPrewarm');

/** compute_ctl's POST /lfc/offload: starts an offload; refused while one runs (429). */
export const offloadUpdate = defineUpdate<OffloadState, []>('lfcOffload');

export interface LfcStatus {
  prewarm: PrewarmState;
  offload: OffloadState;
  /** Counters under compute_ctl's /metrics names. */
  metrics: Record<(typeof CACHE_METRICS)[keyof typeof CACHE_METRICS], number>;
}

/** compute_ctl's GET /lfc/prewarm and GET /lfc/offload, together. */
export const lfcStatusQuery = defineQuery<LfcStatus>('lfcStatus');

/**
 * The public keys that may sign requests to compute_ctl's external API (compute_ctl_config.jwks of
 * the current config; none before a config arrives). Read by the compute worker's HTTP API.
 */
export const apiKeysQuery = defineQuery<{ keys: Record<string, unknown>[] }>('apiKeys');
