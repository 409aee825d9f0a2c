/**
 * One row of the compute table: a cold start paused at each startup point in turn (enumerated by
 * steps.ts), the fault injected there and the step let go into it; then the fault on the running
 * compute while a writer commits, and the commits checked on a fresh compute of the timeline.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ComputeStatusResponse } from '../../model/compute-status';
import type { WorkerProcess } from '../../dev/child-processes';
import type { ChaosStack } from './chaos-stack';
import {
  CHAOS_WORKFLOW_OPTIONS,
  cleanupCompute,
  newCompute,
  newTimeline,
  release,
  rowsIn,
  startComputeWorker,
  startWriter,
  stepsDone,
  type ChaosCompute,
} from './compute-env';
import { isNotApplicable, NO_S3_REQUEST, WORKER_KILL, type Fault } from './faults';
import { bytesMovedAgain, s3FaultNote } from './http-faults';
import type { Cell } from './table';

export const RUNNING_STEP = 'running (watchPostgres)';
const NOT_TAKEN = 'the startup did not take this step on this run';

interface Mark {
  done: number;
  forwarded: number;
  faulted: number;
  at: number;
}

export interface RowDeps {
  stack: ChaosStack;
  log: (line: string) => void;
}

const reachedCount = (workers: WorkerProcess[], point: string) =>
  workers.reduce((n, w) => n + [...w.output().matchAll(new RegExp(`failpoint ${point} reached`, 'g'))].length, 0);

const ended = (s: ComputeStatusResponse) => s.status === 'running' || s.status === 'failed';

/** Waits until a worker pauses at one of `candidates` (the first to show), or the startup ends. */
async function nextPoint(stack: ChaosStack, computeId: string, workers: WorkerProcess[], candidates: string[], seen: Map<string, number>): Promise<string | 'ended'> {
  const deadline = Date.now() + 240_000;
  for (let i = 0; ; i++) {
    for (const point of candidates) if (reachedCount(workers, point) > (seen.get(point) ?? 0)) return point;
    if (i % 5 === 0 && ended(await stack.computes.status(computeId).catch(() => ({ status: 'init' }) as ComputeStatusResponse))) return 'ended';
    if (Date.now() > deadline) throw new Error(`no startup point of ${candidates.join(', ')} reached within 240 s`);
    await sleep(100);
  }
}

export function takeMark(stack: ChaosStack, workers: WorkerProcess[]): Mark {
  return { done: stepsDone(workers.map((w) => w.output())).length, forwarded: stack.http.forwarded().length, faulted: stack.http.counters().faulted, at: Date.now() };
}

/** Fills a cell's redone steps, bytes and time from its window [from, to). */
export function windowFigures(stack: ChaosStack, workers: WorkerProcess[], from: Mark, to: Mark): Pick<Cell, 'redone' | 'bytesUp' | 'bytesDown' | 'ms'> & { s3Note: string; s3Requests: number } {
  const done = stepsDone(workers.map((w) => w.output()));
  const redone = done.slice(from.done, to.done).filter((step, j) => done.slice(0, from.done + j).includes(step));
  const requests = stack.http.forwarded().slice(from.forwarded, to.forwarded);
  return { redone, bytesUp: bytesMovedAgain(requests, 'up'), bytesDown: bytesMovedAgain(requests, 'down'), ms: to.at - from.at, s3Note: s3FaultNote(to.faulted - from.faulted), s3Requests: requests.length + to.faulted - from.faulted };
}

/** Applies `fault` at a paused point and lets the step go into it (or, for the worker kill, replaces the worker). */
export async function injectAt(
  deps: RowDeps,
  compute: ChaosCompute,
  workers: WorkerProcess[],
  fault: Fault | typeof WORKER_KILL,
  point: string,
  armNext: string[],
): Promise<{ note?: string; notApplicable?: string }> {
  if (fault === WORKER_KILL) {
    await workers.at(-1)!.kill('SIGKILL');
    workers.push(await startComputeWorker(deps.stack, compute, armNext));
    return { note: `worker pid ${workers.at(-2)!.pid} killed in the step; a new worker resumed` };
  }
  const target = { stack: deps.stack, pgdata: compute.pgdata, step: point };
  let applied: Awaited<ReturnType<Fault['apply']>> = undefined;
  if (!fault.afterRelease) applied = await fault.apply(target);
  release(compute, point);
  if (fault.afterRelease) applied = await fault.apply(target);
  if (isNotApplicable(applied)) return applied;
  await sleep(fault.windowMs);
  await fault.heal(target);
  return applied ? { note: applied } : {};
}

/** A fresh compute on the timeline, to count what the storage kept. */
export async function rowsOnFreshCompute(deps: RowDeps, timeline: { tenantId: string; timelineId: string }, table: string | undefined): Promise<Set<number>> {
  const compute = await newCompute(deps.stack, timeline, 'chaos-verify');
  const worker = await startComputeWorker(deps.stack, compute);
  try {
    await deps.stack.computes.start(compute.computeId, compute.spec, CHAOS_WORKFLOW_OPTIONS);
    await deps.stack.computes.waitForRunning(compute.computeId, 180_000);
    return table ? await rowsIn(compute, table) : new Set();
  } finally {
    await deps.stack.computes.terminate(compute.computeId, 'immediate').catch(() => undefined);
    await worker.kill('SIGKILL');
    await cleanupCompute(compute);
  }
}

export async function runComputeRow(deps: RowDeps, fault: Fault | typeof WORKER_KILL, points: string[], opts: { running?: boolean } = {}): Promise<Cell[]> {
  const { stack, log } = deps;
  const faultName = fault === WORKER_KILL ? WORKER_KILL : fault.name;
  const timeline = await newTimeline(stack);
  const compute = await newCompute(stack, timeline, `chaos-${faultName}`);
  const workers = [await startComputeWorker(stack, compute, points)];
  const cells: Cell[] = [];
  const marks: Mark[] = [];
  const seen = new Map<string, number>();
  try {
    await stack.computes.start(compute.computeId, compute.spec, CHAOS_WORKFLOW_OPTIONS);
    let remaining = [...points];
    while (remaining.length) {
      const hit = await nextPoint(stack, compute.computeId, workers, remaining, seen);
      const skipped = hit === 'ended' ? remaining : remaining.slice(0, remaining.indexOf(hit));
      for (const step of skipped) {
        cells.push({ workflow: 'compute', step, fault: faultName, completed: null, redone: [], note: NOT_TAKEN });
      }
      if (hit === 'ended') break;
      seen.set(hit, reachedCount(workers, hit));
      remaining = remaining.slice(remaining.indexOf(hit) + 1);
      log(`  compute / ${hit} / ${faultName}`);
      marks.push(takeMark(stack, workers));
      const { note, notApplicable } = await injectAt(deps, compute, workers, fault, hit, remaining);
      if (notApplicable) {
        marks.pop();
        cells.push({ workflow: 'compute', step: hit, fault: faultName, completed: null, redone: [], note: notApplicable });
      } else {
        cells.push({ workflow: 'compute', step: hit, fault: faultName, completed: false, redone: [], ...(note ? { note } : {}) });
      }
    }
    // A point the startup never took (the safekeeper sync, when the quorum agreed) would pause the
    // same-named activity of the termination: let every point go from here on.
    for (const point of points) release(compute, point);
    const final = await stack.computes.waitFor(compute.computeId, ended, 240_000).catch((err: Error) => ({ status: 'timeout', error: err.message }) as unknown as ComputeStatusResponse);
    const startupEnd = takeMark(stack, workers);
    const started = cells.filter((c) => c.completed === false);
    for (const [i, cell] of started.entries()) {
      const { s3Note, s3Requests, ...figures } = windowFigures(stack, workers, marks[i]!, marks[i + 1] ?? startupEnd);
      Object.assign(cell, figures, { completed: final.status === 'running' });
      if (fault !== WORKER_KILL && fault.s3 && s3Requests === 0 && final.status === 'running') Object.assign(cell, { completed: null, note: NO_S3_REQUEST });
      if (final.status === 'failed' && final.error && fault !== WORKER_KILL && fault.failsByDesign) cell.failedByDesign = fault.failsByDesign;
      if (final.status !== 'running') cell.note = [cell.note, `compute ${final.status}: ${(final.error ?? '').split('\n')[0]}`].filter(Boolean).join('; ');
      if (s3Note) cell.note = [cell.note, s3Note].filter(Boolean).join('; ');
    }
    if (started.some((c) => c.failedByDesign)) {
      // The startup failed by design: the next compute on the timeline must start (no writer ran, so no commit to count).
      for (const w of workers) await w.kill('SIGKILL');
      await cleanupCompute(compute);
      const next = await rowsOnFreshCompute(deps, timeline, undefined).then(
        () => 'a fresh compute on the timeline ran',
        (err: Error) => `a fresh compute on the timeline failed: ${err.message}`,
      );
      for (const cell of started.filter((c) => c.failedByDesign)) {
        cell.note = [cell.note, next].join('; ');
        if (next.endsWith('ran')) cell.commits = { acknowledged: 0, found: 0, lost: 0, unknown: 0 };
      }
      // The points after it, and the running compute, on a new compute (as the control plane would start).
      const untaken = cells.filter((c) => c.completed === null && c.note === NOT_TAKEN).map((c) => c.step);
      if (untaken.length || opts.running !== false) {
        log(`  compute / ${faultName}: the compute failed by design; ${untaken.length ? untaken.join(', ') : 'the running compute'} on a new compute`);
        return [...cells.filter((c) => !untaken.includes(c.step)), ...(await runComputeRow(deps, fault, untaken, opts))];
      }
    }
    if (opts.running !== false) cells.push(await runningCell(deps, fault, compute, timeline, workers, final));
    return cells;
  } finally {
    await stack.computes.terminate(compute.computeId, 'immediate').catch(() => undefined);
    for (const w of workers) await w.kill('SIGKILL');
    saveWorkerLogs(`compute-${faultName}`, workers);
    await cleanupCompute(compute);
  }
}

/** The workers' output, kept for reading a cell that missed its targets (CHAOS_LOG_DIR, default a temp directory). */
export function saveWorkerLogs(row: string, workers: WorkerProcess[]): void {
  const dir = path.join(process.env.CHAOS_LOG_DIR ?? path.join(os.tmpdir(), 'dc-chaos-logs'), row);
  mkdirSync(dir, { recursive: true });
  for (const [i, w] of workers.entries()) writeFileSync(path.join(dir, `worker-${i + 1}.log`), w.output());
}

/** The fault on the running compute while a writer commits; the commits are then counted on a fresh compute. */
async function runningCell(
  deps: RowDeps,
  fault: Fault | typeof WORKER_KILL,
  compute: ChaosCompute,
  timeline: { tenantId: string; timelineId: string },
  workers: WorkerProcess[],
  startup: ComputeStatusResponse,
): Promise<Cell> {
  const { stack, log } = deps;
  const faultName = fault === WORKER_KILL ? WORKER_KILL : fault.name;
  const cell: Cell = { workflow: 'compute', step: RUNNING_STEP, fault: faultName, completed: null, redone: [] };
  if (startup.status !== 'running') return { ...cell, note: `the compute never ran (${startup.status})` };
  log(`  compute / ${RUNNING_STEP} / ${faultName}`);
  const table = `chaos_${faultName.replaceAll('-', '_')}`;
  const writer = startWriter(compute, table);
  await sleep(1500);
  const from = takeMark(stack, workers);
  let note: string | undefined;
  if (fault === WORKER_KILL) {
    await workers.at(-1)!.kill('SIGKILL');
    workers.push(await startComputeWorker(stack, compute));
    note = 'worker killed while running; a new worker took the watch';
  } else {
    const target = { stack, pgdata: compute.pgdata, step: 'running' };
    const applied = await fault.apply(target);
    if (isNotApplicable(applied)) throw new Error(`${fault.name} found nothing to act on in the running compute: ${applied.notApplicable}`);
    note = applied || undefined;
    await sleep(fault.windowMs);
    await fault.heal(target);
  }
  await sleep(3000);
  const written = await writer.stop();
  const status = await stack.computes.status(compute.computeId);
  let completed = status.status === 'running';
  if (completed) {
    const terminateStarted = Date.now();
    const terminated = await stack.computes.terminate(compute.computeId, 'fast').then(
      (r) => r,
      (err: Error) => ({ lsn: null, error: err.message }),
    );
    completed = terminated.lsn !== null;
    const terminateMs = Date.now() - terminateStarted;
    if (terminateMs > 30_000) note = [note, `terminate took ${Math.round(terminateMs / 1000)} s`].filter(Boolean).join('; ');
    if (!completed) note = [note, `terminate failed: ${(terminated as { error?: string }).error ?? 'no LSN'}`].filter(Boolean).join('; ');
  } else {
    note = [note, `compute ${status.status}: ${(status.error ?? '').split('\n')[0]}`].filter(Boolean).join('; ');
    if (status.status === 'failed' && status.error && fault !== WORKER_KILL && fault.failsByDesign) cell.failedByDesign = fault.failsByDesign;
  }
  const to = takeMark(stack, workers);
  const { s3Note, s3Requests, ...figures } = windowFigures(stack, workers, from, to);
  // What the storage kept: the timeline as a new compute finds it.
  for (const w of workers) await w.kill('SIGKILL');
  await cleanupCompute(compute);
  const found = await rowsOnFreshCompute(deps, timeline, table).catch((err: Error) => {
    note = [note, `fresh compute failed: ${err.message}`].join('; ');
    return new Set<number>();
  });
  const lost = written.acknowledged.filter((id) => !found.has(id)).length;
  if (s3Note) note = [note, s3Note].filter(Boolean).join('; ');
  const noS3 = fault !== WORKER_KILL && fault.s3 && s3Requests === 0 && completed && lost === 0;
  if (noS3) note = [NO_S3_REQUEST, note].filter(Boolean).join('; ');
  return {
    ...cell,
    ...figures,
    completed: noS3 ? null : completed,
    commits: { acknowledged: written.acknowledged.length, found: written.acknowledged.length - lost, lost, unknown: written.unknown.length },
    ...(note ? { note } : {}),
  };
}
