import path from 'node:path';
import { Context } from '@temporalio/activity';
import type { ComputeSpec } from '../../model/compute-spec';
import type { Failpoint } from '../failpoints';
import { readTextIfExists, writeFileAtomic } from '../../drivers/postgres/files';
import { findRunningPostmaster } from '../../drivers/postgres/process';
import { STARTUP_JOURNAL_FILE, type StartupSteps } from '../../drivers/compute-startup/steps';
import type { StartComputeResult, StartupStep } from './types';
import { every } from '../../common/activity-context';

/**
 * What the one-activity startup has done for one fresh start. Written into PGDATA after every
 * step (a wipe removes it with the data it describes) and sent as the activity's heartbeat, so
 * the Web UI shows the step in progress.
 */
interface StartupJournal {
  incarnation: string;
  /** Each completed step and the milliseconds it took. */
  done: Partial<Record<StartupStep, number>>;
  lsn?: string | null;
  basebackup?: { bytes: number; connectMicros: number };
  pid?: number;
  /** The step in progress (for the heartbeat). */
  step?: StartupStep;
}

export interface StartComputeDeps {
  pgdata: string;
  steps: StartupSteps;
  failpoint: Failpoint;
  /** Where a step's completion is told (the worker's log); tests count these to prove nothing is redone. */
  log?: (line: string) => void;
}

async function readJournal(pgdata: string, incarnation: string): Promise<StartupJournal | undefined> {
  const text = await readTextIfExists(path.join(pgdata, STARTUP_JOURNAL_FILE)).catch(() => undefined);
  if (text === undefined) return undefined;
  try {
    const journal = JSON.parse(text) as StartupJournal;
    return journal.incarnation === incarnation ? journal : undefined;
  } catch {
    return undefined;
  }
}

/**
 * compute_ctl's whole startup as one activity on the compute's task queue: every step of it used
 * to be an activity of its own, and each round trip through the Temporal server (a workflow task
 * plus a dispatch, 35-60 ms on the embedded stack) cost more than most steps (bench/compute-start.ts).
 *
 * Resume stays per step. A retried attempt (a worker killed mid-step) reads the journal in PGDATA
 * and skips every step it records as done, after checking the disk still shows it (the incarnation
 * marker, the base backup's completion marker, a running postmaster). A PGDATA wiped under a
 * running attempt fails with PgdataLost, and the workflow begins a new fresh start; a retried
 * attempt that finds no journal of its start simply begins at the first step.
 */
export function createStartCompute(deps: StartComputeDeps) {
  const { steps, failpoint, pgdata } = deps;
  const log = deps.log ?? ((line: string) => console.log(line));

  // One attempt at a time on this PGDATA. An attempt the server timed out (its heartbeats stalled
  // on a saturated VM) may still be running here when the retry arrives; two unpacks into one
  // PGDATA would each clear the other's files.
  let previousAttempt: Promise<unknown> = Promise.resolve();

  return async function startCompute(input: { incarnation: string; spec: ComputeSpec }): Promise<StartComputeResult> {
    const ctx = Context.current();
    const waitFor = previousAttempt;
    let release!: () => void;
    previousAttempt = new Promise<void>((resolve) => (release = resolve));
    const stopBeating = every(1000, () => ctx.heartbeat({ step: 'waiting for an earlier attempt on this PGDATA' }));
    try {
      await waitFor;
    } finally {
      stopBeating();
    }
    try {
      return await runStartup(ctx, input);
    } finally {
      release();
    }
  };

  async function runStartup(ctx: Context, { incarnation, spec }: { incarnation: string; spec: ComputeSpec }): Promise<StartComputeResult> {
    const journal: StartupJournal = (await readJournal(pgdata, incarnation)) ?? { incarnation, done: {} };
    const beat = (details: Record<string, unknown> = {}) => ctx.heartbeat({ ...journal, ...details });

    const record = async (step: StartupStep, ms: number) => {
      journal.done[step] = ms;
      journal.step = undefined;
      // No fsync: a lost journal costs a redo, never a wrong skip (every skip checks the disk too).
      await writeFileAtomic(path.join(pgdata, STARTUP_JOURNAL_FILE), JSON.stringify(journal));
      log(`startup step ${step} done in ${ms} ms (attempt ${ctx.info.attempt}, pid ${process.pid})`);
      beat();
    };
    const begin = async (step: StartupStep, point: string) => {
      journal.step = step;
      beat();
      await failpoint(point, { heartbeatDetails: { ...journal }, evenOnRetry: true });
    };
    const timed = async <T>(fn: () => Promise<T>): Promise<[T, number]> => {
      const started = Date.now();
      const value = await fn();
      return [value, Date.now() - started];
    };

    // 1. Fresh PGDATA and postgresql.conf, while the safekeepers are asked whether they agree.
    const prepare = async () => {
      if (journal.done.prepare_pgdata === undefined) {
        await begin('prepare_pgdata', 'preparePgdata');
        const [, wipeMs] = await timed(() => steps.preparePgdata({ incarnation }));
        await begin('prepare_pgdata', 'writePostgresConfig');
        const [, confMs] = await timed(() => steps.writePostgresConfig({ incarnation, spec }));
        await record('prepare_pgdata', wipeMs + confMs);
      }
    };
    const findLsn = async (): Promise<{ lsn: string | null; checkMs: number }> => {
      if (spec.mode.kind === 'Static') return { lsn: spec.mode.lsn, checkMs: 0 };
      if (spec.mode.kind !== 'Primary') return { lsn: null, checkMs: 0 };
      if (journal.lsn !== undefined) return { lsn: journal.lsn, checkMs: journal.done.sync_sk_check ?? 0 };
      const check = await steps.checkSafekeepersSynced(spec);
      if (!check.synced) log(`safekeepers not in agreement (${check.reason}); syncing them`);
      return { lsn: check.synced ? check.lsn : null, checkMs: check.ms };
    };
    const [, found] = await Promise.all([prepare(), findLsn()]);
    let lsn = found.lsn;
    if (spec.mode.kind === 'Primary' && journal.lsn === undefined) {
      journal.lsn = lsn;
      await record('sync_sk_check', found.checkMs);
    }

    // 2. No quorum in agreement: sync the safekeepers (compute_ctl's --sync-safekeepers).
    if (spec.mode.kind === 'Primary' && lsn === null) {
      await begin('sync_safekeepers', 'syncSafekeepers');
      const synced = await steps.syncSafekeepers({ incarnation, storageAuthToken: spec.storage_auth_token });
      lsn = synced.lsn;
      journal.lsn = lsn;
      await record('sync_safekeepers', synced.ms);
    }

    // 3. The base backup; its own completion marker, not the journal, says whether it is whole.
    if (journal.done.basebackup === undefined || !(await steps.hasCompleteBasebackup(incarnation))) {
      await begin('basebackup', 'fetchBasebackup');
      const [backup] = await timed(() =>
        steps.fetchBasebackup({ incarnation, spec, lsn }, (p) => beat({ basebackupReceivedBytes: p.receivedBytes })),
      );
      journal.basebackup = { bytes: backup.bytes, connectMicros: backup.connectMicros };
      await record('basebackup', backup.ms);
    }

    // 4. pg_hba.conf and standby.signal, then Postgres and the storage backend's companion.
    if (journal.done.start_postgres === undefined || !(await findRunningPostmaster(pgdata))) {
      await begin('start_postgres', 'prepareStartupFiles');
      const [, filesMs] = await timed(() => steps.prepareStartupFiles({ incarnation, spec }));
      await begin('start_postgres', 'startPostgres');
      const started = await steps.startPostgres({ incarnation, spec });
      journal.pid = started.pid;
      await record('start_postgres', filesMs + started.ms);
    }

    // 5. Roles and databases (compute_ctl's apply_config), Primary only.
    if (spec.mode.kind === 'Primary' && !spec.skip_pg_catalog_updates && journal.done.config === undefined) {
      await begin('config', 'applySpec');
      const applied = await steps.applySpec({ spec });
      await record('config', applied.ms);
    }

    return {
      lsn,
      pid: journal.pid ?? 0,
      metrics: {
        prepare_pgdata_ms: journal.done.prepare_pgdata ?? 0,
        sync_sk_check_ms: journal.done.sync_sk_check ?? 0,
        sync_safekeepers_ms: journal.done.sync_safekeepers ?? 0,
        basebackup_ms: journal.done.basebackup ?? 0,
        basebackup_bytes: journal.basebackup?.bytes ?? 0,
        pageserver_connect_micros: journal.basebackup?.connectMicros ?? 0,
        start_postgres_ms: journal.done.start_postgres ?? 0,
        config_ms: journal.done.config ?? 0,
      },
    };
  }
}
