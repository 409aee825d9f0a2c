import { rm } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { parseComputeSpec, type ComputeSpec } from '../../model/compute-spec';
import { cancellationSignal, currentActivity, heartbeat, heartbeatSpacingMs } from '../../common/activity-context';
import { connectAsAdmin, type AdminLogin } from './connect';
import { ensurePgHba, ensureStandbySignal, renderPostgresqlConf, writePostgresqlConf, type ConfSetting } from './config';
import { nonRetryable } from '../../common/failures';
import { PostgresFailure } from './errors';
import { readTextIfExists, writeFileAtomic } from './files';
import { computeLastActive, sampleActivity } from './monitor';
import { assertIncarnation, markBasebackupComplete, pgdataLooksIntact, prepareFreshPgdata, type PgdataCheck } from './pgdata';
import {
  findRunningPostmaster,
  reloadPostmaster,
  startPostmaster,
  stopPostmaster,
  waitForPostmasterExit,
  isPostmasterFor,
  type PostmasterExit,
  type StopMode,
} from './process';
import { resolveServerUser, type ServerUser } from './server-user';
import { confLoadTime, describeRejected, fileSettingErrors, pendingRestartSettings, settingsVerdict } from './settings-verdict';
import { applySpec } from './spec-apply';
import { installedExtensionLookup, requireAuditSupport, type ExtensionLookup } from './audit';

export { PostgresFailure } from './errors';
export type { PostmasterExit, StopMode } from './process';
export type { PgdataCheck } from './pgdata';

export interface ComputePostgresDeps {
  pgBinDir: string;
  /** The compute's data directory (a compute worker serves one compute). */
  pgdata: string;
  /** The postmaster's stdout/stderr; default `<pgdata>.log` beside PGDATA. */
  logPath?: string;
  /** When the worker runs as root, the unprivileged account Postgres runs as (default `postgres`). */
  serverUser?: string;
  /**
   * How the activities reach the compute's Postgres: the superuser compute_ctl calls cloud_admin.
   * Host and port come from postmaster.pid (its socket directory, else its listen address) unless
   * `host` is given. The password, if any, stays in the worker (never in workflow history).
   */
  admin: AdminLogin;
  /** compute_ctl's --privileged-role-name (default neon_superuser). */
  privilegedRoleName?: string;
  /** lc_* locale written to postgresql.conf (default C.UTF-8; null leaves them out). */
  locale?: string | null;
  startTimeoutMs?: number;
  stopTimeoutMs?: number;
  /** Activity monitor sampling interval (compute_ctl: 500 ms). */
  monitorIntervalMs?: number;
  /** Applying a spec also installs and updates the `neon` extension (the Neon storage backend: only Neon's Postgres has it). */
  neonExtension?: boolean;
  /** Whether an extension is installed (default: pg_config's directories of pgBinDir); audit_log_level needs pgaudit. */
  extensionLookup?: ExtensionLookup;
}

/** Optional fresh-start check: when given, the step fails with PgdataLost on a foreign PGDATA. */
interface Incarnated {
  incarnation?: string;
}

export interface WatchResult {
  exited: boolean;
  lastActive: string | null;
  exit?: PostmasterExit;
  /** Why the monitor could not sample (Postgres up but not answering); the watch goes on. */
  monitorError?: string;
}

/** The activity's input spec, checked: a workflow hands over a parsed spec, but history is JSON. */
function checkedSpec(spec: ComputeSpec): ComputeSpec {
  const parsed = parseComputeSpec(spec);
  if (!parsed.ok) throw nonRetryable(PostgresFailure.InvalidSpec, `invalid compute spec: ${parsed.errors.join('; ')}`);
  return parsed.spec;
}

/** postgresql.conf as it was before a reconfigure, until Postgres has accepted the new one. */
const PREVIOUS_CONF = 'postgresql.conf.before-reconfigure';

/**
 * The compute's Postgres: prepare PGDATA, write its configuration, start, apply the spec, watch,
 * stop. Plain functions the compute worker's activities (activities/compute/) call; they
 * heartbeat and honour cancellation when they run inside an activity, and work outside one too.
 */
export function createComputePostgres(deps: ComputePostgresDeps) {
  const pgdata = path.resolve(deps.pgdata);
  const logPath = deps.logPath;
  const privilegedRoleName = deps.privilegedRoleName ?? 'neon_superuser';
  const extensionLookup = deps.extensionLookup ?? installedExtensionLookup(deps.pgBinDir);
  let owner: ServerUser | undefined | null = null;
  const serverUser = (): ServerUser | undefined => {
    if (owner === null) owner = resolveServerUser(deps.serverUser);
    return owner;
  };

  async function checkIncarnation(input: Incarnated | undefined): Promise<void> {
    if (input?.incarnation !== undefined) await assertIncarnation(pgdata, input.incarnation);
  }

  /** A client on `database` of the running compute, as the admin user. */
  const connect = (database: string, applicationName = 'compute_ctl'): Promise<pg.Client> => connectAsAdmin(pgdata, deps.admin, database, applicationName);

  async function withClient<T>(database: string, applicationName: string, fn: (client: pg.Client) => Promise<T>): Promise<T> {
    const client = await connect(database, applicationName);
    try {
      return await fn(client);
    } finally {
      await client.end().catch(() => undefined);
    }
  }

  /**
   * Runs `fn` on a connection whose backend was started after the postmaster processed the reload
   * (pending_restart is inherited from the postmaster), waiting up to 10 s for that.
   */
  async function afterReload<T>(loadedBefore: string, fn: (client: pg.Client) => Promise<T>): Promise<T> {
    const deadline = Date.now() + 10_000;
    for (;;) {
      const result = await withClient('postgres', 'compute_ctl:reconfigure', async (client) => {
        if ((await confLoadTime(client)) === loadedBefore) return undefined;
        return { value: await fn(client) };
      });
      if (result) return result.value;
      if (Date.now() > deadline) throw new Error(`Postgres on ${pgdata} did not reload its configuration within 10 s`);
      await sleep(50);
    }
  }

  const activities = {
    /** Fresh PGDATA (compute_ctl: every start is a fresh start). Stops a postmaster still running on it first. */
    async preparePgdata(input: Incarnated = {}): Promise<{ pgdata: string; wiped: boolean; stoppedPid?: number }> {
      let stoppedPid: number | undefined;
      const running = await findRunningPostmaster(pgdata);
      if (running) {
        // A leftover from an earlier start (a crashed worker); wiping PGDATA under it would corrupt nothing
        // we keep, but it would hold the port and write into deleted files.
        await stopPostmaster({ pgdata, mode: 'immediate', timeoutMs: deps.stopTimeoutMs, onTick: () => heartbeat('stopping leftover postmaster') });
        stoppedPid = running.pid;
      }
      const result = await prepareFreshPgdata(pgdata, { owner: serverUser(), incarnation: input.incarnation });
      return { ...result, ...(stoppedPid !== undefined && { stoppedPid }) };
    },

    /** Whether PGDATA holds a complete base backup (and, with an incarnation, is this start's). */
    async checkPgdata(input: Incarnated = {}): Promise<PgdataCheck> {
      const check = await pgdataLooksIntact(pgdata);
      if (input.incarnation !== undefined) {
        try {
          await assertIncarnation(pgdata, input.incarnation);
        } catch (err) {
          return { ...check, intact: false, problems: [...check.problems, (err as Error).message] };
        }
      }
      return check;
    },

    /** Records a fully unpacked base backup (the unpack step's last act). */
    async markBasebackupComplete(input: Incarnated & { info: Record<string, string | number | boolean> }): Promise<void> {
      await checkIncarnation(input);
      await markBasebackupComplete(pgdata, input.info, { owner: serverUser() });
    },

    /** postgresql.conf from the spec, plus the storage backend's lines. */
    async writePostgresConfig(input: Incarnated & { spec: ComputeSpec; backendSettings?: ConfSetting[] }): Promise<{ path: string; ms: number }> {
      const started = Date.now();
      await checkIncarnation(input);
      const spec = checkedSpec(input.spec);
      await requireAuditSupport(spec, extensionLookup);
      const file = await writePostgresqlConf(pgdata, spec, { backendSettings: input.backendSettings, privilegedRoleName, locale: deps.locale, owner: serverUser() });
      return { path: file, ms: Date.now() - started };
    },

    /** After the base backup: pg_hba.conf lines (storage backend's first, then compute_ctl's md5) and standby.signal. */
    async prepareStartupFiles(input: Incarnated & { spec: ComputeSpec; extraHbaLines?: string[] }): Promise<{ hbaLinesAdded: number; standby: boolean }> {
      await checkIncarnation(input);
      const spec = checkedSpec(input.spec);
      const { added } = await ensurePgHba(pgdata, { extraLines: input.extraHbaLines, owner: serverUser() });
      const { standby } = await ensureStandbySignal(pgdata, spec, { owner: serverUser() });
      return { hbaLinesAdded: added.length, standby };
    },

    /** Starts Postgres detached and waits (heartbeating) until it is ready; idempotent. */
    async startPostgres(input: Incarnated & { storageAuthToken?: string } = {}): Promise<{ pid: number; alreadyRunning: boolean; port?: number; logPath: string; ms: number }> {
      await checkIncarnation(input);
      const started = await startPostmaster({
        pgBinDir: deps.pgBinDir,
        pgdata,
        logPath,
        owner: serverUser(),
        // compute_ctl hands the storage token to Postgres (the neon extension) this way.
        env: input.storageAuthToken !== undefined ? { NEON_AUTH_TOKEN: input.storageAuthToken } : {},
        timeoutMs: deps.startTimeoutMs,
        onTick: (ms) => heartbeat({ waitingForReadyMs: ms }),
        signal: cancellationSignal(),
      });
      return { pid: started.pid, alreadyRunning: started.alreadyRunning, port: started.port, logPath: started.logPath, ms: started.waitedMs };
    },

    /** Roles and databases (Primary only, unless skip_pg_catalog_updates). */
    async applySpec(input: { spec: ComputeSpec }): Promise<{ changes: string[]; ms: number; skipped?: string }> {
      const started = Date.now();
      const spec = checkedSpec(input.spec);
      if (spec.mode.kind !== 'Primary') return { changes: [], ms: 0, skipped: `a ${spec.mode.kind} compute is read-only` };
      if (spec.skip_pg_catalog_updates) return { changes: [], ms: 0, skipped: 'skip_pg_catalog_updates is set' };
      const changes = await applySpec(spec, {
        connect: (db) => connect(db, 'compute_ctl:apply_config'),
        adminUser: deps.admin.user,
        privilegedRoleName,
        neonExtension: deps.neonExtension ?? false,
        onPhase: (phase) => heartbeat({ phase }),
      });
      return { changes, ms: Date.now() - started };
    },

    /**
     * compute_ctl's reconfigure: rewrite postgresql.conf, reload, and (Primary, unless
     * skip_pg_catalog_updates) re-apply roles and databases with neon.max_cluster_size lifted by
     * the temporary override file. Postgres must accept every setting: one it rejects fails the
     * reconfigure (non-retryable, naming the setting) after the previous postgresql.conf is put
     * back and reloaded, so the previous configuration stays in force. Settings that take effect
     * only after a restart are returned in `pendingRestart`.
     */
    async reconfigurePostgres(input: { spec: ComputeSpec; backendSettings?: ConfSetting[] }): Promise<{ changes: string[]; reloaded: boolean; pendingRestart: string[] }> {
      const spec = checkedSpec(input.spec);
      await requireAuditSupport(spec, extensionLookup);
      const confFile = path.join(pgdata, 'postgresql.conf');
      const previousFile = path.join(pgdata, PREVIOUS_CONF);
      const owner = serverUser();
      // The configuration in force, kept until Postgres accepted the new one. A retried attempt
      // finds the new file already written and keeps the copy the first attempt made.
      const current = await readTextIfExists(confFile);
      const next = renderPostgresqlConf(spec, { backendSettings: input.backendSettings, privilegedRoleName, locale: deps.locale });
      if (current !== undefined && current !== next) await writeFileAtomic(previousFile, current, { mode: 0o600, owner });
      await writeFileAtomic(confFile, next, { mode: 0o600, owner });
      const loadedBefore = (await findRunningPostmaster(pgdata)) ? await withClient('postgres', 'compute_ctl:reconfigure', confLoadTime) : undefined;
      const { reloaded } = await reloadPostmaster(pgdata);
      if (!reloaded || loadedBefore === undefined) throw nonRetryable(PostgresFailure.NotRunning, `Postgres is not running on ${pgdata}; cannot reconfigure it`);
      const errors = await withClient('postgres', 'compute_ctl:reconfigure', fileSettingErrors);
      // Only a server-start parameter can be "valid, waiting for a restart"; that is known once the
      // postmaster processed the reload (a file with any other error may not be loaded at all).
      const mayWait = errors.length > 0 && errors.every((e) => e.context === 'postmaster');
      const verdict = settingsVerdict(errors, new Set(mayWait ? await afterReload(loadedBefore, pendingRestartSettings) : []));
      if (verdict.rejected.length > 0) {
        const previous = await readTextIfExists(previousFile);
        if (previous !== undefined) {
          await writeFileAtomic(confFile, previous, { mode: 0o600, owner });
          await reloadPostmaster(pgdata);
          await rm(previousFile, { force: true });
        }
        throw nonRetryable(
          PostgresFailure.SettingRejected,
          `Postgres rejected ${describeRejected(verdict.rejected)}; ${previous !== undefined ? 'the previous configuration stays in force' : 'no previous postgresql.conf to go back to'}`,
        );
      }
      await rm(previousFile, { force: true });
      const { pendingRestart } = verdict;
      if (spec.skip_pg_catalog_updates) return { changes: [], reloaded, pendingRestart };
      const override = path.join(pgdata, 'compute_ctl_temp_override.conf');
      await writeFileAtomic(override, 'neon.max_cluster_size=-1', { mode: 0o600, owner: serverUser() });
      try {
        await reloadPostmaster(pgdata);
        const changes =
          spec.mode.kind === 'Primary'
            ? await applySpec(spec, {
                connect: (db) => connect(db, 'compute_ctl:reconfigure'),
                adminUser: deps.admin.user,
                privilegedRoleName,
                neonExtension: deps.neonExtension ?? false,
                onPhase: (phase) => heartbeat({ phase }),
              })
            : [];
        return { changes, reloaded, pendingRestart };
      } finally {
        await writeFileAtomic(override, '', { mode: 0o600, owner: serverUser() });
        await reloadPostmaster(pgdata);
      }
    },

    /** SIGHUP to the postmaster (pg_ctl reload). */
    async reloadPostgres(): Promise<{ reloaded: boolean }> {
      return { reloaded: (await reloadPostmaster(pgdata)).reloaded };
    },

    async postmasterStatus(): Promise<{ running: boolean; pid?: number; status?: string; port?: number }> {
      const running = await findRunningPostmaster(pgdata);
      return running ? { running: true, pid: running.pid, status: running.status, port: running.port } : { running: false };
    },

    /** Stops Postgres: fast = SIGINT, immediate = SIGQUIT, smart = SIGTERM; waits (heartbeating) for the exit. */
    async stopPostgres(input: { mode: StopMode }): Promise<{ wasRunning: boolean; pid?: number; exit?: PostmasterExit }> {
      if (!['fast', 'immediate', 'smart'].includes(input.mode)) {
        throw nonRetryable(PostgresFailure.InvalidSpec, `unknown stop mode ${JSON.stringify(input.mode)} (fast, immediate or smart)`);
      }
      return stopPostmaster({
        pgdata,
        mode: input.mode,
        timeoutMs: deps.stopTimeoutMs,
        onTick: (ms) => heartbeat({ stoppingMs: ms }),
        signal: cancellationSignal(),
      });
    },

    /**
     * One round of compute_ctl's wait-on-postmaster plus activity monitor: samples last_active every
     * `monitorIntervalMs`, heartbeats it every half heartbeat timeout (a retried watch resumes from
     * the heartbeat; each beat is a billed action, so not every sample), and returns after
     * `reportAfterSeconds`, or at once when the postmaster exits (with how it exited).
     */
    async watchPostgres(input: { reportAfterSeconds: number; lastActive: string | null }): Promise<WatchResult> {
      const resumed = (currentActivity()?.info.heartbeatDetails as { lastActive?: string | null } | undefined)?.lastActive ?? null;
      let lastActive = input.lastActive;
      if (resumed && (!lastActive || Date.parse(resumed) > Date.parse(lastActive))) lastActive = resumed;
      const signal = cancellationSignal();
      const running = await findRunningPostmaster(pgdata);
      if (!running) {
        return { exited: true, lastActive, exit: { pid: 0, exitCode: null, signal: null, message: `postmaster is not running on ${pgdata}`, logTail: '' } };
      }
      const deadline = Date.now() + input.reportAfterSeconds * 1000;
      const interval = deps.monitorIntervalMs ?? 500;
      const heartbeatEveryMs = heartbeatSpacingMs(interval);
      // The first beat half a timeout in: a round's start needs none, and each one is billed.
      let lastBeat = Date.now();
      let client: pg.Client | undefined;
      let monitorError: string | undefined;
      try {
        for (;;) {
          signal?.throwIfAborted();
          if (!(await isPostmasterFor(running.pid, pgdata))) {
            const exit = await waitForPostmasterExit({ pid: running.pid, pgdata, logPath });
            return { exited: true, lastActive, exit };
          }
          try {
            client ??= await connect('postgres', 'compute_ctl:compute_monitor');
            lastActive = computeLastActive(lastActive, await sampleActivity(client, deps.admin.user), new Date());
            monitorError = undefined;
          } catch (err) {
            // As compute_ctl: a failed check is downtime to report, not a reason to stop watching.
            monitorError = (err as Error).message;
            await client?.end().catch(() => undefined);
            client = undefined;
          }
          if (Date.now() - lastBeat >= heartbeatEveryMs) {
            heartbeat({ lastActive });
            lastBeat = Date.now();
          }
          if (Date.now() >= deadline) return { exited: false, lastActive, ...(monitorError && { monitorError }) };
          await sleep(interval, undefined, { signal }).catch(() => undefined);
        }
      } finally {
        await client?.end().catch(() => undefined);
      }
    },
  };
  return activities;
}

export type ComputePostgres = ReturnType<typeof createComputePostgres>;
