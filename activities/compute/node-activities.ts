import path from 'node:path';
import { ApplicationFailure } from '@temporalio/activity';
import type { TerminateMode } from '../../model/compute-status';
import type { S3Config } from '../../common/config';
import { type Failpoint } from '../failpoints';
import { createComputePostgres, PostgresFailure } from '../../drivers/postgres';
import type { PgbouncerTarget } from '../../drivers/postgres/pgbouncer';
import type { ComputeStorageBackend } from '../../drivers/storage-backend';
import { createComputeCacheActivities } from './cache-node-activities';
import { createPromoteActivities } from './promote';
import { createStartCompute } from './startup';
import { keepLease } from '../../drivers/pageserver/lease-keeper';
import { holdStepLease } from '../../common/step-leases';
import { log } from '../../common/logger';
import { measureReplayLag } from '../../drivers/storage-backend/stock/replica';
import { backendSettings, createStartupSteps } from '../../drivers/compute-startup/steps';
import { type ComputeNodeActivities } from './types';

export interface ComputeNodeDeps {
  pgBinDir: string;
  /** Where cache state is kept (S3 bucket and key prefix). */
  cacheStorage: { s3: S3Config; prefix: string };
  pgdata: string;
  backend: ComputeStorageBackend;
  /** Overrides the backend's sync command (Neon: `postgres --sync-safekeepers`). */
  syncSafekeepersCommand?: string[];
  /** compute_ctl's superuser; the base backup's pg_hba lets it in over the local socket. */
  adminUser?: string;
  /** pgbouncer's ini and admin console (default: compute_ctl's, see drivers/postgres/pgbouncer.ts). */
  pgbouncer?: PgbouncerTarget;
  failpoint: Failpoint;
}

/**
 * The activities of the compute worker inside a compute VM: compute_ctl's startup steps, watch,
 * reconfigure and stop, over one PGDATA. Each checks that PGDATA still belongs to the start that
 * prepared it, and each is safe to run again after a crash part-way.
 */
export function createComputeNodeActivities(deps: ComputeNodeDeps): ComputeNodeActivities {
  const { failpoint, backend } = deps;
  const postgres = createComputePostgres({
    pgBinDir: deps.pgBinDir,
    pgdata: deps.pgdata,
    admin: { user: deps.adminUser ?? 'cloud_admin' },
    neonExtension: backend.name === 'neon',
  });

  const cacheBackend = backend.name === 'neon' ? 'neon' : 'stock';
  const cache = createComputeCacheActivities({
    pgdata: deps.pgdata,
    backend: cacheBackend,
    s3: deps.cacheStorage.s3,
    prefix: deps.cacheStorage.prefix,
    adminUser: deps.adminUser,
    failpoint,
  });

  const steps = createStartupSteps({
    pgBinDir: deps.pgBinDir,
    pgdata: deps.pgdata,
    backend,
    cacheBackend,
    postgres,
    syncSafekeepersCommand: deps.syncSafekeepersCommand,
    adminUser: deps.adminUser,
    pgbouncer: deps.pgbouncer,
  });

  return {
    ...cache,
    ...createPromoteActivities({ pgdata: deps.pgdata, steps, postgres, failpoint, adminUser: deps.adminUser, backend: backend.name }),

    startCompute: createStartCompute({ pgdata: deps.pgdata, steps, failpoint }),

    async preparePgdata({ incarnation }) {
      await failpoint('preparePgdata');
      await steps.preparePgdata({ incarnation });
    },

    async writePostgresConfig({ incarnation, spec }) {
      await failpoint('writePostgresConfig');
      return steps.writePostgresConfig({ incarnation, spec });
    },

    async syncSafekeepers({ incarnation, storageAuthToken }) {
      await failpoint('syncSafekeepers');
      return steps.syncSafekeepers({ incarnation, storageAuthToken });
    },

    async fetchBasebackup({ incarnation, spec, lsn }) {
      await failpoint('fetchBasebackup');
      return steps.fetchBasebackup({ incarnation, spec, lsn });
    },

    async prepareStartupFiles({ incarnation, spec }) {
      await failpoint('prepareStartupFiles');
      await steps.prepareStartupFiles({ incarnation, spec });
    },

    async startPostgres({ incarnation, spec }) {
      await failpoint('startPostgres');
      return steps.startPostgres({ incarnation, spec });
    },

    async applySpec({ spec }) {
      await failpoint('applySpec');
      return steps.applySpec({ spec });
    },

    async watchPostgres({ reportAfterSeconds, lastActive, replica, lease }) {
      // A Static compute holds its LSN lease while this round watches (each round renews at once).
      const keeper = lease ? keepLease(lease) : undefined;
      // Postgres outlives a restart of this worker: the next one ends this round at once (workers/compute.ts).
      const releaseRound = holdStepLease(path.dirname(deps.pgdata), deps.pgdata);
      let report: Awaited<ReturnType<typeof postgres.watchPostgres>>;
      try {
        report = await postgres.watchPostgres({ reportAfterSeconds, lastActive });
      } finally {
        releaseRound();
        const held = await keeper?.stop();
        if (held?.error) log().warn({ lsn: lease?.lsn, error: held.error }, 'the LSN lease is not held');
      }
      if (!report.exited) {
        // A lag that cannot be measured right now is reported as unknown, never as a reason to stop watching.
        const replication = replica
          ? await measureReplayLag({ pgdata: deps.pgdata, superuser: deps.adminUser, ...replica, ...(replica.token !== undefined ? { authToken: replica.token } : {}) }).catch(() => undefined)
          : undefined;
        return { exited: false, lastActive: report.lastActive, ...(replication ? { replication } : {}) };
      }
      const exit = report.exit;
      const how = exit ? (exit.exitCode !== null ? `exit code ${exit.exitCode}` : exit.signal ? `signal ${exit.signal}` : exit.message) : 'unknown';
      const tail = exit?.logTail ? `; last log lines: ${exit.logTail.split('\n').slice(-3).join(' | ')}` : '';
      return { exited: true, lastActive: report.lastActive, exitReason: `postmaster exited unexpectedly (${how})${tail}` };
    },

    async reconfigurePostgres({ spec }) {
      await failpoint('reconfigurePostgres');
      const { changes, pendingRestart } = await postgres.reconfigurePostgres({ spec, backendSettings: backendSettings({ backend, cacheBackend }, spec) });
      await steps.tunePgbouncer(spec);
      return { changes, pendingRestart };
    },

    async stopPostgres({ mode }: { mode: TerminateMode }) {
      await failpoint('stopPostgres');
      try {
        await postgres.stopPostgres({ mode });
      } catch (err) {
        if (err instanceof ApplicationFailure && err.type === PostgresFailure.NotRunning) return;
        throw err;
      }
    },
  };
}
