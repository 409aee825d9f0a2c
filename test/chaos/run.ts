/**
 * `npm run chaos` (also `BENCH=chaos npm run bench`): the chaos table, a fault-injection suite
 * that drives the activities themselves (so it lives with the tests, which may import them). Every step of the compute
 * startup, the cache offload/prewarm path and the import, enumerated from the code, crossed with
 * every fault (test/chaos/faults.ts), with S3 behind toxiproxy. Writes bench/results/chaos.md.
 *
 * Each workflow's rows run in a process of their own on a private stack, the three in parallel:
 * a server restart in one workflow's row never lands in another's cells, and the table takes as
 * long as its slowest workflow rather than the sum.
 *
 * CHAOS_WORKFLOWS=compute,cache,import and CHAOS_FAULTS=worker-kill,s3-503,... pick a subset;
 * CHAOS_OUT names another results file (a partial run does not overwrite the full table);
 * CHAOS_STACK_DIR reuses a running stack (test/chaos/keep-stack.ts; one workflow at a time).
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { tsNodeArgs } from '../../common/paths';
import { runningStack } from '../../dev/stack';
import { runCacheRow } from './cache-row';
import { startChaosStack } from './chaos-stack';
import { runComputeRow } from './compute-row';
import { ALL_FAULT_NAMES, FAULTS, WORKER_KILL, type Fault, type Workflow } from './faults';
import { runImportRows } from './import-row';
import { cacheSteps, computeStartupPoints } from './steps';
import { writeTable, type Cell } from './table';

const here = path.dirname(fileURLToPath(import.meta.url));
const pick = (value: string | undefined, all: readonly string[]) => {
  const chosen = value ? value.split(',').map((v) => v.trim()).filter(Boolean) : [...all];
  for (const c of chosen) if (!all.includes(c)) throw new Error(`unknown ${c}; choose from ${all.join(', ')}`);
  return chosen;
};
const workflows = pick(process.env.CHAOS_WORKFLOWS, ['compute', 'cache', 'import']) as Workflow[];
const faultNames = pick(process.env.CHAOS_FAULTS, ALL_FAULT_NAMES);
const out = process.env.CHAOS_OUT ?? path.join(here, '..', '..', 'bench', 'results', 'chaos.md');

const startedAt = new Date();
const log = (line: string) => console.log(`[chaos ${Math.round((Date.now() - startedAt.getTime()) / 1000)} s] ${line}`);
const faults: (Fault | typeof WORKER_KILL)[] = faultNames.map((n) => (n === WORKER_KILL ? WORKER_KILL : FAULTS.find((f) => f.name === n)!));
const faultName = (f: Fault | typeof WORKER_KILL) => (f === WORKER_KILL ? WORKER_KILL : f.name);
const faultLabels = faults.map((f) =>
  f === WORKER_KILL ? { name: WORKER_KILL, label: 'the worker running the step SIGKILLed (a new one started at once)' } : { name: f.name, label: f.label },
);

/**
 * Row order per workflow, the faults that reach it first (S3 is on the cache and import paths, not
 * on the compute startup's): a run stopped early has measured what matters most.
 */
const FIRST: Record<Workflow, string[]> = {
  compute: [WORKER_KILL, 'temporal-restart', 'pageserver-restart', 'safekeeper-restart', 'postgres-kill'],
  cache: ['s3-503', 's3-stall', 's3-reset', WORKER_KILL, 'postgres-kill', 'temporal-restart', 's3-500'],
  import: ['s3-503', 's3-stall', 's3-reset', WORKER_KILL, 'temporal-restart', 'pageserver-restart'],
};
const ordered = (workflow: Workflow) => {
  const rank = (f: Fault | typeof WORKER_KILL) => {
    const i = FIRST[workflow].indexOf(faultName(f));
    return i < 0 ? FIRST[workflow].length : i;
  };
  return [...faults].sort((a, b) => rank(a) - rank(b));
};

interface Part {
  cells: Cell[];
  enumeration: string[];
  notes: string[];
}

/** This process's workflows, one after the other, on one stack. */
async function runHere(partFile?: string): Promise<Part> {
  const part: Part = { cells: [], enumeration: [], notes: [] };
  const save = () => {
    if (partFile) writeFileSync(partFile, JSON.stringify(part));
    else writeTable(out, part.cells, { startedAt, wallMs: Date.now() - startedAt.getTime(), faults: faultLabels, enumeration: part.enumeration, notes: part.notes });
  };
  const points = await computeStartupPoints();
  if (workflows.includes('compute')) {
    part.enumeration.push(
      `compute: the startup's pause points, found by driving activities/compute/startup.ts with recording steps: ${points.map((p) => `${p.failpoint} (${p.journalStep})`).join(', ')}; then the running compute (watchPostgres)`,
    );
  }
  if (workflows.includes('cache')) part.enumeration.push(`cache: the keys of createComputeCacheActivities: ${cacheSteps().join(', ')}`);
  const existingDir = process.env.CHAOS_STACK_DIR;
  const existing = existingDir ? runningStack(existingDir) : undefined;
  if (existingDir && !existing) throw new Error(`CHAOS_STACK_DIR=${existingDir} names no running stack`);
  const stack = await startChaosStack({ log, ...(existing ? { existing: { endpoints: existing.endpoints, shared: false } } : {}) });
  try {
    for (const workflow of workflows) {
      if (workflow === 'import') {
        try {
          const before = { cells: [...part.cells], enumeration: [...part.enumeration] };
          const result = await runImportRows({ stack, log }, ordered('import'), (cells, enumeration) => {
            part.cells = [...before.cells, ...cells];
            part.enumeration = [...before.enumeration, enumeration];
            save();
          });
          part.cells = [...before.cells, ...result.cells];
          part.enumeration = [...before.enumeration, result.enumeration];
        } catch (err) {
          log(`import rows broke: ${(err as Error).stack}`);
          part.cells.push({ workflow, step: '(rows)', fault: '(all)', completed: false, redone: [], note: `the import rows broke: ${(err as Error).message.split('\n')[0]}` });
        }
        save();
        continue;
      }
      for (const fault of ordered(workflow)) {
        const name = faultName(fault);
        const notFor = fault === WORKER_KILL ? undefined : fault.notFor?.[workflow];
        log(`${workflow} × ${name}`);
        try {
          if (notFor) part.cells.push({ workflow, step: '(every step)', fault: name, completed: null, redone: [], note: notFor });
          else if (workflow === 'compute') part.cells.push(...(await runComputeRow({ stack, log }, fault, points.map((p) => p.failpoint))));
          else part.cells.push(...(await runCacheRow({ stack, log }, fault, cacheSteps())));
        } catch (err) {
          log(`${workflow} × ${name} broke: ${(err as Error).stack}`);
          part.cells.push({ workflow, step: '(row)', fault: name, completed: false, redone: [], note: `the row broke: ${(err as Error).message.split('\n')[0]}` });
        }
        save();
      }
    }
  } finally {
    await stack.stop();
  }
  save();
  return part;
}

/** One child process per workflow, in parallel; their parts merged into one table. */
async function runInParallel(): Promise<void> {
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'dc-chaos-parts-'));
  const readPart = (workflow: string): Part => {
    try {
      return JSON.parse(readFileSync(path.join(tmp, `${workflow}.json`), 'utf8')) as Part;
    } catch {
      return { cells: [], enumeration: [], notes: [] };
    }
  };
  const merge = (parts: Part[], extraNotes: string[]) =>
    writeTable(out, parts.flatMap((p) => p.cells), {
      startedAt,
      wallMs: Date.now() - startedAt.getTime(),
      faults: faultLabels,
      enumeration: parts.flatMap((p) => p.enumeration),
      notes: [
        'Each workflow ran in its own process on its own private stack, the three in parallel on the shared 2-core machine.',
        ...extraNotes,
        ...parts.flatMap((p) => p.notes),
      ],
    });
  // The table so far, every half minute: a run stopped early still leaves what it measured.
  const progress = setInterval(() => merge(workflows.map(readPart), ['Written while the run was in progress: a row not in the table had not finished yet.']), 30_000);
  const children = workflows.map(
    (workflow) =>
      new Promise<Part>((resolve) => {
        const partFile = path.join(tmp, `${workflow}.json`);
        const child = spawn(process.execPath, [...tsNodeArgs(), fileURLToPath(import.meta.url)], {
          env: { ...process.env, CHAOS_CHILD_PART: partFile, CHAOS_WORKFLOWS: workflow },
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        const prefix = (d: Buffer) => d.toString().split('\n').filter(Boolean).map((l) => `${workflow}: ${l}`).join('\n');
        child.stdout.on('data', (d: Buffer) => console.log(prefix(d)));
        child.stderr.on('data', (d: Buffer) => console.error(prefix(d)));
        child.on('exit', (code) => {
          const part = readPart(workflow);
          if (code !== 0) part.notes.push(`the ${workflow} process exited with ${code}; its table is what it finished`);
          resolve(part);
        });
      }),
  );
  const parts = await Promise.all(children);
  clearInterval(progress);
  rmSync(tmp, { recursive: true, force: true });
  merge(parts, []);
}

const partFile = process.env.CHAOS_CHILD_PART;
if (partFile) await runHere(partFile);
else if (workflows.length > 1 && !process.env.CHAOS_STACK_DIR) await runInParallel();
else await runHere();
log(partFile ? `wrote ${partFile}` : `wrote ${out}`);
