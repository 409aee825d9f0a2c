/**
 * `npm run chaos` (also `BENCH=chaos npm run bench`): the chaos table. Every step of the compute
 * startup, the cache offload/prewarm path and the import, enumerated from the code, crossed with
 * every fault (test/chaos/faults.ts), with S3 behind toxiproxy. Writes bench/results/chaos.md
 * and the cells as data beside it (chaos.json).
 *
 * Each workflow's rows run in a process of their own on a private stack, the three in parallel:
 * a server restart in one workflow's row never lands in another's cells, and the table takes as
 * long as its slowest workflow rather than the sum.
 *
 * Some rows only: `npm run chaos -- --workflow import --fault worker-kill,temporal-restart`. A
 * run's rows (workflow × fault) replace the same rows of the table and the others stay, so
 * missing rows can be run without redoing the rest (several such runs at once each merge their
 * own rows); `--fresh` starts the table over. `--out`
 * names another table; `--stack-dir` reuses a running stack (test/chaos/keep-stack.ts; one
 * workflow at a time).
 */
import { spawn } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import { tsNodeArgs } from '../../common/paths';
import { runningStack } from '../../dev/stack';
import { runCacheRow } from './cache-row';
import { startChaosStack } from './chaos-stack';
import { runComputeRow } from './compute-row';
import { ALL_FAULT_NAMES, FAULTS, WORKER_KILL, type Fault, type Workflow } from './faults';
import { runImportRows } from './import-row';
import { cacheSteps, computeStartupPoints } from './steps';
import { emptyTable, loadTable, mergeRun, writeTable, type RunPart } from './table';

const here = path.dirname(fileURLToPath(import.meta.url));
const ALL_WORKFLOWS: Workflow[] = ['compute', 'cache', 'import'];
const list = (all: readonly string[]) => (value: string) => {
  const chosen = value.split(',').map((v) => v.trim()).filter(Boolean);
  for (const c of chosen) if (!all.includes(c)) throw new Error(`unknown ${c}; choose from ${all.join(', ')}`);
  return chosen;
};
const cli = new Command('chaos')
  .description('the chaos table: every step of each workflow crossed with every fault')
  .option('--workflow <names>', `workflows to run, comma-separated (${ALL_WORKFLOWS.join(', ')})`, list(ALL_WORKFLOWS), [...ALL_WORKFLOWS])
  .option('--fault <names>', `faults to run, comma-separated (${ALL_FAULT_NAMES.join(', ')})`, list(ALL_FAULT_NAMES), [...ALL_FAULT_NAMES])
  .option('--out <file>', 'the table (Markdown; its data beside it, .json)', path.join(here, '..', '..', 'bench', 'results', 'chaos.md'))
  .option('--fresh', 'start the table over instead of merging this run\'s rows into it', false)
  .option('--stack-dir <dir>', 'use this running stack instead of a private one')
  .option('--part <file>', '(internal) write this process\'s rows here, for the parent to merge');
cli.parse();
const opts = cli.opts<{ workflow: Workflow[]; fault: string[]; out: string; fresh: boolean; stackDir?: string; part?: string }>();
const workflows = opts.workflow;
const faultNames = opts.fault;
const out = path.resolve(opts.out);

const startedAt = new Date();
const log = (line: string) => console.log(`[chaos ${Math.round((Date.now() - startedAt.getTime()) / 1000)} s] ${line}`);
const faults: (Fault | typeof WORKER_KILL)[] = faultNames.map((n) => (n === WORKER_KILL ? WORKER_KILL : FAULTS.find((f) => f.name === n)!));
const faultName = (f: Fault | typeof WORKER_KILL) => (f === WORKER_KILL ? WORKER_KILL : f.name);
/** Every fault is a column: the table holds earlier runs' rows too. */
const faultLabels = [{ name: WORKER_KILL, label: 'the worker running the step SIGKILLed (a new one started at once)' }, ...FAULTS.map((f) => ({ name: f.name, label: f.label }))];

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

/**
 * Merges this run's rows into the table as it is now, under a lock: runs of other rows, started
 * at the same time (say, one per workflow), each merge theirs without losing the others'.
 */
let fresh = opts.fresh;
function publish(part: RunPart): void {
  const lock = `${out}.lock`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      closeSync(openSync(lock, 'wx'));
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      if (Date.now() > deadline) throw new Error(`${lock} held for 30 s: remove it if no chaos run is writing the table`);
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 50);
    }
  }
  try {
    const table = fresh ? emptyTable() : loadTable(out.replace(/\.md$/, '') + '.json');
    writeTable(out, mergeRun(table, part, { startedAt: startedAt.toISOString(), wallMs: Date.now() - startedAt.getTime(), cores: os.cpus().length }), faultLabels);
    fresh = false;
  } finally {
    rmSync(lock, { force: true });
  }
}

/** This process's workflows, one after the other, on one stack. */
async function runHere(partFile?: string): Promise<RunPart> {
  const part: RunPart = { cells: [], enumeration: {}, notes: [] };
  const save = () => (partFile ? writeFileSync(partFile, JSON.stringify(part)) : publish(part));
  const points = await computeStartupPoints();
  if (workflows.includes('compute')) {
    part.enumeration.compute = `compute: the startup's pause points, found by driving activities/compute/startup.ts with recording steps: ${points.map((p) => `${p.failpoint} (${p.journalStep})`).join(', ')}; then the running compute (watchPostgres)`;
  }
  if (workflows.includes('cache')) part.enumeration.cache = `cache: the keys of createComputeCacheActivities: ${cacheSteps().join(', ')}`;
  const existing = opts.stackDir ? runningStack(opts.stackDir) : undefined;
  if (opts.stackDir && !existing) throw new Error(`--stack-dir ${opts.stackDir} names no running stack`);
  const stack = await startChaosStack({ log, ...(existing ? { existing: { endpoints: existing.endpoints, shared: false } } : {}) });
  try {
    for (const workflow of workflows) {
      if (workflow === 'import') {
        const earlier = [...part.cells];
        try {
          const result = await runImportRows({ stack, log }, ordered('import'), (cells, enumeration) => {
            part.cells = [...earlier, ...cells];
            part.enumeration.import = enumeration;
            save();
          });
          part.cells = [...earlier, ...result.cells];
          part.enumeration.import = result.enumeration;
        } catch (err) {
          log(`import rows broke: ${(err as Error).stack}`);
          part.notes.push(`the import rows broke: ${(err as Error).message.split('\n')[0]}`);
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

/** One child process per workflow, in parallel; their rows merged into the table. */
async function runInParallel(): Promise<void> {
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'dc-chaos-parts-'));
  const readPart = (workflow: string): RunPart => {
    try {
      return JSON.parse(readFileSync(path.join(tmp, `${workflow}.json`), 'utf8')) as RunPart;
    } catch {
      return { cells: [], enumeration: {}, notes: [] };
    }
  };
  const merged = (parts: RunPart[]): RunPart => ({
    cells: parts.flatMap((p) => p.cells),
    enumeration: Object.assign({}, ...parts.map((p) => p.enumeration)) as RunPart['enumeration'],
    notes: ['Each workflow ran in its own process on its own private stack, in parallel on the shared machine.', ...parts.flatMap((p) => p.notes)],
  });
  // The table so far, every half minute: a run stopped early still leaves what it measured.
  const progress = setInterval(() => publish(merged(workflows.map(readPart))), 30_000);
  const children = workflows.map(
    (workflow) =>
      new Promise<RunPart>((resolve) => {
        const partFile = path.join(tmp, `${workflow}.json`);
        const child = spawn(process.execPath, [...tsNodeArgs(), fileURLToPath(import.meta.url), '--workflow', workflow, '--fault', faultNames.join(','), '--part', partFile], {
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        const prefix = (d: Buffer) => d.toString().split('\n').filter(Boolean).map((l) => `${workflow}: ${l}`).join('\n');
        child.stdout.on('data', (d: Buffer) => console.log(prefix(d)));
        child.stderr.on('data', (d: Buffer) => console.error(prefix(d)));
        child.on('exit', (code) => {
          const part = readPart(workflow);
          if (code !== 0) part.notes.push(`The ${workflow} process exited with ${code}; its rows are what it finished.`);
          resolve(part);
        });
      }),
  );
  const parts = await Promise.all(children);
  clearInterval(progress);
  rmSync(tmp, { recursive: true, force: true });
  publish(merged(parts));
}

if (opts.part) await runHere(opts.part);
else if (workflows.length > 1 && !opts.stackDir) await runInParallel();
else await runHere();
log(opts.part ? `wrote ${opts.part}` : `wrote ${out}`);
