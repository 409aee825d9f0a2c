/**
 * The control-plane worker's fleet gauges, exported through the Temporal Runtime's Prometheus
 * exporter beside the SDK's own metrics:
 * - durable_compute_computes{status}: open compute workflows by their ComputeStatus search
 *   attribute, one visibility count per status (cheap: no workflow is queried);
 * - durable_compute_imports{phase}: open imports by phase, from each open import's status query
 *   (imports are few and long; at most MAX_IMPORTS_QUERIED are asked per refresh);
 * - durable_compute_imports_closed{execution_status}: finished imports by how their workflow ended.
 */
import type { Client } from '@temporalio/client';
import type { MetricMeter } from '@temporalio/common';
import { COMPUTE_STATUSES } from '../model/compute-status';
import { IMPORT_PHASES, type ImportPhase } from '../model/import-status';
import { importStatusQuery } from '../workflows/import/messages';

const MAX_IMPORTS_QUERIED = 200;
const CLOSED_IMPORT_STATUSES = ['Completed', 'Failed', 'Canceled', 'Terminated', 'TimedOut'] as const;

export interface FleetMetrics {
  /** One refresh, now (the timer also runs them). */
  refresh(): Promise<void>;
  stop(): void;
}

export function startFleetMetrics(client: Client, meter: MetricMeter, intervalSeconds: number, log: (line: string) => void): FleetMetrics {
  const computes = meter.createGauge('durable_compute_computes', 'int', '', 'Open compute workflows by compute status');
  const imports = meter.createGauge('durable_compute_imports', 'int', '', 'Open imports by phase');
  const closedImports = meter.createGauge('durable_compute_imports_closed', 'int', '', 'Finished import workflows by execution status');
  const refreshErrors = meter.createCounter('durable_compute_fleet_metrics_refresh_errors', '', 'Fleet gauge refreshes that failed');

  async function refresh(): Promise<void> {
    const counts = await Promise.all(
      COMPUTE_STATUSES.map((s) => client.workflow.count(`WorkflowType = 'computeWorkflow' AND ExecutionStatus = 'Running' AND ComputeStatus = '${s}'`)),
    );
    COMPUTE_STATUSES.forEach((s, i) => computes.set(counts[i]!.count, { status: s }));

    const phases = new Map<ImportPhase, number>(IMPORT_PHASES.map((p) => [p, 0]));
    let queried = 0;
    for await (const wf of client.workflow.list({ query: `WorkflowType = 'importWorkflow' AND ExecutionStatus = 'Running'` })) {
      if (queried++ >= MAX_IMPORTS_QUERIED) break;
      const phase = await client.workflow
        .getHandle(wf.workflowId, wf.runId)
        .query(importStatusQuery)
        .then((s) => s.phase)
        .catch(() => undefined);
      if (phase) phases.set(phase, (phases.get(phase) ?? 0) + 1);
    }
    for (const [phase, n] of phases) imports.set(n, { phase });

    const closed = await Promise.all(
      CLOSED_IMPORT_STATUSES.map((s) => client.workflow.count(`WorkflowType = 'importWorkflow' AND ExecutionStatus = '${s}'`)),
    );
    CLOSED_IMPORT_STATUSES.forEach((s, i) => closedImports.set(closed[i]!.count, { execution_status: s.toLowerCase() }));
  }

  let running = false;
  const tick = async () => {
    if (running) return;
    running = true;
    try {
      await refresh();
    } catch (err) {
      refreshErrors.add(1);
      log(`fleet metrics refresh failed: ${(err as Error).message}`);
    } finally {
      running = false;
    }
  };
  void tick();
  const timer = setInterval(() => void tick(), intervalSeconds * 1000);
  timer.unref();
  return { refresh, stop: () => clearInterval(timer) };
}
