/**
 * What the fleet benchmark reads from the server: its billable-action counter, and the histories
 * of a sample of computes (actions, workflow-task latency, events per round and per run).
 */
import type { Client } from '@temporalio/client';
import type { temporal } from '@temporalio/proto';
import { computeWorkflowId } from '../model/compute-status';

/** The server's billable-action counter for the namespace, summed over its other labels, with the breakdown. */
export async function serverActions(metricsUrl: string, namespace: string): Promise<{ total: number; byLabels: Record<string, number> }> {
  const text = await (await fetch(metricsUrl)).text();
  const byLabels: Record<string, number> = {};
  let total = 0;
  for (const line of text.split('\n')) {
    const m = /^action(?:_total)?\{([^}]*)\}\s+([0-9.eE+-]+)$/.exec(line.trim());
    if (!m) continue;
    const labels = m[1]!;
    if (!labels.includes(`namespace="${namespace}"`)) continue;
    const value = Number(m[2]);
    total += value;
    const key = labels
      .split(',')
      .filter((l) => !/^(namespace|service_name|operation|instance|namespace_state)=/.test(l))
      .join(',');
    byLabels[key || '(no labels)'] = (byLabels[key || '(no labels)'] ?? 0) + value;
  }
  return { total, byLabels };
}

export const pct = (xs: number[], p: number) => {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
};
export const ms = (t: temporal.api.history.v1.IHistoryEvent['eventTime']) => Number(t?.seconds ?? 0) * 1000 + Math.floor((t?.nanos ?? 0) / 1e6);
export const fmt = (n: number, digits = 1) => (Number.isFinite(n) ? n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits }) : 'n/a');

/** History events that Temporal Cloud bills as an action (heartbeats never appear in history). */
function billableEvents(e: temporal.api.history.v1.IHistoryEvent): number {
  if (e.workflowExecutionStartedEventAttributes) return 1;
  if (e.activityTaskScheduledEventAttributes) return 1;
  // A retry is billed as another activity start.
  if (e.activityTaskStartedEventAttributes) return Math.max(0, (e.activityTaskStartedEventAttributes.attempt ?? 1) - 1);
  if (e.timerStartedEventAttributes) return 1;
  if (e.workflowExecutionSignaledEventAttributes) return 1;
  if (e.upsertWorkflowSearchAttributesEventAttributes) return 1;
  if (e.workflowExecutionUpdateAcceptedEventAttributes) return 1;
  // Markers, patch markers too (the server counts them as command_BatchMarkers).
  if (e.markerRecordedEventAttributes) return 1;
  return 0;
}

export interface HistorySample {
  /** Billable events inside the window, over every sampled run. */
  sampleBillable: number;
  wftScheduleToStart: number[];
  wftScheduleToComplete: number[];
  eventsPerRound: number[];
  eventsPerRun: number[];
  runsSeen: number;
  continuedAsNew: number;
}

/** The sampled computes' runs, back to the one that started before the window. */
export async function sampleHistories(raw: Client, sampleIds: string[], windowStart: number, windowEnd: number): Promise<HistorySample> {
  let sampleBillable = 0;
  const wftScheduleToStart: number[] = [];
  const wftScheduleToComplete: number[] = [];
  const eventsPerRound: number[] = [];
  const eventsPerRun: number[] = [];
  let runsSeen = 0;
  let continuedAsNew = 0;
  for (const id of sampleIds) {
    let runId: string | undefined;
    for (let depth = 0; depth < 50; depth++) {
      const handle = raw.workflow.getHandle(computeWorkflowId(id), runId);
      const events = (await handle.fetchHistory()).events ?? [];
      runsSeen += 1;
      const last = events.at(-1);
      if (last?.workflowExecutionContinuedAsNewEventAttributes) {
        continuedAsNew += 1;
        eventsPerRun.push(events.length);
      }
      const scheduled = new Map<number, number>();
      const started = new Map<number, number>();
      let lastWatch: number | undefined;
      for (const e of events) {
        const t = ms(e.eventTime);
        const inWindow = t >= windowStart && t < windowEnd;
        if (inWindow) sampleBillable += billableEvents(e);
        const id64 = Number(e.eventId);
        if (e.workflowTaskScheduledEventAttributes) scheduled.set(id64, t);
        if (e.workflowTaskStartedEventAttributes) {
          const s = scheduled.get(Number(e.workflowTaskStartedEventAttributes.scheduledEventId));
          if (s !== undefined && inWindow) wftScheduleToStart.push(t - s);
          started.set(id64, t);
        }
        if (e.workflowTaskCompletedEventAttributes && inWindow) {
          const s = scheduled.get(Number(e.workflowTaskCompletedEventAttributes.scheduledEventId));
          if (s !== undefined) wftScheduleToComplete.push(t - s);
        }
        if (e.activityTaskScheduledEventAttributes?.activityType?.name === 'watchPostgres') {
          if (lastWatch !== undefined) eventsPerRound.push(id64 - lastWatch);
          lastWatch = id64;
        }
      }
      const first = events[0];
      const previous = first?.workflowExecutionStartedEventAttributes?.continuedExecutionRunId;
      if (!previous || ms(first?.eventTime) < windowStart) break;
      runId = previous;
    }
  }
  return { sampleBillable, wftScheduleToStart, wftScheduleToComplete, eventsPerRound, eventsPerRun, runsSeen, continuedAsNew };
}

/** For each compute told vmLost: from the signal's event to the workflow's failure, in history. */
export async function signalToFailedMs(raw: Client, lostIds: string[]): Promise<number[]> {
  const signalToFailed: number[] = [];
  for (const id of lostIds) {
    const events = (await raw.workflow.getHandle(computeWorkflowId(id)).fetchHistory()).events ?? [];
    const signaled = events.find((e) => e.workflowExecutionSignaledEventAttributes?.signalName === 'vmLost');
    const failed = events.find((e) => e.workflowExecutionFailedEventAttributes);
    if (signaled && failed) signalToFailed.push(ms(failed.eventTime) - ms(signaled.eventTime));
  }
  return signalToFailed;
}

/** Actions per idle compute-hour as the settings predict them, to check the counter against. */
export function steadyStateModel(e: { report: number; heartbeat: number; maxRounds: number }): { beatsPerRound: number; modelPerHour: number } {
  // A round's activity start; a run's start (continue-as-new) and its ComputeId upsert.
  // The SDK holds a beat back until its throttle interval, min(0.8 × timeout, 60 s), has passed.
  // The watch calls heartbeat every half timeout; the SDK sends a call at once unless one went out
  // less than its throttle interval ago, min(0.8 × timeout, 60 s), and then holds it back till then.
  const throttle = Math.min(0.8 * e.heartbeat, 60);
  let beatsPerRound = 0;
  for (let call = e.heartbeat / 2, lastSent = -Infinity; call < e.report; call += e.heartbeat / 2) {
    const sendAt = Math.max(call, lastSent + throttle);
    if (sendAt >= e.report) break;
    if (sendAt > lastSent) {
      beatsPerRound += 1;
      lastSent = sendAt;
    }
  }
  // A run's continue-as-new, its patch marker and its two search-attribute upserts (as the server counts them).
  const modelPerHour = (3600 / e.report) * (beatsPerRound + 1) + (4 * 3600) / (e.report * e.maxRounds);
  return { beatsPerRound, modelPerHour };
}
