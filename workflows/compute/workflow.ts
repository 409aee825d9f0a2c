import {
  allHandlersFinished,
  ApplicationFailure,
  ActivityFailure,
  CancellationScope,
  condition,
  isCancellation,
  patched,
  sleep,
  TimeoutFailure,
  continueAsNew,
  log,
  setCurrentDetails,
  setHandler,
  upsertSearchAttributes,
  uuid4,
  workflowInfo,
} from '@temporalio/workflow';
import { CACHE_METRICS, mayOffloadPeriodically, type OffloadState, type PrewarmState } from '../../model/cache-state';
import { parseComputeConfig, type ComputeConfig } from '../../model/compute-spec';
import {
  PGDATA_LOST,
  SETTING_REJECTED,
  computeTaskQueue,
  emptyStartupMetrics,
  type ComputeStartupMetrics,
  type ComputeStatus,
  type ComputeStatusResponse,
  type TerminateMode,
} from '../../model/compute-status';
import { computeCacheActivities, computeNodeActivities, computeWatchActivity, controlPlaneActivities } from './activity-proxies';
import { apiKeysQuery, awaitStartupUpdate, cancelPrewarmUpdate, configureUpdate, lfcStatusQuery, offloadUpdate, prewarmUpdate, statusQuery, terminateUpdate, vmLostSignal } from './messages';
import { installPromote } from './promote';
import { COMPUTE_ID, COMPUTE_STATUS, TENANT_ID, TIMELINE_ID } from './search-attributes';

export interface ComputeWorkflowOptions {
  /** How long the startup waits for the compute worker to take it before the compute fails (default 120 s). */
  startupScheduleToStartSeconds?: number;
  /** How often the watch step reports last_active (and so how often history grows while idle). Default 1800. */
  watchReportSeconds?: number;
  /**
   * How long a silent compute worker is tolerated before the compute is declared failed: the
   * backstop for a VM platform that never sends `vmLost`. Default 600. The watch heartbeats every
   * half of it, and each heartbeat is a billed Temporal action.
   */
  watchHeartbeatTimeoutSeconds?: number;
  /** Continue-as-new after this many watch rounds, to keep a weeks-long history bounded. Default 48 (a day at the default rounds). */
  maxWatchRoundsPerRun?: number;
  /**
   * SIMULATION ONLY (bench/fleet.ts): the task queue of the compute-node activities instead of the
   * compute's own `compute-node-<id>`, so one simulator process can answer thousands of simulated
   * computes from a few queues. Never set for a real compute.
   */
  simulatedNodeTaskQueue?: string;
}

/**
 * The long, quiet watch (30-minute rounds, 10-minute heartbeat timeout, a dead VM reported by the
 * platform's `vmLost` signal) replaced one-minute rounds with a 15 s heartbeat timeout: about 10
 * instead of 360 actions per idle compute-hour. Computes already watching keep the old defaults
 * until their next continue-as-new, so their recorded histories replay.
 */
const QUIET_WATCH_PATCH = 'quiet-watch-and-vm-lost';
const WATCH_DEFAULTS = { reportSeconds: 1800, heartbeatTimeoutSeconds: 600, maxRoundsPerRun: 48 };
const LEGACY_WATCH_DEFAULTS = { reportSeconds: 60, heartbeatTimeoutSeconds: 15, maxRoundsPerRun: 1000 };

/** What survives a continue-as-new of a running compute. */
export interface CarriedComputeState {
  config: ComputeConfig;
  startTime: string;
  lastActive: string | null;
  startLsn: string | null;
  metrics: ComputeStartupMetrics;
  status: 'running' | 'failed';
  error: string | null;
  incarnation: string;
  prewarm: PrewarmState;
  offload: OffloadState;
  lfcCounters: LfcCounters;
}

interface LfcCounters {
  prewarms: number;
  prewarmErrors: number;
  offloads: number;
  offloadErrors: number;
}

export interface ComputeWorkflowInput {
  computeId: string;
  /** A ComputeConfig or bare ComputeSpec; absent = start empty and wait for `configure`. */
  config?: unknown;
  options?: ComputeWorkflowOptions;
  carried?: CarriedComputeState;
}

const MAX_FRESH_STARTS = 3;

/** The whole startup as one resumable activity (startCompute) instead of one activity per step. */
const STARTUP_IN_ONE_ACTIVITY = 'startup-in-one-activity';

/** Formats an activity failure for the status `error`: the innermost message says what went wrong. */
function describeFailure(err: unknown): string {
  let cause: unknown = err;
  while (cause instanceof ActivityFailure && cause.cause) cause = cause.cause;
  return cause instanceof Error ? cause.message : String(cause);
}

function isSettingRejected(err: unknown): boolean {
  return err instanceof ActivityFailure && err.cause instanceof ApplicationFailure && err.cause.type === SETTING_REJECTED;
}

function isPgdataLost(err: unknown): boolean {
  return err instanceof ActivityFailure && err.cause instanceof ApplicationFailure && err.cause.type === PGDATA_LOST;
}

/**
 * One long-lived workflow per compute: compute_ctl's startup, watch, reconfigure and termination,
 * each step an activity on the compute's own task queue so a crashed worker resumes in that step.
 */
export async function computeWorkflow(input: ComputeWorkflowInput): Promise<ComputeStatusResponse> {
  const nodeTaskQueue = input.options?.simulatedNodeTaskQueue ?? computeTaskQueue(input.computeId);
  const startupScheduleToStartSeconds = input.options?.startupScheduleToStartSeconds ?? 120;
  const node = computeNodeActivities(nodeTaskQueue, startupScheduleToStartSeconds);
  const cache = computeCacheActivities(nodeTaskQueue);

  let config: ComputeConfig | undefined = input.carried?.config;
  let status: ComputeStatus = input.carried?.status ?? 'empty';
  let error: string | null = input.carried?.error ?? null;
  let lastActive: string | null = input.carried?.lastActive ?? null;
  let startLsn: string | null = input.carried?.startLsn ?? null;
  let terminateLsn: string | null = null;
  let terminationMode: TerminateMode | undefined;
  let postgresRunning = input.carried !== undefined;
  let currentIncarnation = input.carried?.incarnation ?? '';
  /** Set once a startCompute has been scheduled: its failure may leave Postgres running. */
  let startupMayHaveStartedPostgres = false;
  const startTime = input.carried?.startTime ?? new Date(workflowInfo().startTime).toISOString();
  const metrics: ComputeStartupMetrics = { ...emptyStartupMetrics(), ...input.carried?.metrics };

  // Cache (LFC) offload and prewarm: at most one of each at a time; background work stops with Postgres.
  let prewarm: PrewarmState = input.carried?.prewarm ?? { status: 'not_prewarmed' };
  let offload: OffloadState = input.carried?.offload ?? { status: 'not_offloaded' };
  const lfcCounters: LfcCounters = input.carried?.lfcCounters ?? { prewarms: 0, prewarmErrors: 0, offloads: 0, offloadErrors: 0 };
  let prewarmScope: CancellationScope | undefined;
  let offloadRunning = false;
  const background = new CancellationScope();
  const backgroundTasks: Promise<void>[] = [];

  const setStatus = (next: ComputeStatus, reason?: string) => {
    status = next;
    if (next === 'failed') error = reason ?? error ?? 'unknown failure';
    upsertSearchAttributes([{ key: COMPUTE_STATUS, value: next }]);
    setCurrentDetails(
      [
        `**status:** ${next}`,
        config ? `**tenant:** ${config.spec.tenant_id}  **timeline:** ${config.spec.timeline_id}` : '',
        startLsn ? `**start LSN:** ${startLsn}` : '',
        error && next === 'failed' ? `**error:** ${error}` : '',
      ]
        .filter(Boolean)
        .join('\n'),
    );
    log.info('compute status', { status: next });
  };

  const response = (): ComputeStatusResponse => ({
    compute_id: input.computeId,
    start_time: startTime,
    tenant: config?.spec.tenant_id ?? null,
    timeline: config?.spec.timeline_id ?? null,
    status,
    last_active: lastActive,
    error: status === 'failed' ? error : null,
    start_lsn: startLsn,
    terminate_lsn: terminateLsn,
    metrics: { ...metrics },
    ...(promote.replication() ? { replication: promote.replication() } : {}),
  });

  const adoptConfig = (next: ComputeConfig) => {
    config = next;
    upsertSearchAttributes([
      { key: TENANT_ID, value: next.spec.tenant_id },
      { key: TIMELINE_ID, value: next.spec.timeline_id },
    ]);
  };

  setHandler(statusQuery, response);
  setHandler(awaitStartupUpdate, async () => {
    await condition(() => status === 'running' || status === 'failed' || status === 'terminated');
    return response();
  });
  setHandler(apiKeysQuery, () => config?.compute_ctl_config.jwks ?? { keys: [] });

  // The VM platform's word that the VM is gone. Work waiting on the VM's task queue (which no one
  // will ever poll again) is abandoned at once; the compute then fails with the platform's reason.
  let vmLost: string | undefined;
  const onVmScopes = new Set<CancellationScope>();
  const onVm = async <T>(work: () => Promise<T>): Promise<T> => {
    const scope = new CancellationScope();
    onVmScopes.add(scope);
    try {
      return await scope.run(work);
    } finally {
      onVmScopes.delete(scope);
    }
  };
  const vmLostError = () => `VM lost: ${vmLost}`;
  setHandler(vmLostSignal, (arg) => {
    if (vmLost !== undefined) return;
    const reason = typeof arg?.reason === 'string' ? arg.reason.trim().slice(0, 1000) : '';
    vmLost = reason || 'no reason given';
    log.warn('VM lost', { reason: vmLost });
    for (const scope of onVmScopes) scope.cancel();
  });

  let reconfiguring = false;
  const promote = installPromote({
    computeId: input.computeId,
    nodeTaskQueue,
    config: () => config,
    adoptConfig,
    status: () => status,
    postgresRunning: () => postgresRunning,
    incarnation: () => currentIncarnation,
    busy: () => (reconfiguring ? 'a reconfiguration is in progress' : terminationMode !== undefined ? 'the compute is terminating' : undefined),
    onVm,
  });
  setHandler(
    configureUpdate,
    async (raw) => {
      const parsed = parseComputeConfig(raw);
      if (!parsed.ok) throw ApplicationFailure.nonRetryable(parsed.errors.join('; '), 'InvalidSpec');
      if (status === 'empty') {
        // empty → configuration_pending; the main loop picks the spec up and runs the startup.
        adoptConfig(parsed.config);
        setStatus('configuration_pending');
        await condition(() => status === 'running' || status === 'failed' || status === 'terminated');
        return response();
      }
      // running → configuration_pending → configuration → running | failed (Postgres keeps running).
      // A setting Postgres rejects: the update fails, the previous configuration stays (running).
      reconfiguring = true;
      const previous = config;
      let pendingRestart: string[] = [];
      setStatus('configuration_pending');
      try {
        adoptConfig(parsed.config);
        setStatus('configuration');
        pendingRestart = (await onVm(() => node.reconfigurePostgres({ spec: parsed.config.spec }))).pendingRestart ?? [];
        setStatus('running');
      } catch (err) {
        // Same commands as the failed path (one status upsert): no patch needed for replay.
        if (vmLost === undefined && isSettingRejected(err) && previous) {
          config = previous;
          setStatus('running');
          throw ApplicationFailure.nonRetryable(`reconfiguration refused: ${describeFailure(err)}`, SETTING_REJECTED);
        }
        setStatus('failed', vmLost !== undefined ? vmLostError() : `reconfiguration failed: ${describeFailure(err)}`);
      } finally {
        reconfiguring = false;
      }
      return { ...response(), pending_restart: pendingRestart };
    },
    {
      validator: (raw) => {
        if (status !== 'empty' && status !== 'running') {
          throw new Error(`compute ${input.computeId} is ${status}; configure needs empty or running`);
        }
        const parsed = parseComputeConfig(raw);
        if (!parsed.ok) throw new Error(`invalid compute spec: ${parsed.errors.join('; ')}`);
        if (config && status === 'running' && (parsed.config.spec.tenant_id !== config.spec.tenant_id || parsed.config.spec.timeline_id !== config.spec.timeline_id)) {
          throw new Error('a running compute cannot switch tenant or timeline; terminate it and start another');
        }
      },
    },
  );

  setHandler(
    terminateUpdate,
    async (arg) => {
      const mode: TerminateMode = arg?.mode ?? 'fast';
      terminationMode = mode;
      const wasRunning = postgresRunning;
      setStatus(mode === 'fast' ? 'termination_pending_fast' : 'termination_pending_immediate');
      if (wasRunning) {
        try {
          await onVm(() => node.stopPostgres({ mode }));
        } catch (err) {
          // A lost VM stopped its Postgres for good; the compute fails with the reason below.
          if (vmLost === undefined) throw err;
        }
      }
      await condition(() => status === 'terminated' || status === 'failed');
      return { lsn: terminateLsn };
    },
    {
      validator: (arg) => {
        if (arg?.mode !== undefined && arg.mode !== 'fast' && arg.mode !== 'immediate') {
          throw new Error(`terminate mode must be fast or immediate, got ${JSON.stringify(arg.mode)}`);
        }
        const failedButUp = status === 'failed' && postgresRunning;
        if (status !== 'empty' && status !== 'running' && !failedButUp) {
          throw new Error(`compute ${input.computeId} is ${status}; terminate needs empty or running`);
        }
        if (reconfiguring) throw new Error('a reconfiguration is in progress; retry when it finishes');
        if (promote.promoting()) throw new Error('a promote is in progress; retry when it finishes');
      },
    },
  );

  const cacheTarget = () => ({
    tenantId: config!.spec.tenant_id,
    timelineId: config!.spec.timeline_id,
    endpointId: config!.spec.endpoint_id ?? input.computeId,
  });

  const startPrewarm = (fromEndpointId?: string) => {
    prewarm = { status: 'prewarming' };
    // Created inside the background scope, so Postgres stopping cancels it too.
    const task = background.run(async () => {
      const scope = new CancellationScope();
      prewarmScope = scope;
      try {
        prewarm = await scope.run(() => cache.prewarmCache({ ...cacheTarget(), ...(fromEndpointId ? { fromEndpointId } : {}) }));
        lfcCounters.prewarms += 1;
      } catch (err) {
        if (isCancellation(err)) {
          prewarm = { status: 'cancelled' };
        } else {
          prewarm = { status: 'failed', error: describeFailure(err) };
          lfcCounters.prewarmErrors += 1;
        }
      } finally {
        if (prewarmScope === scope) prewarmScope = undefined;
      }
    });
    backgroundTasks.push(task.catch(() => undefined));
  };

  const runOffload = async (): Promise<void> => {
    offloadRunning = true;
    offload = { status: 'offloading' };
    try {
      offload = await cache.offloadCacheState(cacheTarget());
      if (offload.status === 'completed') lfcCounters.offloads += 1;
    } catch (err) {
      offload = { status: 'failed', error: isCancellation(err) ? 'cancelled: Postgres stopped' : describeFailure(err) };
      if (!isCancellation(err)) lfcCounters.offloadErrors += 1;
    } finally {
      offloadRunning = false;
    }
  };

  /** compute_ctl's loop: first offload one full interval after start; skipped while the prewarm state forbids it. */
  const periodicOffload = async (intervalSeconds: number): Promise<void> => {
    for (;;) {
      await sleep(intervalSeconds * 1000);
      if (offloadRunning) continue;
      if (!mayOffloadPeriodically(prewarm)) {
        log.info('periodic cache offload skipped', { prewarm: prewarm.status });
        continue;
      }
      await runOffload();
    }
  };

  const lfcRunning = () => status === 'running' && postgresRunning;

  setHandler(lfcStatusQuery, () => ({
    prewarm,
    offload,
    metrics: {
      [CACHE_METRICS.prewarms]: lfcCounters.prewarms,
      [CACHE_METRICS.prewarmErrors]: lfcCounters.prewarmErrors,
      [CACHE_METRICS.offloads]: lfcCounters.offloads,
      [CACHE_METRICS.offloadErrors]: lfcCounters.offloadErrors,
    },
  }));

  setHandler(
    prewarmUpdate,
    (arg) => {
      startPrewarm(arg.fromEndpoint);
      return prewarm;
    },
    {
      validator: (arg) => {
        if (!lfcRunning()) throw new Error(`compute ${input.computeId} is ${status}; prewarm needs a running compute`);
        if (prewarmScope) throw new Error('a prewarm is already running');
        if (arg.fromEndpoint !== undefined && !/^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/.test(arg.fromEndpoint)) {
          throw new Error(`from_endpoint is not a valid endpoint ID: ${JSON.stringify(arg.fromEndpoint)}`);
        }
      },
    },
  );

  setHandler(
    cancelPrewarmUpdate,
    async () => {
      const scope = prewarmScope;
      scope?.cancel();
      await condition(() => prewarmScope !== scope);
      return prewarm;
    },
    {
      validator: () => {
        if (!prewarmScope) throw new Error('no prewarm is running');
      },
    },
  );

  setHandler(
    offloadUpdate,
    () => {
      backgroundTasks.push(background.run(runOffload).catch(() => undefined));
      return offload;
    },
    {
      validator: () => {
        if (!lfcRunning()) throw new Error(`compute ${input.computeId} is ${status}; offload needs a running compute`);
        if (offloadRunning) throw new Error('an offload is already running');
      },
    },
  );

  upsertSearchAttributes([{ key: COMPUTE_ID, value: input.computeId }]);

  if (!input.carried) {
    if (input.config !== undefined) {
      const parsed = parseComputeConfig(input.config);
      // The client validates before starting; a spec that still fails here fails the compute with the reason.
      if (!parsed.ok) {
        setStatus('failed', `invalid compute spec: ${parsed.errors.join('; ')}`);
        throw ApplicationFailure.nonRetryable(error!, 'InvalidSpec');
      }
      adoptConfig(parsed.config);
    }
    setStatus(config ? 'init' : 'empty');
    if (!config) {
      const waitStarted = Date.now();
      await condition(() => status === 'configuration_pending' || terminationMode !== undefined);
      metrics.wait_for_spec_ms = Date.now() - waitStarted;
      if (terminationMode !== undefined) {
        setStatus('terminated');
        await condition(allHandlersFinished);
        return response();
      }
    }

    // Startup. A lost PGDATA (a replaced VM) sends us back to a fresh start; nothing else does.
    const startupStarted = Date.now();
    setStatus('init');
    for (let freshStart = 1; ; freshStart++) {
      try {
        await startup(config!, freshStart);
        break;
      } catch (err) {
        if (isPgdataLost(err) && freshStart < MAX_FRESH_STARTS) {
          log.warn('PGDATA lost or replaced during startup; redoing the fresh start', { freshStart, reason: describeFailure(err) });
          continue;
        }
        const reason = vmLost !== undefined ? vmLostError() : `startup failed: ${describeStartupFailure(err)}`;
        if (vmLost === undefined && postgresRunning) await node.stopPostgres({ mode: 'immediate' }).catch(() => undefined);
        else if (vmLost === undefined && startupMayHaveStartedPostgres && !neverPolled(err)) await node.stopAfterFailedStart({ mode: 'immediate' }).catch(() => undefined);
        postgresRunning = false;
        setStatus('failed', reason);
        await condition(allHandlersFinished);
        throw ApplicationFailure.nonRetryable(reason, 'ComputeFailed');
      }
    }
    metrics.total_startup_ms = Date.now() - startupStarted + metrics.wait_for_spec_ms;
    setStatus('running');
    // The prewarm starts first, so it is 'prewarming' before any periodic offload can look at it.
    if (config!.spec.autoprewarm) startPrewarm();
  }
  const offloadInterval = config!.spec.offload_lfc_interval_seconds;
  if (offloadInterval !== undefined && offloadInterval > 0) {
    backgroundTasks.push(background.run(() => periodicOffload(offloadInterval)).catch(() => undefined));
  }

  // Watch until the postmaster exits or the VM is lost. Each round reports last_active.
  const watchDefaults = patched(QUIET_WATCH_PATCH) ? WATCH_DEFAULTS : LEGACY_WATCH_DEFAULTS;
  const watchReportSeconds = input.options?.watchReportSeconds ?? watchDefaults.reportSeconds;
  const maxWatchRounds = input.options?.maxWatchRoundsPerRun ?? watchDefaults.maxRoundsPerRun;
  const watchPostgres = computeWatchActivity(nodeTaskQueue, {
    reportSeconds: watchReportSeconds,
    heartbeatTimeoutSeconds: input.options?.watchHeartbeatTimeoutSeconds ?? watchDefaults.heartbeatTimeoutSeconds,
  });
  let exitReason: string | undefined;
  for (let round = 0; ; round++) {
    if (vmLost !== undefined) {
      exitReason = vmLostError();
      break;
    }
    const historyLong = round >= maxWatchRounds || workflowInfo().continueAsNewSuggested;
    if (historyLong && !reconfiguring && terminationMode === undefined && !prewarmScope && !offloadRunning && !promote.promoting()) {
      background.cancel();
      await Promise.all(backgroundTasks);
      await condition(allHandlersFinished);
      return continueAsNew<typeof computeWorkflow>({
        ...input,
        config: undefined,
        carried: {
          config: config!,
          startTime,
          lastActive,
          startLsn,
          metrics,
          status: status === 'failed' ? 'failed' : 'running',
          error,
          incarnation: currentIncarnation,
          prewarm,
          offload,
          lfcCounters,
        },
      });
    }
    try {
      const report = await onVm(() => watchPostgres({ ...promote.watchArgs(watchReportSeconds), lastActive }));
      if (report.lastActive && (!lastActive || report.lastActive > lastActive)) lastActive = report.lastActive;
      promote.recordLag(report.replication);
      if (report.exited) {
        // A promote stops the standby's postmaster and starts the primary's: keep watching.
        if (await promote.exitBelongsToPromote()) continue;
        exitReason = report.exitReason ?? 'postmaster exited';
        break;
      }
    } catch (err) {
      exitReason = vmLost !== undefined ? vmLostError() : `compute worker lost: ${describeFailure(err)}`;
      break;
    }
  }
  postgresRunning = false;
  // compute_ctl's cache loops stop when Postgres stops; no final offload.
  background.cancel();
  await Promise.all(backgroundTasks);

  // A lost VM took Postgres with it: no final sync is possible, termination or not.
  if (terminationMode !== undefined && vmLost === undefined) {
    // After Postgres stops, a Primary syncs the safekeepers once more; that LSN is the answer.
    if (config!.spec.mode.kind === 'Primary') {
      try {
        terminateLsn = (await node.syncSafekeepers({ incarnation: currentIncarnation, storageAuthToken: config!.spec.storage_auth_token })).lsn;
      } catch (err) {
        setStatus('failed', `terminated, but the final safekeeper sync failed: ${describeFailure(err)}`);
        await condition(allHandlersFinished);
        throw ApplicationFailure.nonRetryable(error!, 'ComputeFailed');
      }
    }
    setStatus('terminated');
    await condition(allHandlersFinished);
    return response();
  }

  setStatus('failed', exitReason);
  await condition(allHandlersFinished);
  throw ApplicationFailure.nonRetryable(exitReason ?? 'postmaster exited', 'ComputeFailed');

  function neverPolled(err: unknown): boolean {
    return err instanceof ActivityFailure && err.cause instanceof TimeoutFailure && err.cause.timeoutType === 'SCHEDULE_TO_START';
  }

  function describeStartupFailure(err: unknown): string {
    if (neverPolled(err)) {
      return `compute worker for ${input.computeId} never polled (no worker took the startup within ${startupScheduleToStartSeconds} s)`;
    }
    return describeFailure(err);
  }

  // compute_ctl's startup steps; completed ones are never repeated on resume.
  async function startup(cfg: ComputeConfig, freshStart: number): Promise<void> {
    const incarnation = uuid4();
    currentIncarnation = incarnation;
    const spec = cfg.spec;
    log.info('startup', { freshStart });
    if (patched(STARTUP_IN_ONE_ACTIVITY)) {
      // One activity; it resumes per step from its journal (activities/compute/startup.ts).
      startupMayHaveStartedPostgres = true;
      // A VM lost meanwhile (the platform's vmLost) cancels it: nothing is left to wait for.
      const started = await onVm(() => node.startCompute({ incarnation, spec }));
      postgresRunning = true;
      startLsn = started.lsn;
      Object.assign(metrics, started.metrics);
      return;
    }
    await node.preparePgdata({ incarnation });
    metrics.config_ms = (await node.writePostgresConfig({ incarnation, spec })).ms;

    let lsn: string | null = null;
    if (cfg.spec.mode.kind === 'Primary') {
      const check = await controlPlaneActivities.checkSafekeepersSynced({
        tenantId: spec.tenant_id,
        timelineId: spec.timeline_id,
        safekeepers: spec.safekeeper_connstrings,
        token: spec.storage_auth_token,
      });
      metrics.sync_sk_check_ms = check.ms;
      if (check.synced && check.lsn) {
        lsn = check.lsn;
      } else {
        const synced = await node.syncSafekeepers({ incarnation, storageAuthToken: spec.storage_auth_token });
        metrics.sync_safekeepers_ms = synced.ms;
        lsn = synced.lsn;
      }
    } else if (cfg.spec.mode.kind === 'Static') {
      lsn = cfg.spec.mode.lsn;
    }
    startLsn = lsn;

    const backup = await node.fetchBasebackup({ incarnation, spec, lsn });
    metrics.basebackup_bytes = backup.bytes;
    metrics.basebackup_ms = backup.ms;
    metrics.pageserver_connect_micros = backup.connectMicros;

    await node.prepareStartupFiles({ incarnation, spec });
    const started = await node.startPostgres({ incarnation, spec });
    postgresRunning = true;
    metrics.start_postgres_ms = started.ms;

    if (cfg.spec.mode.kind === 'Primary' && !spec.skip_pg_catalog_updates) {
      metrics.config_ms += (await node.applySpec({ spec })).ms;
    }
  }
}
