/**
 * The import rows. The steps are the activity types a clean import scheduled, in order, read from
 * its history (the workflow's own code decides them). Then, per fault, an import runs while a
 * watcher polls the workflow's pending activities: the first time a step is seen running, the
 * fault is injected there (the worker that runs it killed, or the fault held for its window). A
 * step that began and ended between two polls cannot be hit; it is retried on a further run, and
 * shown as not caught if no run caught it.
 */
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { importWorkflowId } from '../../model/import-status';
import { startImportSource, type ImportSource } from '../../dev/import-source';
import { startProcess, type WorkerProcess } from '../../dev/child-processes';
import type { ChaosStack } from './chaos-stack';
import { newId, newNeonId } from './compute-env';
import type { RowDeps } from './compute-row';
import { isNotApplicable, WORKER_KILL, type Fault } from './faults';
import { bytesMovedAgain, s3FaultNote } from './http-faults';
import type { Cell } from './table';

interface Step {
  type: string;
  /** Runs on the control plane's queue (our control-plane worker), else on an importer. */
  controlPlane: boolean;
}

interface Completion {
  type: string;
  at: number;
}

interface ImportRun {
  phase: string;
  error: string | null;
  completions: Completion[];
  notes: string[];
}

interface Env {
  stack: ChaosStack;
  source: ImportSource;
  queue: string;
  root: string;
}

const POLL_MS = 50;

async function startImporter(e: Env, hostId: string): Promise<WorkerProcess> {
  return startProcess('bin/durable-compute.mjs', ['worker', 'importer'], {
    env: {
      ...e.stack.env,
      DURABLE_COMPUTE_IMPORTER_WORKDIR: e.root,
      DURABLE_COMPUTE_IMPORTER_HOST_ID: hostId,
      DURABLE_COMPUTE_IMPORTER_TASK_QUEUE: e.queue,
      DURABLE_COMPUTE_IMPORTER_MEMORY_MB: '512',
      DURABLE_COMPUTE_IMPORTER_CPUS: '2',
      DURABLE_COMPUTE_IMPORTER_UPLOAD_CONCURRENCY: '2',
    },
    readyLine: /importer worker ready/,
    timeoutMs: 300_000,
  });
}

/** Completed activities from history, with their type and time; plus each activity's task queue. */
async function historyOf(stack: ChaosStack, importId: string): Promise<{ completions: Completion[]; queues: Map<string, string> }> {
  const history = await stack.temporal.workflow.getHandle(importWorkflowId(importId)).fetchHistory();
  const byId = new Map<string, string>();
  const queues = new Map<string, string>();
  const completions: Completion[] = [];
  for (const e of history.events ?? []) {
    const s = e.activityTaskScheduledEventAttributes;
    if (s) {
      byId.set(String(e.eventId), s.activityType?.name ?? '?');
      queues.set(s.activityType?.name ?? '?', s.taskQueue?.name ?? '');
    }
    const c = e.activityTaskCompletedEventAttributes;
    const seconds = Number(e.eventTime?.seconds ?? 0);
    if (c) completions.push({ type: byId.get(String(c.scheduledEventId)) ?? '?', at: seconds * 1000 + Math.floor((e.eventTime?.nanos ?? 0) / 1e6) });
  }
  return { completions, queues };
}

/** One import; `onRunning` is called (and awaited) the first time each step in `targets` is seen running. */
async function runImport(e: Env, onRunning: (step: string) => Promise<void>, targets: Set<string>): Promise<ImportRun & { importId: string }> {
  const { stack } = e;
  const importId = newId('chaos-import');
  // The import creates its timeline: fresh IDs, nothing created beforehand.
  const timeline = { tenantId: newNeonId(), timelineId: newNeonId() };
  await stack.imports.start({
    importId,
    sourceConnstring: e.source.url(),
    ...timeline,
    jobs: 2,
    options: { heartbeatTimeoutSeconds: 10, hostLostAfterSeconds: 120, pageserverPollSeconds: 1, claimTimeoutSeconds: 300, importerTaskQueue: e.queue },
  });
  const handle = stack.temporal.workflow.getHandle(importWorkflowId(importId));
  const deadline = Date.now() + 600_000;
  for (;;) {
    const d = await handle.describe().catch(() => undefined);
    if (d && d.status.name !== 'RUNNING') break;
    for (const pa of d?.raw.pendingActivities ?? []) {
      const type = pa.activityType?.name ?? '';
      if (targets.has(type)) {
        targets.delete(type);
        await onRunning(type);
      }
    }
    if (Date.now() > deadline) {
      await handle.terminate('chaos: import did not finish within 600 s').catch(() => undefined);
      break;
    }
    await sleep(POLL_MS);
  }
  const status = await stack.imports.status(importId);
  const { completions } = await historyOf(stack, importId);
  const notes: string[] = [];
  if (status.dump?.skipped) notes.push('dump kept from before');
  if (status.upload) notes.push(`upload: ${status.upload.uploaded_files} files sent, ${status.upload.skipped_files} kept, ${status.upload.restarted_files} restarted`);
  return { importId, phase: status.phase, error: status.error, completions, notes };
}

/** Table order: the steps' order, then the faults' (a stable sort). */
function sortedBy(steps: Step[], cells: Cell[]): Cell[] {
  const rank = new Map(steps.map((s, i) => [s.type, i]));
  return [...cells].sort((a, b) => (rank.get(a.step) ?? -1) - (rank.get(b.step) ?? -1));
}

/** Scratch Postgres servers the killed importers left running under `root` (immediate shutdown). */
function stopLeftScratchServers(root: string): void {
  for (const file of readdirSync(root, { recursive: true, encoding: 'utf8' }).filter((f) => path.basename(f) === 'postmaster.pid')) {
    const pid = Number.parseInt(readFileSync(path.join(root, file), 'utf8').split('\n')[0] ?? '', 10);
    try {
      if (pid > 0 && readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('postgres')) process.kill(pid, 'SIGQUIT');
    } catch {
      /* already gone */
    }
  }
}

export async function runImportRows(
  deps: RowDeps,
  faults: (Fault | typeof WORKER_KILL)[],
  /** Told after each fault's row, with every cell so far: a run stopped early keeps them. */
  onRow: (cells: Cell[], enumeration: string) => void = () => {},
): Promise<{ cells: Cell[]; enumeration: string }> {
  const { stack, log } = deps;
  const root = mkdtempSync(path.join(os.tmpdir(), 'dc-chaos-importer-'));
  chmodSync(root, 0o777);
  const source = await startImportSource({ password: 'chaos pw', database: 'shop', size: { customers: 2000, orders: 20_000, events: 60_000, eventPayloadRepeat: 2 } });
  const e: Env = { stack, source, queue: newId('chaos-importers'), root };
  const hostId = newId('chaos-host');
  let importer = await startImporter(e, hostId);
  const cells: Cell[] = [];
  try {
    // The steps: what a clean import schedules, in order.
    log('  import: a clean run to enumerate the steps');
    const clean = await runImport(e, async () => {}, new Set());
    if (clean.phase !== 'done') throw new Error(`the clean import did not finish: ${clean.phase} ${clean.error ?? ''}`);
    const { queues } = await historyOf(stack, clean.importId);
    const order = [...new Set(clean.completions.map((c) => c.type))];
    // Steps that complete more than once in a clean run (the pageserver poll) repeat by design.
    const repeating = new Set(order.filter((t) => clean.completions.filter((c) => c.type === t).length > 1));
    const steps: Step[] = order.map((type) => ({ type, controlPlane: queues.get(type) === stack.config.temporal.controlPlaneTaskQueue }));
    const enumeration = `import: the activity types a clean import scheduled, in order, from its history: ${steps.map((s) => `${s.type}${s.controlPlane ? ' (control plane)' : ''}`).join(', ')}`;

    for (const fault of faults) {
      const name = fault === WORKER_KILL ? WORKER_KILL : fault.name;
      if (fault !== WORKER_KILL && fault.notFor?.import) {
        cells.push({ workflow: 'import', step: '(every step)', fault: name, completed: null, redone: [], note: fault.notFor.import });
        continue;
      }
      log(`import × ${name}`);
      const targets = new Set(steps.map((s) => s.type));
      for (let attempt = 1; attempt <= Number(process.env.CHAOS_IMPORT_RUNS ?? 1) && targets.size > 0; attempt++) {
        const windows: { cell: Cell; at: number; forwarded: number; faulted: number }[] = [];
        const run = await runImport(
          e,
          async (type) => {
            log(`  import / ${type} / ${name}`);
            const cell: Cell = { workflow: 'import', step: type, fault: name, completed: false, redone: [] };
            windows.push({ cell, at: Date.now(), forwarded: stack.http.forwarded().length, faulted: stack.http.counters().faulted });
            if (fault === WORKER_KILL) {
              if (steps.find((s) => s.type === type)?.controlPlane) {
                await stack.restartControlPlane();
                cell.note = 'control-plane worker killed in the step, a new one started';
              } else {
                await importer.kill('SIGKILL');
                importer = await startImporter(e, hostId);
                cell.note = 'importer worker killed in the step, restarted on the same host';
              }
            } else {
              const applied = await fault.apply({ stack, step: type });
              if (isNotApplicable(applied)) throw new Error(`${name} found nothing to act on in ${type}: ${applied.notApplicable}`);
              const note = applied;
              await sleep(fault.windowMs);
              await fault.heal({ stack, step: type });
              if (note) cell.note = note;
            }
          },
          targets,
        );
        const end = { at: Date.now(), forwarded: stack.http.forwarded().length, faulted: stack.http.counters().faulted };
        for (const [i, w] of windows.entries()) {
          const next = windows[i + 1] ?? end;
          const seenBefore = new Set(run.completions.filter((c) => c.at < w.at).map((c) => c.type));
          const redone = run.completions.filter((c) => c.at >= w.at && c.at < next.at && !repeating.has(c.type) && seenBefore.has(c.type)).map((c) => c.type);
          const requests = stack.http.forwarded().slice(w.forwarded, next.forwarded);
          const faulted = next.faulted - w.faulted;
          Object.assign(w.cell, {
            completed: run.phase === 'done',
            redone,
            bytesUp: bytesMovedAgain(requests, 'up'),
            bytesDown: bytesMovedAgain(requests, 'down'),
            ms: next.at - w.at,
            note: [w.cell.note, run.phase !== 'done' ? `import ${run.phase}: ${run.error ?? ''}` : '', s3FaultNote(faulted), ...(i === windows.length - 1 ? run.notes : [])]
              .filter(Boolean)
              .join('; '),
          });
          cells.push(w.cell);
        }
      }
      for (const type of targets) {
        cells.push({ workflow: 'import', step: type, fault: name, completed: null, redone: [], note: `not caught: the step began and ended within one ${POLL_MS} ms poll on every run` });
      }
      onRow(sortedBy(steps, cells), enumeration);
    }
    return { cells: sortedBy(steps, cells), enumeration };
  } finally {
    await importer.kill('SIGKILL');
    await source.server.stop();
    stopLeftScratchServers(root);
    rmSync(root, { recursive: true, force: true });
  }
}
