/**
 * compute_ctl's startup as workflow steps: the first spec (given at start or by configure), then
 * init → running, or failed. A lost PGDATA (a replaced VM) sends the startup back to a fresh
 * start; nothing else does.
 */
import { allHandlersFinished, ApplicationFailure, condition, log, patched, uuid4 } from '@temporalio/workflow';
import { parseComputeConfig, type ComputeConfig } from '../../model/compute-spec';
import { controlPlaneActivities, type computeNodeActivities } from './activity-proxies';
import { describeFailure, isPgdataLost, neverPolled } from './failures';
import type { ComputeState } from './state';
import type { VmLink } from './vm';

type NodeActivities = ReturnType<typeof computeNodeActivities>;

const MAX_FRESH_STARTS = 3;

/** The whole startup as one resumable activity (startCompute) instead of one activity per step. */
const STARTUP_IN_ONE_ACTIVITY = 'startup-in-one-activity';

/**
 * Adopts the spec the workflow was started with, if any: the compute is then init, else empty. The
 * client validates before starting; a spec that still fails here fails the compute with the reason.
 */
export function acceptInitialSpec(compute: ComputeState, raw: unknown): void {
  if (raw !== undefined) {
    const parsed = parseComputeConfig(raw);
    if (!parsed.ok) {
      compute.setStatus('failed', `invalid compute spec: ${parsed.errors.join('; ')}`);
      throw ApplicationFailure.nonRetryable(compute.error!, 'InvalidSpec');
    }
    compute.adoptConfig(parsed.config);
  }
  compute.setStatus(compute.config ? 'init' : 'empty');
}

/** empty: waits for configure to bring a spec (true) or terminate to end the compute first (false). */
export async function waitForSpec(compute: ComputeState): Promise<boolean> {
  const waitStarted = Date.now();
  await condition(() => compute.status === 'configuration_pending' || compute.terminationMode !== undefined);
  compute.metrics.wait_for_spec_ms = Date.now() - waitStarted;
  return compute.terminationMode === undefined;
}

/**
 * init → Postgres running (the caller then sets running), or the compute fails: Postgres is stopped
 * if this startup may have started it, and the workflow fails with the reason.
 */
export async function startCompute(compute: ComputeState, vm: VmLink, node: NodeActivities, startupScheduleToStartSeconds: number): Promise<void> {
  const startupStarted = Date.now();
  compute.setStatus('init');
  for (let freshStart = 1; ; freshStart++) {
    try {
      await startup(compute, vm, node, compute.config!, freshStart);
      break;
    } catch (err) {
      if (isPgdataLost(err) && freshStart < MAX_FRESH_STARTS) {
        log.warn('PGDATA lost or replaced during startup; redoing the fresh start', { freshStart, reason: describeFailure(err) });
        continue;
      }
      const reason = vm.lost ? vm.lostError() : `startup failed: ${describeStartupFailure(err, compute.computeId, startupScheduleToStartSeconds)}`;
      if (!vm.lost && compute.postgresRunning) await node.stopPostgres({ mode: 'immediate' }).catch(() => undefined);
      else if (!vm.lost && compute.startupMayHaveStartedPostgres && !neverPolled(err)) await node.stopAfterFailedStart({ mode: 'immediate' }).catch(() => undefined);
      compute.postgresRunning = false;
      compute.setStatus('failed', reason);
      await condition(allHandlersFinished);
      throw ApplicationFailure.nonRetryable(reason, 'ComputeFailed');
    }
  }
  compute.metrics.total_startup_ms = Date.now() - startupStarted + compute.metrics.wait_for_spec_ms;
}

function describeStartupFailure(err: unknown, computeId: string, startupScheduleToStartSeconds: number): string {
  if (neverPolled(err)) {
    return `compute worker for ${computeId} never polled (no worker took the startup within ${startupScheduleToStartSeconds} s)`;
  }
  return describeFailure(err);
}

// compute_ctl's startup steps; completed ones are never repeated on resume.
async function startup(compute: ComputeState, vm: VmLink, node: NodeActivities, cfg: ComputeConfig, freshStart: number): Promise<void> {
  const incarnation = uuid4();
  compute.incarnation = incarnation;
  const spec = cfg.spec;
  const metrics = compute.metrics;
  log.info('startup', { freshStart });
  if (patched(STARTUP_IN_ONE_ACTIVITY)) {
    // One activity; it resumes per step from its journal (activities/compute/startup.ts).
    compute.startupMayHaveStartedPostgres = true;
    // A VM lost meanwhile (the platform's vmLost) cancels it: nothing is left to wait for.
    const started = await vm.run(() => node.startCompute({ incarnation, spec }));
    compute.postgresRunning = true;
    compute.startLsn = started.lsn;
    Object.assign(metrics, started.metrics);
    return;
  }
  await legacyStartupSteps(compute, node, cfg, incarnation);
}

/** The startup as one activity per step, as computes started before STARTUP_IN_ONE_ACTIVITY recorded it. */
async function legacyStartupSteps(compute: ComputeState, node: NodeActivities, cfg: ComputeConfig, incarnation: string): Promise<void> {
  const spec = cfg.spec;
  const metrics = compute.metrics;
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
  compute.startLsn = lsn;

  const backup = await node.fetchBasebackup({ incarnation, spec, lsn });
  metrics.basebackup_bytes = backup.bytes;
  metrics.basebackup_ms = backup.ms;
  metrics.pageserver_connect_micros = backup.connectMicros;

  await node.prepareStartupFiles({ incarnation, spec });
  const started = await node.startPostgres({ incarnation, spec });
  compute.postgresRunning = true;
  metrics.start_postgres_ms = started.ms;

  if (cfg.spec.mode.kind === 'Primary' && !spec.skip_pg_catalog_updates) {
    metrics.config_ms += (await node.applySpec({ spec })).ms;
  }
}
