/** The shipped Grafana dashboard queries only metrics we export (our own names are checked against the code). */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';

const dashboard = JSON.parse(readFileSync(new URL('../docs/grafana-dashboard.json', import.meta.url), 'utf8')) as {
  panels: { title: string; type: string; targets?: { expr: string }[] }[];
};
const exporters = ['../workers/compute-http/compute-metrics.ts', '../workers/fleet-metrics.ts', '../model/cache-state.ts']
  .map((f) => readFileSync(new URL(f, import.meta.url), 'utf8'))
  .join('\n');

describe('docs/grafana-dashboard.json', () => {
  const exprs = dashboard.panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr));

  it('covers computes by status, startup phases, LFC activity, imports and worker task latency', () => {
    const all = exprs.join('\n');
    for (const name of ['durable_compute_computes', 'compute_ctl_up', 'compute_ctl_startup_phase_seconds', 'compute_ctl_lfc_prewarms_total', 'compute_ctl_lfc_offloads_total', 'durable_compute_imports', 'temporal_workflow_task_schedule_to_start_latency_bucket', 'temporal_activity_execution_latency_bucket']) {
      expect(all).toContain(name);
    }
  });

  it('names only metrics the workers export', () => {
    const ours = new Set(exprs.flatMap((e) => e.match(/\b(?:compute_ctl|durable_compute)_[a-z_]+\b/g) ?? []));
    expect(ours.size).toBeGreaterThan(5);
    for (const name of ours) {
      // Counters are exported with the _total suffix (prom-client names them so; the Runtime adds it).
      const base = name.replace(/_total$/, '');
      expect(exporters.includes(`'${name}'`) || exporters.includes(`'${base}'`), `${name} is not exported by our code`).toBe(true);
    }
  });
});
