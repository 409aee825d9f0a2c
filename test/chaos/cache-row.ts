/**
 * One row of the cache table: on a running compute with a writer committing, each cache activity
 * (offload, then a prewarm from what was offloaded) is paused at its start, the fault injected
 * and the activity let go into it. The commits are counted afterwards on the same Postgres, or on
 * a fresh compute of the timeline if the fault took Postgres down.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { CHAOS_WORKFLOW_OPTIONS, cleanupCompute, newCompute, newTimeline, rowsIn, startComputeWorker, startWriter } from './compute-env';
import { injectAt, rowsOnFreshCompute, saveWorkerLogs, takeMark, windowFigures, type RowDeps } from './compute-row';
import { WORKER_KILL, type Fault } from './faults';
import type { Cell } from './table';
import type { WorkerProcess } from '../../dev/child-processes';

const reached = (workers: WorkerProcess[], point: string) => workers.reduce((n, w) => n + [...w.output().matchAll(new RegExp(`failpoint ${point} reached`, 'g'))].length, 0);

export async function runCacheRow(deps: RowDeps, fault: Fault | typeof WORKER_KILL, steps: string[]): Promise<Cell[]> {
  const { stack, log } = deps;
  const faultName = fault === WORKER_KILL ? WORKER_KILL : fault.name;
  const timeline = await newTimeline(stack);
  const compute = await newCompute(stack, timeline, `chaos-cache-${faultName}`);
  const workers = [await startComputeWorker(stack, compute, steps)];
  const cells: Cell[] = [];
  const table = `chaos_cache_${faultName.replaceAll('-', '_')}`;
  try {
    await stack.computes.start(compute.computeId, compute.spec, CHAOS_WORKFLOW_OPTIONS);
    await stack.computes.waitForRunning(compute.computeId, 180_000);
    const writer = startWriter(compute, table);
    await sleep(2000);
    for (const [i, step] of steps.entries()) {
      const cell: Cell = { workflow: 'cache', step, fault: faultName, completed: false, redone: [] };
      cells.push(cell);
      const status = await stack.computes.status(compute.computeId);
      if (status.status !== 'running') {
        Object.assign(cell, { completed: null, note: `the compute is ${status.status} (${status.error ?? ''}): no cache activity can run` });
        continue;
      }
      log(`  cache / ${step} / ${faultName}`);
      const before = reached(workers, step);
      const kind = step === 'offloadCacheState' ? 'offload' : 'prewarm';
      if (kind === 'offload') await stack.computes.offload(compute.computeId);
      else await stack.computes.prewarm(compute.computeId);
      const deadline = Date.now() + 60_000;
      while (reached(workers, step) === before) {
        if (Date.now() > deadline) throw new Error(`${step} never reached its pause point`);
        await sleep(100);
      }
      const from = takeMark(stack, workers);
      const { note, notApplicable } = await injectAt(deps, compute, workers, fault, step, steps.slice(i + 1));
      if (notApplicable) throw new Error(`${faultName} found nothing to act on in ${step}: ${notApplicable}`);
      const lfc = await stack.computes.waitForLfc(compute.computeId, (s) => (kind === 'offload' ? s.offload.status !== 'offloading' : s.prewarm.status !== 'prewarming'), 300_000);
      const to = takeMark(stack, workers);
      const { s3Note, ...figures } = windowFigures(stack, workers, from, to);
      const outcome = kind === 'offload' ? lfc.offload : lfc.prewarm;
      if (outcome.status !== 'completed' && fault !== WORKER_KILL && fault.failsByDesign) {
        const after = await stack.computes.status(compute.computeId);
        if (after.status === 'failed' && after.error) cell.failedByDesign = fault.failsByDesign;
      }
      Object.assign(cell, figures, {
        completed: outcome.status === 'completed',
        note: [note, outcome.status !== 'completed' ? `${kind} ${outcome.status}${'error' in outcome ? `: ${outcome.error}` : ''}` : '', s3Note]
          .filter(Boolean)
          .join('; '),
      });
    }
    await sleep(1000);
    const written = await writer.stop();
    const running = (await stack.computes.status(compute.computeId)).status === 'running';
    let found: Set<number>;
    if (running) {
      found = await rowsIn(compute, table);
    } else {
      for (const w of workers) await w.kill('SIGKILL');
      await cleanupCompute(compute);
      found = await rowsOnFreshCompute(deps, timeline, table);
    }
    const lost = written.acknowledged.filter((id) => !found.has(id)).length;
    // The writer ran across the whole row: its figures go with the row's last cell that ran.
    const last = cells.filter((c) => c.completed !== null).at(-1);
    if (last) last.commits = { acknowledged: written.acknowledged.length, found: written.acknowledged.length - lost, lost, unknown: written.unknown.length };
    return cells;
  } finally {
    await stack.computes.terminate(compute.computeId, 'immediate').catch(() => undefined);
    for (const w of workers) await w.kill('SIGKILL');
    saveWorkerLogs(`cache-${faultName}`, workers);
    await cleanupCompute(compute);
  }
}
