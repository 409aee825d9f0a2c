/**
 * compute_ctl's /promote for the stock backend: a streaming Replica becomes the primary of its
 * timeline once it has replayed up to the given LSN (the old primary's terminate LSN).
 *
 * compute_ctl runs pg_promote(). Stock PostgreSQL's promotion starts a new PostgreSQL timeline (2),
 * but a timeline's WAL on the safekeepers and the pageserver is one stream on PostgreSQL timeline 1
 * (dev/storage/README.md), and every later compute, replica and image of the timeline reads it as
 * such. So the standby is stopped (fast: a restartpoint, nothing lost) and started again without
 * standby.signal: crash recovery replays all the WAL it received and writes its end-of-recovery
 * checkpoint at the end of it on timeline 1, exactly as a compute started from a base backup at
 * that LSN does, and the WAL pusher carries on from the safekeepers' end, which is that LSN.
 * Writes then wait for the safekeepers as on any started primary.
 *
 * Each step is recorded in a journal in PGDATA, so a retried attempt (a compute worker killed
 * mid-promote) does not redo a finished step: it never stops a Postgres that already runs as the
 * primary, nor waits again for a catch-up that was done.
 */
import path from 'node:path';
import { Context } from '@temporalio/activity';
import type { ComputeSpec } from '../../model/compute-spec';
import { formatLsn, isLsn, parseLsn } from '../../model/lsn';
import type { Failpoint } from '../failpoints';
import type { ComputePostgres } from '../../drivers/postgres';
import { readTextIfExists, writeFileAtomic } from '../../drivers/postgres/files';
import { findRunningPostmaster } from '../../drivers/postgres/process';
import { measureReplayLag, safekeepersCommitLsn, SAFEKEEPER_PASSFILE, type ReplayLag } from '../../drivers/storage-backend/stock/replica';
import { rm } from 'node:fs/promises';
import type { StartupSteps } from '../../drivers/compute-startup/steps';
import { nonRetryable } from '../../common/failures';

export const PROMOTE_JOURNAL_FILE = '.durable-compute-promote.json';
/** compute_ctl polls once a second, 21 times. */
const CATCH_UP_TIMEOUT_MS = 21_000;
/** ApplicationFailure type of a promote refused for a reason a retry will not cure. */
export const PROMOTE_FAILED = 'PromoteFailed';

export type PromoteStep = 'catch_up' | 'stop_standby' | 'configure_primary' | 'start_primary' | 'apply_spec';

/** The failpoint before each step (a test pauses there and kills the worker). */
const FAILPOINTS: Record<PromoteStep, string> = {
  catch_up: 'promoteCatchUp',
  stop_standby: 'promoteStopStandby',
  configure_primary: 'promoteConfigurePrimary',
  start_primary: 'promoteStartPrimary',
  apply_spec: 'promoteApplySpec',
};

interface PromoteJournal {
  incarnation: string;
  target?: string;
  done: Partial<Record<PromoteStep, number>>;
}

export interface PromoteInput {
  incarnation: string;
  /** The spec the compute runs as a primary from now on (mode Primary). */
  spec: ComputeSpec;
  /** Wait until replay reaches this LSN; default: the safekeepers' commit LSN. */
  safekeepersLsn?: string;
}

/** compute_ctl's PromoteState `completed` timings, plus the LSN the replica had replayed to. */
export interface PromoteResult {
  lsn: string;
  lsn_wait_time_ms: number;
  pg_promote_time_ms: number;
  reconfigure_time_ms: number;
}

export interface PromoteDeps {
  pgdata: string;
  steps: StartupSteps;
  postgres: ComputePostgres;
  failpoint: Failpoint;
  adminUser?: string;
  /** The storage backend: only the stock one is promoted this way. */
  backend: 'stock' | 'neon';
  log?: (line: string) => void;
}

async function readJournal(pgdata: string, incarnation: string): Promise<PromoteJournal> {
  const text = await readTextIfExists(path.join(pgdata, PROMOTE_JOURNAL_FILE)).catch(() => undefined);
  if (text !== undefined) {
    try {
      const j = JSON.parse(text) as PromoteJournal;
      if (j.incarnation === incarnation) return j;
    } catch {
      // A torn journal costs a redo of the first unrecorded step only; every step is idempotent.
    }
  }
  return { incarnation, done: {} };
}

export function createPromoteActivities(deps: PromoteDeps) {
  const { pgdata, steps, postgres, failpoint } = deps;
  const log = deps.log ?? ((line: string) => console.log(line));
  const localCtx = (spec: ComputeSpec) => ({
    pgdata,
    superuser: deps.adminUser ?? 'cloud_admin',
    tenantId: spec.tenant_id,
    timelineId: spec.timeline_id,
    safekeepers: spec.safekeeper_connstrings,
    ...(spec.storage_auth_token !== undefined ? { authToken: spec.storage_auth_token } : {}),
  });

  async function promoteReplica(input: PromoteInput): Promise<PromoteResult> {
    const ctx = Context.current();
    const { incarnation, spec } = input;
    if (deps.backend !== 'stock') {
      // Neon's Postgres promotes with pg_promote() and walproposer (compute_ctl's steps); not built here.
      throw nonRetryable(PROMOTE_FAILED, 'promote is implemented for the stock storage backend only');
    }
    if (spec.mode.kind !== 'Primary') throw nonRetryable(PROMOTE_FAILED, `a promote needs the primary's spec, got mode ${spec.mode.kind}`);
    if (input.safekeepersLsn !== undefined && !isLsn(input.safekeepersLsn)) {
      throw nonRetryable(PROMOTE_FAILED, `safekeepers LSN must look like 0/16B5A50, got ${JSON.stringify(input.safekeepersLsn)}`);
    }
    const check = await postgres.checkPgdata({ incarnation });
    if (!check.intact) throw nonRetryable(PROMOTE_FAILED, `cannot promote: ${check.problems.join('; ')}`);

    const journal = await readJournal(pgdata, incarnation);
    const beat = (details: Record<string, unknown> = {}) => ctx.heartbeat({ ...journal, ...details });
    const timer = setInterval(() => beat(), 1000);
    const run = async (step: PromoteStep, fn: () => Promise<void>) => {
      if (journal.done[step] !== undefined) return;
      await failpoint(FAILPOINTS[step], { heartbeatDetails: { ...journal }, evenOnRetry: true });
      const started = Date.now();
      await fn();
      journal.done[step] = Date.now() - started;
      await writeFileAtomic(path.join(pgdata, PROMOTE_JOURNAL_FILE), JSON.stringify(journal));
      log(`promote step ${step} done in ${journal.done[step]} ms (attempt ${ctx.info.attempt}, pid ${process.pid})`);
      beat();
    };
    try {
      // 1. Replay up to the target: the old primary's last WAL, so the new primary forks nothing.
      await run('catch_up', async () => {
        if (!(await findRunningPostmaster(pgdata))) throw nonRetryable(PROMOTE_FAILED, 'cannot promote: Postgres is not running');
        let target: bigint;
        if (input.safekeepersLsn !== undefined) {
          target = parseLsn(input.safekeepersLsn);
        } else {
          const sk = await safekeepersCommitLsn(localCtx(spec));
          if (sk.commitLsn === null) throw new Error(`no safekeeper reported a commit LSN for the timeline: ${sk.errors.join('; ') || 'timeline unknown'}`);
          target = sk.commitLsn;
        }
        journal.target = formatLsn(target);
        const deadline = Date.now() + CATCH_UP_TIMEOUT_MS;
        let lag: ReplayLag;
        for (;;) {
          lag = await measureReplayLag(localCtx(spec));
          if (lag.replay_lsn !== null && parseLsn(lag.replay_lsn) >= target) return;
          if (Date.now() > deadline) {
            throw nonRetryable(PROMOTE_FAILED, `replica didn't catch up: replayed up to ${lag.replay_lsn ?? 'nothing'}, the promote needs ${formatLsn(target)} (the safekeepers' commit LSN is ${lag.commit_lsn ?? 'unknown'})`);
          }
          beat({ replayLsn: lag.replay_lsn, target: journal.target });
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
      });
      // 2. Stop the standby (a fast shutdown writes a restartpoint; nothing received is lost).
      await run('stop_standby', async () => {
        await postgres.stopPostgres({ mode: 'fast' });
      });
      // 3. postgresql.conf and pg_hba.conf of a primary, and no standby.signal.
      await run('configure_primary', async () => {
        await steps.writePostgresConfig({ incarnation, spec });
        await steps.prepareStartupFiles({ incarnation, spec });
        await rm(path.join(pgdata, SAFEKEEPER_PASSFILE), { force: true });
      });
      // 4. Postgres as the primary (crash recovery to the end of the received WAL) and the WAL pusher.
      await run('start_primary', async () => {
        await steps.startPostgres({ incarnation, spec });
      });
      // 5. Roles and databases of the spec, as compute_ctl's reconfigure after pg_promote().
      await run('apply_spec', async () => {
        if (!spec.skip_pg_catalog_updates) await steps.applySpec({ spec });
      });
    } finally {
      clearInterval(timer);
    }
    return {
      lsn: journal.target ?? '0/0',
      lsn_wait_time_ms: journal.done.catch_up ?? 0,
      pg_promote_time_ms: (journal.done.stop_standby ?? 0) + (journal.done.configure_primary ?? 0) + (journal.done.start_primary ?? 0),
      reconfigure_time_ms: journal.done.apply_spec ?? 0,
    };
  }

  return { promoteReplica };
}
