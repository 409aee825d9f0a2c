/**
 * The fleet benchmark's latency probe, run after the idle window so the window's action count
 * stays that of an idle fleet: a few held computes get a `configure` (their own spec again, as a
 * control plane re-sending it does) and a `status` query, spread over the probe period. Each
 * update is a workflow task on the control-plane worker while it holds the whole fleet, mostly on
 * a workflow out of its cache (a replay of the history first); its schedule → complete time is
 * read from history. A status query is a workflow task too, but leaves no event: its latency is
 * the client's round trip.
 */
import { randomBytes } from 'node:crypto';
import type { Client } from '@temporalio/client';
import type { ComputeClient } from '../client/compute-client';
import { exampleComputeConfig } from '../client/example-spec';
import { computeWorkflowId } from '../model/compute-status';
import { ms } from './fleet-history';
import { pause } from './fleet-processes';

/**
 * The spec of simulated compute number `i`: Static mode, so no safekeeper quorum check against
 * servers that do not exist (the idle watch is the same for every mode), and no prewarm. The probe
 * sends it again as the compute's `configure`.
 */
export function simulatedComputeConfig(i: number): unknown {
  const cfg = exampleComputeConfig({
    tenantId: randomBytes(16).toString('hex'),
    timelineId: randomBytes(16).toString('hex'),
    pageserverPg: '127.0.0.1:1',
    safekeepers: ['127.0.0.1:2', '127.0.0.1:3', '127.0.0.1:4'],
    port: 10_000 + (i % 50_000),
    endpointId: `ep-fleet-${i}`,
  }) as { spec: Record<string, unknown> };
  cfg.spec.mode = { Static: '0/1000028' };
  cfg.spec.autoprewarm = false;
  return cfg;
}

export interface ProbeResult {
  /** Workflow tasks of the probed computes between the probe's start and end, schedule → start / → complete, ms. */
  wftScheduleToStart: number[];
  wftScheduleToComplete: number[];
  /** Client round trips, ms. */
  configureMs: number[];
  queryMs: number[];
  failures: string[];
  seconds: number;
}

export async function probeLatency(
  computes: ComputeClient,
  raw: Client,
  probes: { id: string; config: unknown }[],
  periodSeconds: number,
): Promise<ProbeResult> {
  const began = Date.now();
  const configureMs: number[] = [];
  const queryMs: number[] = [];
  const failures: string[] = [];
  const spacing = (periodSeconds * 1000) / Math.max(1, probes.length);
  await Promise.all(
    probes.map(async ({ id, config }, i) => {
      await pause(i * spacing);
      const q = Date.now();
      await computes.status(id).then(
        () => queryMs.push(Date.now() - q),
        (err: Error) => failures.push(`${id} status: ${err.message}`),
      );
      const c = Date.now();
      await computes.configure(id, config).then(
        () => configureMs.push(Date.now() - c),
        (err: Error) => failures.push(`${id} configure: ${err.message}`),
      );
    }),
  );
  const ended = Date.now();
  const wftScheduleToStart: number[] = [];
  const wftScheduleToComplete: number[] = [];
  for (const { id } of probes) {
    const events = (await raw.workflow.getHandle(computeWorkflowId(id)).fetchHistory()).events ?? [];
    const scheduled = new Map<number, number>();
    for (const e of events) {
      const t = ms(e.eventTime);
      if (e.workflowTaskScheduledEventAttributes) scheduled.set(Number(e.eventId), t);
      if (t < began || t > ended) continue;
      const startedOf = e.workflowTaskStartedEventAttributes?.scheduledEventId;
      if (startedOf != null) {
        const s = scheduled.get(Number(startedOf));
        if (s !== undefined) wftScheduleToStart.push(t - s);
      }
      const completedOf = e.workflowTaskCompletedEventAttributes?.scheduledEventId;
      if (completedOf != null) {
        const s = scheduled.get(Number(completedOf));
        if (s !== undefined) wftScheduleToComplete.push(t - s);
      }
    }
  }
  return { wftScheduleToStart, wftScheduleToComplete, configureMs, queryMs, failures, seconds: (ended - began) / 1000 };
}
