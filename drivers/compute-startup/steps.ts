import { readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { ApplicationFailure } from '@temporalio/activity';
import { log } from '../../common/logger';
import { pgSpawnIdentity, postgresIdentity } from '../../common/pg-identity';
import { shard0PageserverConnstring, type ComputeSpec } from '../../model/compute-spec';
import { PGDATA_LOST } from '../../model/compute-status';
import { stockCacheSettings } from '../cache/stock-backend';
import { fetchBasebackup, StorageError } from '../pageserver';
import { leaseEverywhere } from '../pageserver/lease-keeper';
import { staticLeaseOf } from '../../model/static-lease';
import { type ComputePostgres } from '../postgres';
import { cancellationSignal, every, heartbeat } from '../../common/activity-context';
import type { ConfSetting } from '../postgres/config';
import { INCARNATION_FILE } from '../postgres/pgdata';
import { defaultPgbouncerTarget, tunePgbouncer, type PgbouncerTarget } from '../postgres/pgbouncer';
import { readPostmasterPid } from '../postgres/process';
import { subscriptionsBeforeStartSettings } from '../postgres/subscriptions';
import { checkSafekeepersSynced, runSyncSafekeepers, SyncSafekeepersError } from '../safekeepers';
import type { ComputeStorageBackend } from '../storage-backend';
import { nonRetryable, retryable } from '../../common/failures';

/** Journal of the one-activity startup (startup.ts); inside PGDATA, so a wipe removes it too. */
export const STARTUP_JOURNAL_FILE = '.durable-compute-startup.json';

/** Files the startup writes before the base backup is unpacked, kept when a partial unpack is cleared. */
const WRITTEN_BEFORE_BASEBACKUP = new Set(['postgresql.conf', 'compute_ctl_temp_override.conf', INCARNATION_FILE, STARTUP_JOURNAL_FILE]);

export function pgdataLost(message: string): ApplicationFailure {
  return nonRetryable(PGDATA_LOST, message);
}

export interface StartupStepDeps {
  pgBinDir: string;
  pgdata: string;
  backend: ComputeStorageBackend;
  cacheBackend: 'stock' | 'neon';
  postgres: ComputePostgres;
  syncSafekeepersCommand?: string[];
  adminUser?: string;
  /** pgbouncer's ini and admin console, for the spec's pgbouncer_settings (default: compute_ctl's). */
  pgbouncer?: PgbouncerTarget;
}

/** What the storage backend needs in postgresql.conf, plus what the stock cache backend needs (Neon's LFC needs nothing). */
export function backendSettings(deps: Pick<StartupStepDeps, 'backend' | 'cacheBackend'>, spec: ComputeSpec): ConfSetting[] {
  return [
    ...deps.backend.postgresqlSettings({ tenantId: spec.tenant_id, timelineId: spec.timeline_id, safekeepers: spec.safekeeper_connstrings, mode: spec.mode.kind }),
    ...(deps.cacheBackend === 'stock' ? stockCacheSettings() : []),
    // Neon's Postgres reads neon.disable_logical_replication_subscribers (config.ts); stock needs this.
    ...(deps.backend.name === 'stock' ? subscriptionsBeforeStartSettings(spec) : []),
  ];
}

/** What a base backup step reports, under compute_ctl's metric names. */
export interface BasebackupReport {
  bytes: number;
  ms: number;
  connectMicros: number;
}

/**
 * compute_ctl's startup steps over one PGDATA, without any Temporal policy: the per-step
 * activities (node-activities.ts) and the one-activity startup (startup.ts) are both built from
 * these, and the cold-start benchmark calls them directly as its floor. Each step checks that
 * PGDATA still belongs to the fresh start (`incarnation`) that prepared it, and each is safe to
 * run again after a crash part-way.
 */
export function createStartupSteps(deps: StartupStepDeps) {
  const { postgres, backend } = deps;

  /** Removes what a crashed unpack left, keeping the files written before it. */
  async function clearPartialUnpack(): Promise<void> {
    for (const entry of await readdir(deps.pgdata)) {
      if (!WRITTEN_BEFORE_BASEBACKUP.has(entry)) await rm(path.join(deps.pgdata, entry), { recursive: true, force: true });
    }
  }

  async function requireOwnPgdata(incarnation: string, what: string): Promise<void> {
    const check = await postgres.checkPgdata({ incarnation });
    if (check.problems.some((p) => p.includes('incarnation') || p.includes('does not exist'))) {
      throw pgdataLost(`${what}: ${check.problems.join('; ')}`);
    }
  }

  /**
   * The first lease of a Static compute. As in compute_ctl a refused lease does not fail the start
   * by itself: it is logged, and the base backup then says whether that LSN is still there.
   */
  async function leaseStaticLsn(spec: ComputeSpec): Promise<void> {
    const lease = staticLeaseOf(spec);
    if (!lease) return;
    try {
      const until = await leaseEverywhere(lease, cancellationSignal());
      log().info({ lsn: lease.lsn, validUntil: until.toISOString() }, 'LSN lease taken');
    } catch (err) {
      if (err instanceof StorageError && err.kind === 'lease-refused') log().warn({ err }, 'LSN lease refused');
      else throw err;
    }
  }

  /**
   * compute_ctl's tune_pgbouncer, at start and on every configure. As there, a pgbouncer that
   * cannot be reached is reported in the log and does not fail the compute: Postgres serves
   * without it. The settings' names and values were checked with the spec.
   */
  async function tunePgbouncerSettings(spec: ComputeSpec): Promise<void> {
    if (!spec.pgbouncer_settings || Object.keys(spec.pgbouncer_settings).length === 0) return;
    try {
      const { changed } = await tunePgbouncer(deps.pgbouncer ?? defaultPgbouncerTarget(), spec.pgbouncer_settings);
      log().info({ changed }, 'pgbouncer settings applied and reloaded');
    } catch (err) {
      log().warn({ err }, 'pgbouncer settings not applied');
    }
  }

  return {
    tunePgbouncer: tunePgbouncerSettings,

    async preparePgdata({ incarnation }: { incarnation: string }): Promise<void> {
      await postgres.preparePgdata({ incarnation });
    },

    async writePostgresConfig({ incarnation, spec }: { incarnation: string; spec: ComputeSpec }): Promise<{ ms: number }> {
      const { ms } = await postgres.writePostgresConfig({ incarnation, spec, backendSettings: backendSettings(deps, spec) });
      return { ms };
    },

    /** compute_ctl's fast "already synced?" check: TIMELINE_STATUS from a quorum. */
    async checkSafekeepersSynced(spec: ComputeSpec): Promise<{ synced: boolean; lsn: string | null; reason?: string; ms: number }> {
      const result = await checkSafekeepersSynced({
        safekeepers: spec.safekeeper_connstrings,
        tenantId: spec.tenant_id,
        timelineId: spec.timeline_id,
        ...(spec.storage_auth_token !== undefined ? { token: spec.storage_auth_token } : {}),
      });
      return result.synced ? { synced: true, lsn: result.lsn, ms: result.elapsedMs } : { synced: false, lsn: null, reason: result.reason, ms: result.elapsedMs };
    },

    async syncSafekeepers({ incarnation, storageAuthToken }: { incarnation: string; storageAuthToken?: string }): Promise<{ lsn: string; ms: number }> {
      await requireOwnPgdata(incarnation, 'cannot sync safekeepers');
      const stopBeating = every(1000, () => heartbeat({ step: 'sync_safekeepers' }));
      try {
        const result = await runSyncSafekeepers({
          command: deps.syncSafekeepersCommand ?? backend.syncSafekeepersCommand(deps.pgBinDir),
          pgdata: deps.pgdata,
          timeoutMs: 120_000,
          token: storageAuthToken,
          spawnAs: pgSpawnIdentity(),
          signal: cancellationSignal(),
        });
        return { lsn: result.lsn, ms: result.elapsedMs };
      } catch (err) {
        if (err instanceof SyncSafekeepersError) {
          if (err.exitCode !== null && backend.permanentSyncExitCodes.includes(err.exitCode)) throw nonRetryable('SyncSafekeepersRefused', err.message);
          throw retryable('SyncSafekeepersFailed', err.message);
        }
        throw err;
      } finally {
        stopBeating();
      }
    },

    async fetchBasebackup(
      { incarnation, spec, lsn }: { incarnation: string; spec: ComputeSpec; lsn: string | null },
      onProgress: (progress: { receivedBytes: number }) => void = (p) => heartbeat(p),
    ): Promise<BasebackupReport> {
      await requireOwnPgdata(incarnation, 'cannot unpack the base backup');
      // Finished before a crash, but the result never reached the workflow: report it again.
      const check = await postgres.checkPgdata({ incarnation });
      if (check.intact && check.basebackup) {
        const b = check.basebackup;
        return { bytes: Number(b.basebackup_bytes ?? 0), ms: Number(b.basebackup_ms ?? 0), connectMicros: Number(b.pageserver_connect_micros ?? 0) };
      }
      await clearPartialUnpack();
      const id = postgresIdentity();
      try {
        // A Static compute leases its LSN before reading it, so GC cannot take it while it starts; the watch renews it.
        if (spec.mode.kind === 'Static') await leaseStaticLsn(spec);
        const result = await fetchBasebackup({
          connstring: shard0PageserverConnstring(spec),
          tenantId: spec.tenant_id,
          timelineId: spec.timeline_id,
          lsn: lsn ?? undefined,
          replica: spec.mode.kind !== 'Primary',
          token: spec.storage_auth_token,
          targetDir: deps.pgdata,
          owner: id ? { uid: id.uid, gid: id.gid } : undefined,
          signal: cancellationSignal(),
          onProgress,
        });
        const m = result.metrics;
        await postgres.markBasebackupComplete({ incarnation, info: { ...m, lsn: lsn ?? 'latest', files: result.files } });
        return { bytes: m.basebackup_bytes, ms: m.basebackup_ms, connectMicros: m.pageserver_connect_micros };
      } catch (err) {
        if (err instanceof StorageError) {
          // Unknown tenant/timeline or a refused request will not get better by retrying.
          throw err.retryable ? retryable('BasebackupFailed', err.message) : nonRetryable('BasebackupFailed', err.message);
        }
        throw err;
      }
    },

    /** Whether PGDATA holds this start's base backup, completely unpacked. */
    async hasCompleteBasebackup(incarnation: string): Promise<boolean> {
      const check = await postgres.checkPgdata({ incarnation });
      return check.intact;
    },

    async prepareStartupFiles({ incarnation, spec }: { incarnation: string; spec: ComputeSpec }): Promise<void> {
      await postgres.prepareStartupFiles({ incarnation, spec, extraHbaLines: backend.hbaLines() });
    },

    /** Postgres started and ready, and the storage backend's companion (the WAL pusher) streaming. */
    async startPostgres({ incarnation, spec }: { incarnation: string; spec: ComputeSpec }): Promise<{ pid: number; ms: number }> {
      const started = Date.now();
      // Never start Postgres on a directory that is not a complete base backup of this start.
      const check = await postgres.checkPgdata({ incarnation });
      if (!check.intact) throw pgdataLost(`refusing to start Postgres: ${check.problems.join('; ')}`);
      const companion = {
        pgdata: deps.pgdata,
        tenantId: spec.tenant_id,
        timelineId: spec.timeline_id,
        safekeepers: spec.safekeeper_connstrings,
        authToken: spec.storage_auth_token,
        mode: spec.mode.kind,
        superuser: deps.adminUser ?? 'cloud_admin',
      };
      backend.beforePostgresStart?.(companion);
      // Neon's Postgres (walproposer) needs the storage token; stock Postgres does not, so it never sees it.
      const postmaster = await postgres.startPostgres({ incarnation, storageAuthToken: backend.name === 'neon' ? spec.storage_auth_token : undefined });
      const pidFile = await readPostmasterPid(deps.pgdata);
      await backend.afterPostgresReady({ ...companion, socketDir: pidFile?.socketDir, port: postmaster.port ?? pidFile?.port ?? 5432 });
      await tunePgbouncerSettings(spec);
      // The whole step, the storage backend's readiness included: start_postgres_ms says what it cost.
      return { pid: postmaster.pid, ms: Date.now() - started };
    },

    async applySpec({ spec }: { spec: ComputeSpec }): Promise<{ changes: string[]; ms: number }> {
      const started = Date.now();
      const { changes } = await postgres.applySpec({ spec });
      return { changes, ms: Date.now() - started };
    },
  };
}

export type StartupSteps = ReturnType<typeof createStartupSteps>;
