import { readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { ApplicationFailure, Context } from '@temporalio/activity';
import { pgSpawnIdentity, postgresIdentity } from '../../common/pg-identity';
import { shard0PageserverConnstring, type ComputeSpec } from '../../model/compute-spec';
import type { TerminateMode } from '../../model/compute-status';
import type { S3Config } from '../../common/config';
import { stockCacheConf } from '../cache';
import { type Failpoint } from '../failpoints';
import { fetchBasebackup, StorageError } from '../pageserver';
import { createPostgresActivities, PostgresFailure } from '../postgres';
import { INCARNATION_FILE } from '../postgres/pgdata';
import { readPostmasterPid } from '../postgres/process';
import { runSyncSafekeepers, SyncSafekeepersError } from '../safekeepers';
import type { ComputeStorageBackend } from '../storage-backend';
import { createComputeCacheActivities } from './cache-node-activities';
import { PGDATA_LOST, type ComputeNodeActivities } from './types';

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
  failpoint: Failpoint;
}

/** Files the startup writes before the base backup is unpacked, kept when a partial unpack is cleared. */
const WRITTEN_BEFORE_BASEBACKUP = new Set(['postgresql.conf', 'compute_ctl_temp_override.conf', INCARNATION_FILE]);

function pgdataLost(message: string): ApplicationFailure {
  return ApplicationFailure.nonRetryable(message, PGDATA_LOST);
}

/**
 * The activities of the compute worker inside a compute VM: compute_ctl's startup steps, watch,
 * reconfigure and stop, over one PGDATA. Each checks that PGDATA still belongs to the start that
 * prepared it, and each is safe to run again after a crash part-way.
 */
export function createComputeNodeActivities(deps: ComputeNodeDeps): ComputeNodeActivities {
  const postgres = createPostgresActivities({
    pgBinDir: deps.pgBinDir,
    pgdata: deps.pgdata,
    admin: { user: deps.adminUser ?? 'cloud_admin' },
  });
  const { failpoint, backend } = deps;

  const cacheBackend = backend.name === 'neon' ? 'neon' : 'stock';
  const cache = createComputeCacheActivities({
    pgdata: deps.pgdata,
    backend: cacheBackend,
    s3: deps.cacheStorage.s3,
    prefix: deps.cacheStorage.prefix,
    adminUser: deps.adminUser,
    failpoint,
  });

  // What the storage backend needs, plus what the stock cache backend needs (Neon's LFC needs nothing).
  const backendConf = (spec: ComputeSpec) =>
    [
      backend.postgresqlConf({
        tenantId: spec.tenant_id,
        timelineId: spec.timeline_id,
        safekeepers: spec.safekeeper_connstrings,
        mode: spec.mode.kind,
      }),
      cacheBackend === 'stock' ? stockCacheConf() : '',
    ].join('\n');

  /** Removes what a crashed unpack left, keeping the files written before it. */
  async function clearPartialUnpack(): Promise<void> {
    for (const entry of await readdir(deps.pgdata)) {
      if (!WRITTEN_BEFORE_BASEBACKUP.has(entry)) await rm(path.join(deps.pgdata, entry), { recursive: true, force: true });
    }
  }

  return {
    ...cache,

    async preparePgdata({ incarnation }) {
      await failpoint('preparePgdata');
      await postgres.preparePgdata({ incarnation });
    },

    async writePostgresConfig({ incarnation, spec }) {
      await failpoint('writePostgresConfig');
      const { ms } = await postgres.writePostgresConfig({ incarnation, spec, extraConf: backendConf(spec) });
      return { ms };
    },

    async syncSafekeepers({ incarnation, storageAuthToken }) {
      await failpoint('syncSafekeepers');
      const check = await postgres.checkPgdata({ incarnation });
      if (check.problems.some((p) => p.includes('incarnation') || p.includes('does not exist'))) {
        throw pgdataLost(`cannot sync safekeepers: ${check.problems.join('; ')}`);
      }
      try {
        const ctx = Context.current();
        const beat = setInterval(() => ctx.heartbeat(), 1000);
        try {
          const result = await runSyncSafekeepers({
            command: deps.syncSafekeepersCommand ?? backend.syncSafekeepersCommand(deps.pgBinDir),
            pgdata: deps.pgdata,
            timeoutMs: 120_000,
            token: storageAuthToken,
            spawnAs: pgSpawnIdentity(),
            signal: ctx.cancellationSignal,
          });
          return { lsn: result.lsn, ms: result.elapsedMs };
        } finally {
          clearInterval(beat);
        }
      } catch (err) {
        if (err instanceof SyncSafekeepersError) throw ApplicationFailure.retryable(err.message, 'SyncSafekeepersFailed');
        throw err;
      }
    },

    async fetchBasebackup({ incarnation, spec, lsn }) {
      await failpoint('fetchBasebackup');
      const check = await postgres.checkPgdata({ incarnation });
      if (check.problems.some((p) => p.includes('incarnation') || p.includes('does not exist'))) {
        throw pgdataLost(`cannot unpack the base backup: ${check.problems.join('; ')}`);
      }
      // Finished before a crash, but the result never reached the workflow: report it again.
      if (check.intact && check.basebackup) {
        const b = check.basebackup;
        return { bytes: Number(b.basebackup_bytes ?? 0), ms: Number(b.basebackup_ms ?? 0), connectMicros: Number(b.pageserver_connect_micros ?? 0) };
      }
      await clearPartialUnpack();
      const ctx = Context.current();
      const id = postgresIdentity();
      try {
        const result = await fetchBasebackup({
          connstring: shard0PageserverConnstring(spec),
          tenantId: spec.tenant_id,
          timelineId: spec.timeline_id,
          lsn: lsn ?? undefined,
          replica: spec.mode.kind !== 'Primary',
          token: spec.storage_auth_token,
          targetDir: deps.pgdata,
          owner: id ? { uid: id.uid, gid: id.gid } : undefined,
          signal: ctx.cancellationSignal,
          onProgress: (p) => ctx.heartbeat(p),
        });
        const m = result.metrics;
        await postgres.markBasebackupComplete({
          incarnation,
          info: { ...m, lsn: lsn ?? 'latest', files: result.files },
        });
        return { bytes: m.basebackup_bytes, ms: m.basebackup_ms, connectMicros: m.pageserver_connect_micros };
      } catch (err) {
        if (err instanceof StorageError) {
          // Unknown tenant/timeline or a refused request will not get better by retrying.
          throw err.retryable ? ApplicationFailure.retryable(err.message, 'BasebackupFailed') : ApplicationFailure.nonRetryable(err.message, 'BasebackupFailed');
        }
        throw err;
      }
    },

    async prepareStartupFiles({ incarnation, spec }) {
      await failpoint('prepareStartupFiles');
      await postgres.prepareStartupFiles({ incarnation, spec, extraHbaLines: backend.hbaLines() });
    },

    async startPostgres({ incarnation, spec }) {
      await failpoint('startPostgres');
      // Never start Postgres on a directory that is not a complete base backup of this start.
      const check = await postgres.checkPgdata({ incarnation });
      if (!check.intact) throw pgdataLost(`refusing to start Postgres: ${check.problems.join('; ')}`);
      // Neon's Postgres (walproposer) needs the storage token; stock Postgres does not, so it never sees it.
      const started = await postgres.startPostgres({ incarnation, storageAuthToken: backend.name === 'neon' ? spec.storage_auth_token : undefined });
      const pidFile = await readPostmasterPid(deps.pgdata);
      await backend.afterPostgresReady({
        pgdata: deps.pgdata,
        socketDir: pidFile?.socketDir,
        port: started.port ?? pidFile?.port ?? 5432,
        tenantId: spec.tenant_id,
        timelineId: spec.timeline_id,
        safekeepers: spec.safekeeper_connstrings,
        authToken: spec.storage_auth_token,
        mode: spec.mode.kind,
        superuser: deps.adminUser ?? 'cloud_admin',
      });
      return { pid: started.pid, ms: started.ms };
    },

    async applySpec({ spec }) {
      await failpoint('applySpec');
      const { changes, ms } = await postgres.applySpec({ spec });
      return { changes, ms };
    },

    async watchPostgres({ reportAfterSeconds, lastActive }) {
      const report = await postgres.watchPostgres({ reportAfterSeconds, lastActive });
      if (!report.exited) return { exited: false, lastActive: report.lastActive };
      const exit = report.exit;
      const how = exit ? (exit.exitCode !== null ? `exit code ${exit.exitCode}` : exit.signal ? `signal ${exit.signal}` : exit.message) : 'unknown';
      const tail = exit?.logTail ? `; last log lines: ${exit.logTail.split('\n').slice(-3).join(' | ')}` : '';
      return { exited: true, lastActive: report.lastActive, exitReason: `postmaster exited unexpectedly (${how})${tail}` };
    },

    async reconfigurePostgres({ spec }) {
      await failpoint('reconfigurePostgres');
      const { changes } = await postgres.reconfigurePostgres({ spec, extraConf: backendConf(spec) });
      return { changes };
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
