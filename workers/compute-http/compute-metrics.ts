/**
 * The compute's Prometheus metrics under compute_ctl's names (compute_tools/src/metrics.rs), read
 * from the compute's workflow at each scrape: compute_ctl_up with the status as a label, the LFC
 * prewarm and offload counters, and the startup timings of /metrics.json as gauges.
 */
import { Counter, Gauge, Registry } from 'prom-client';
import { CACHE_METRICS } from '../../model/cache-state';
import { COMPUTE_STATUSES, type ComputeStartupMetrics, type ComputeStatusResponse } from '../../model/compute-status';
import type { LfcStatus } from '../../workflows/compute/messages';

/** compute_ctl's BUILD_TAG label; ours names the product. */
const BUILD_TAG = 'durable-compute';

/** metrics.json fields that are durations in milliseconds, by phase name. */
const STARTUP_PHASES = {
  wait_for_spec: 'wait_for_spec_ms',
  sync_sk_check: 'sync_sk_check_ms',
  sync_safekeepers: 'sync_safekeepers_ms',
  basebackup: 'basebackup_ms',
  start_postgres: 'start_postgres_ms',
  config: 'config_ms',
  total: 'total_startup_ms',
} as const satisfies Record<string, keyof ComputeStartupMetrics>;

/** compute_ctl's Display form of a status, used in metric labels: `configuration-pending`. */
export function statusLabel(status: string): string {
  return status.replace(/_/g, '-');
}

export interface ComputeSnapshot {
  status: () => Promise<ComputeStatusResponse>;
  lfc: () => Promise<LfcStatus>;
}

export function createComputeMetrics(snapshot: ComputeSnapshot) {
  const registry = new Registry();
  const up = new Gauge({ name: 'compute_ctl_up', help: 'Compute status: 1 for the current status, 0 otherwise', labelNames: ['build_tag', 'status'], registers: [registry] });
  const reachable = new Gauge({
    name: 'durable_compute_workflow_reachable',
    help: "1 if the compute's workflow answered the last scrape's queries, 0 if not (the other series then hold no values)",
    registers: [registry],
  });
  const phases = new Gauge({ name: 'compute_ctl_startup_phase_seconds', help: 'Duration of each startup phase of the last start (metrics.json), in seconds', labelNames: ['phase'], registers: [registry] });
  const basebackupBytes = new Gauge({ name: 'compute_ctl_basebackup_bytes', help: 'Size of the last base backup, in bytes', registers: [registry] });
  const connectMicros = new Gauge({ name: 'compute_ctl_pageserver_connect_seconds', help: 'Time to connect to the pageserver for the base backup, in seconds', registers: [registry] });
  const lfcCounters = {
    [CACHE_METRICS.prewarms]: new Counter({ name: CACHE_METRICS.prewarms, help: 'Completed LFC prewarms', registers: [registry] }),
    [CACHE_METRICS.prewarmErrors]: new Counter({ name: CACHE_METRICS.prewarmErrors, help: 'Failed LFC prewarms', registers: [registry] }),
    [CACHE_METRICS.offloads]: new Counter({ name: CACHE_METRICS.offloads, help: 'Completed LFC offloads', registers: [registry] }),
    [CACHE_METRICS.offloadErrors]: new Counter({ name: CACHE_METRICS.offloadErrors, help: 'Failed LFC offloads', registers: [registry] }),
  };

  /** Reads the workflow once and sets every series; the text format follows. */
  async function render(): Promise<string> {
    try {
      const [status, lfc] = await Promise.all([snapshot.status(), snapshot.lfc()]);
      up.reset();
      // Every status has a series, as compute_ctl's int gauge vec is reset to 0 on each change.
      for (const s of COMPUTE_STATUSES) up.set({ build_tag: BUILD_TAG, status: statusLabel(s) }, s === status.status ? 1 : 0);
      for (const [phase, field] of Object.entries(STARTUP_PHASES)) phases.set({ phase }, status.metrics[field] / 1000);
      basebackupBytes.set(status.metrics.basebackup_bytes);
      connectMicros.set(status.metrics.pageserver_connect_micros / 1e6);
      // The workflow keeps the totals (they survive a worker restart); the counters mirror them.
      for (const [name, counter] of Object.entries(lfcCounters)) {
        counter.reset();
        counter.inc(lfc.metrics[name as keyof typeof lfc.metrics] ?? 0);
      }
      reachable.set(1);
    } catch {
      for (const metric of [up, phases, basebackupBytes, connectMicros, ...Object.values(lfcCounters)]) metric.reset();
      reachable.set(0);
    }
    return registry.metrics();
  }

  return { render, contentType: registry.contentType };
}
