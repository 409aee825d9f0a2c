/**
 * `npm run chaos` (also `BENCH=chaos npm run bench`): the chaos table. Every step of the compute
 * startup, the cache offload/prewarm path and the import, enumerated from the code, crossed with
 * every fault (bench/chaos/faults.ts), on a private stack with S3 behind toxiproxy. Writes
 * bench/results/chaos.md.
 *
 * CHAOS_WORKFLOWS=compute,cache,import and CHAOS_FAULTS=worker-kill,s3-503,... pick a subset;
 * CHAOS_OUT names another results file (a partial run does not overwrite the full table).
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { runCacheRow } from './chaos/cache-row';
import { runningStack } from '../dev/stack';
import { startChaosStack } from './chaos/chaos-stack';
import { runComputeRow } from './chaos/compute-row';
import { ALL_FAULT_NAMES, FAULTS, WORKER_KILL, type Fault, type Workflow } from './chaos/faults';
import { runImportRows } from './chaos/import-row';
import { cacheSteps, computeStartupPoints } from './chaos/steps';
import { writeTable, type Cell } from './chaos/table';

const here = path.dirname(fileURLToPath(import.meta.url));
const pick = (value: string | undefined, all: readonly string[]) => {
  const chosen = value ? value.split(',').map((v) => v.trim()).filter(Boolean) : [...all];
  for (const c of chosen) if (!all.includes(c)) throw new Error(`unknown ${c}; choose from ${all.join(', ')}`);
  return chosen;
};
const workflows = pick(process.env.CHAOS_WORKFLOWS, ['compute', 'cache', 'import']) as Workflow[];
const faultNames = pick(process.env.CHAOS_FAULTS, ALL_FAULT_NAMES);
const out = process.env.CHAOS_OUT ?? path.join(here, 'results', 'chaos.md');

const startedAt = new Date();
const log = (line: string) => console.log(`[chaos ${Math.round((Date.now() - startedAt.getTime()) / 1000)} s] ${line}`);
const faults: (Fault | typeof WORKER_KILL)[] = faultNames.map((n) => (n === WORKER_KILL ? WORKER_KILL : FAULTS.find((f) => f.name === n)!));
const faultName = (f: Fault | typeof WORKER_KILL) => (f === WORKER_KILL ? WORKER_KILL : f.name);

const points = await computeStartupPoints();
const cacheActivities = cacheSteps();
const enumeration = [
  `compute: the startup's pause points, by driving activities/compute/startup.ts with recording steps: ${points.map((p) => `${p.failpoint} (${p.journalStep})`).join(', ')}; then the running compute (watchPostgres)`,
  `cache: the keys of createComputeCacheActivities: ${cacheActivities.join(', ')}`,
];
const cells: Cell[] = [];
const notes: string[] = [];
// CHAOS_STACK_DIR: a stack already running there (started by bench/chaos/keep-stack.ts), left running.
const existingDir = process.env.CHAOS_STACK_DIR;
const existing = existingDir ? runningStack(existingDir) : undefined;
if (existingDir && !existing) throw new Error(`CHAOS_STACK_DIR=${existingDir} names no running stack`);
const stack = await startChaosStack({ log, ...(existing ? { existing: { endpoints: existing.endpoints, shared: false } } : {}) });
const save = () =>
  writeTable(out, cells, {
    startedAt,
    wallMs: Date.now() - startedAt.getTime(),
    faults: faults.map((f) => (f === WORKER_KILL ? { name: WORKER_KILL, label: 'the worker running the step SIGKILLed (a new one started)' } : { name: f.name, label: f.label })),
    enumeration,
    notes,
  });
try {
  for (const workflow of workflows) {
    for (const fault of faults) {
      const name = faultName(fault);
      const notFor = fault === WORKER_KILL ? undefined : fault.notFor?.[workflow];
      log(`${workflow} × ${name}`);
      try {
        if (notFor) {
          cells.push({ workflow, step: '(every step)', fault: name, completed: null, redone: [], note: notFor });
        } else if (workflow === 'compute') {
          cells.push(...(await runComputeRow({ stack, log }, fault, points.map((p) => p.failpoint))));
        } else if (workflow === 'cache') {
          cells.push(...(await runCacheRow({ stack, log }, fault, cacheActivities)));
        }
      } catch (err) {
        log(`${workflow} × ${name} broke: ${(err as Error).stack}`);
        cells.push({ workflow, step: '(row)', fault: name, completed: false, redone: [], note: `the row broke: ${(err as Error).message.split('\n')[0]}` });
      }
      save();
    }
    if (workflow === 'import') {
      const result = await runImportRows({ stack, log }, faults);
      cells.push(...result.cells);
      enumeration.push(result.enumeration);
      save();
    }
  }
} finally {
  await stack.stop();
}
save();
log(`wrote ${out}`);
