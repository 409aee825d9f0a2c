import { writeFileAtomicSync } from './atomic-write';
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { asyncLocalStorage } from '@temporalio/activity';
import { processStartTime } from './process-start-time';

/**
 * Which step attempt a host's worker process is running, kept on the host's disk, so a worker
 * restarted after a crash can hand that attempt back at once instead of letting Temporal wait
 * for its heartbeat timeout.
 *
 * A lease is written when a host step starts (`<workdirRoot>/<import dir>.step.json`: the
 * attempt's task token and the worker's pid and process start time) and removed when it ends.
 * A lease whose process is gone names an attempt nobody runs any more: the new worker fails
 * exactly that attempt (the task token names the attempt; Temporal refuses it for any other, and
 * keeps its last heartbeat details), and the step's retry starts within its retry interval, on
 * this worker, where the files are.
 */

export interface StepLease {
  taskToken: string;
  activityType: string;
  workflowId: string;
  attempt: number;
  pid: number;
  /** The process's start time (from /proc), so a reused pid is not mistaken for the owner. */
  processStart: string | null;
  startedAt: string;
}

const LEASE_SUFFIX = '.step.json';

/** Whether the process that wrote a lease still runs: a zombie or a reused pid does not count. */
function isAlive(pid: number, recordedStart: string | null): boolean {
  const start = processStartTime(pid);
  return start !== undefined && (recordedStart === null || start === recordedStart);
}

function leaseFile(workdirRoot: string, workdir: string): string {
  return path.join(workdirRoot, `${path.basename(workdir)}${LEASE_SUFFIX}`);
}

/**
 * Records that this process runs the current activity attempt in `workdir`; the returned
 * function removes the record. Outside an activity there is nothing to record.
 */
export function holdStepLease(workdirRoot: string, workdir: string): () => void {
  const ctx = asyncLocalStorage.getStore();
  if (!ctx) return () => {};
  const file = leaseFile(workdirRoot, workdir);
  const lease: StepLease = {
    taskToken: Buffer.from(ctx.info.taskToken).toString('base64'),
    activityType: ctx.info.activityType,
    workflowId: ctx.info.workflowExecution?.workflowId ?? '',
    attempt: ctx.info.attempt,
    pid: process.pid,
    processStart: processStartTime(process.pid) ?? null,
    startedAt: new Date().toISOString(),
  };
  writeFileAtomicSync(file, JSON.stringify(lease), { mode: 0o600 });
  return () => {
    // Only our own lease: a later attempt of the same step may have replaced it.
    try {
      const current = JSON.parse(readFileSync(file, 'utf8')) as StepLease;
      if (current.taskToken === lease.taskToken) rmSync(file, { force: true });
    } catch {
      // Gone already.
    }
  };
}

/** Leases under `workdirRoot` (only `workdir`'s, when given) whose process no longer runs. */
export function abandonedStepLeases(workdirRoot: string, workdir?: string): { file: string; lease: StepLease }[] {
  if (!existsSync(workdirRoot)) return [];
  const found: { file: string; lease: StepLease }[] = [];
  const names = workdir === undefined ? readdirSync(workdirRoot) : [path.basename(leaseFile(workdirRoot, workdir))].filter((n) => existsSync(path.join(workdirRoot, n)));
  for (const name of names) {
    if (!name.endsWith(LEASE_SUFFIX)) continue;
    const file = path.join(workdirRoot, name);
    let lease: StepLease;
    try {
      lease = JSON.parse(readFileSync(file, 'utf8')) as StepLease;
    } catch {
      rmSync(file, { force: true });
      continue;
    }
    if (typeof lease?.taskToken !== 'string' || !Number.isInteger(lease.pid)) {
      rmSync(file, { force: true });
      continue;
    }
    if (lease.pid === process.pid || isAlive(lease.pid, lease.processStart ?? null)) continue;
    found.push({ file, lease });
  }
  return found;
}

/**
 * Hands back every attempt a dead worker of this host left running (only `workdir`'s, when
 * given): `handBack` ends it (the importer fails it, retryable; the compute worker completes a
 * watch round), so what follows comes now rather than after the heartbeat timeout. An attempt
 * that already ended or was retried is refused by Temporal, which is fine. Call before polling.
 */
export async function takeOverAbandonedSteps(
  workdirRoot: string,
  handBack: (taskToken: Uint8Array, lease: StepLease) => Promise<void>,
  log: (line: string) => void = () => {},
  workdir?: string,
): Promise<{ handedBack: number; alreadyGone: number }> {
  let handedBack = 0;
  let alreadyGone = 0;
  for (const { file, lease } of abandonedStepLeases(workdirRoot, workdir)) {
    try {
      await handBack(Buffer.from(lease.taskToken, 'base64'), lease);
      handedBack++;
      log(`handed back ${lease.activityType} attempt ${lease.attempt} of ${lease.workflowId}, left by process ${lease.pid}`);
    } catch (err) {
      alreadyGone++;
      log(`${lease.activityType} attempt ${lease.attempt} of ${lease.workflowId} (process ${lease.pid}) needs no hand-back: ${(err as Error).message}`);
    }
    rmSync(file, { force: true });
  }
  return { handedBack, alreadyGone };
}
