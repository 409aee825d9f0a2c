/**
 * The faults of the chaos table. Each is applied when a step is reached, held for its window while
 * the step runs into it, then healed. The worker kill is not here: it replaces the worker that was
 * paused in the step (see the rows), which needs no window.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ChaosStack } from './chaos-stack';

export type Workflow = 'compute' | 'cache' | 'import';

export interface FaultTarget {
  stack: ChaosStack;
  /** The compute's PGDATA, for faults on its Postgres. */
  pgdata?: string;
  /** The step the fault is injected in (its failpoint or activity name). */
  step?: string;
}

export interface Fault {
  name: string;
  /** What the table says the fault is. */
  label: string;
  /** How long the fault holds after the step was let go into it. */
  windowMs: number;
  /** Why the fault does not apply to a workflow, if it does not. */
  notFor?: Partial<Record<Workflow, string>>;
  /**
   * Why a workflow cannot complete under this fault, by design: then the targets mean that it fails
   * cleanly (a failed status with the reason, no hang) and that the next compute on the timeline
   * finds every acknowledged commit.
   */
  failsByDesign?: string;
  /** A fault on S3: a cell whose window made no S3 request is n/a (the fault had nothing to act on). */
  s3?: boolean;
  /** Applied once the paused step was let go (a fault on what the step itself starts). */
  afterRelease?: boolean;
  /**
   * Applies the fault; may return a note for the cell, or that the fault found nothing to act on
   * in this step (no Postgres runs yet): the cell is then n/a with that reason.
   */
  apply(t: FaultTarget): Promise<string | void | NotApplicable>;
  heal(t: FaultTarget): Promise<void>;
}

export const WORKER_KILL = 'worker-kill';

export interface NotApplicable {
  notApplicable: string;
}

/** The note of a cell under an S3 fault whose window made no S3 request. */
export const NO_S3_REQUEST = 'n/a: no S3 request in the step (0 requests reached S3 or the fault layer): an S3 fault has nothing to act on';

export const isNotApplicable = (r: unknown): r is NotApplicable => typeof r === 'object' && r !== null && 'notApplicable' in r;

const restartComponent = (name: string, label: string, downMs: number): Fault => ({
  name: `${name.replace(/-\d+$/, '')}-restart`,
  label,
  windowMs: downMs,
  apply: ({ stack }) => stack.killComponent(name),
  heal: ({ stack }) => stack.startComponent(name),
});

function postmasterPid(pgdata: string): number | undefined {
  try {
    const pid = Number(readFileSync(path.join(pgdata, 'postmaster.pid'), 'utf8').split('\n')[0]);
    if (!Number.isInteger(pid) || pid <= 0) return undefined;
    process.kill(pid, 0);
    return pid;
  } catch {
    return undefined;
  }
}

/** Every fault other than the worker kill, in table order. */
export const FAULTS: Fault[] = [
  restartComponent('temporal', 'Temporal dev server SIGKILLed, restarted on its database file', 2000),
  {
    name: 's3-500',
    s3: true,
    label: 'S3 answers 500 InternalError (HTTP fault layer)',
    windowMs: 4000,
    apply: async ({ stack }) => {
      stack.http.setFault(500);
    },
    heal: async ({ stack }) => stack.http.setFault(undefined),
  },
  {
    name: 's3-503',
    s3: true,
    label: 'S3 answers 503 SlowDown (HTTP fault layer)',
    windowMs: 4000,
    apply: async ({ stack }) => {
      stack.http.setFault(503);
    },
    heal: async ({ stack }) => stack.http.setFault(undefined),
  },
  {
    name: 's3-stall',
    s3: true,
    label: "S3 stalls: toxiproxy drops all data (timeout toxic, 0) for 15 s, past the S3 client's 5 s request timeout and the 10 s heartbeat timeouts",
    windowMs: 15_000,
    apply: ({ stack }) => stack.toxiproxy.addToxic('stall', 'timeout', { timeout: 0 }),
    heal: ({ stack }) => stack.toxiproxy.removeToxic('stall'),
  },
  {
    name: 's3-reset',
    s3: true,
    label: 'S3 connections reset (toxiproxy reset_peer)',
    windowMs: 4000,
    apply: ({ stack }) => stack.toxiproxy.addToxic('reset', 'reset_peer', { timeout: 0 }),
    heal: ({ stack }) => stack.toxiproxy.removeToxic('reset'),
  },
  restartComponent('pageserver', 'dev pageserver SIGKILLed and restarted', 2000),
  restartComponent('safekeeper-1', 'one safekeeper (of 3) SIGKILLed and restarted', 2000),
  {
    name: 'postgres-kill',
    label: "the compute's Postgres SIGKILLed",
    windowMs: 1000,
    afterRelease: true,
    failsByDesign:
      "a compute's Postgres that dies is not restarted (as compute_ctl: it exits and the control plane starts a new compute), so the compute fails and nothing more runs on it",
    notFor: { import: 'an import runs no compute Postgres (its scratch Postgres is the importer worker\'s, covered by the worker kill)' },
    async apply({ pgdata, step }) {
      if (!pgdata) return { notApplicable: 'no compute' };
      // Inside startPostgres: wait (briefly) for the postmaster the step starts.
      for (let i = 0; i < (step === 'startPostgres' ? 200 : 1); i++) {
        const pid = postmasterPid(pgdata);
        if (pid) {
          process.kill(pid, 'SIGKILL');
          return `postmaster ${pid} killed`;
        }
        await sleep(50);
      }
      return step === 'startPostgres' ? 'no postmaster appeared within 10 s' : { notApplicable: 'no Postgres runs yet in this step: nothing to kill' };
    },
    heal: async () => {},
  },
];

export const ALL_FAULT_NAMES = [WORKER_KILL, ...FAULTS.map((f) => f.name)];
