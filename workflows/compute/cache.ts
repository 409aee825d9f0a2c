/**
 * The compute's cache (LFC) prewarm and offload, compute_ctl's compute_prewarm.rs as workflow
 * state: at most one prewarm and one offload at a time, each in the background of the running
 * compute, a periodic offload if the spec asks for one, and the lfc* handlers. All background
 * work stops with Postgres.
 */
import { CancellationScope, condition, isCancellation, log, setHandler, sleep } from '@temporalio/workflow';
import { CACHE_METRICS, mayOffloadPeriodically, type OffloadState, type PrewarmState } from '../../model/cache-state';
import type { computeCacheActivities } from './activity-proxies';
import type { CarriedComputeState } from './carry-over';
import { describeFailure } from './failures';
import { cancelPrewarmUpdate, lfcStatusQuery, offloadUpdate, prewarmUpdate } from './messages';
import type { ComputeState } from './state';

export interface LfcCounters {
  prewarms: number;
  prewarmErrors: number;
  offloads: number;
  offloadErrors: number;
}

const ENDPOINT_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

export class ComputeCache {
  prewarm: PrewarmState;
  offload: OffloadState;
  readonly counters: LfcCounters;
  private prewarmScope: CancellationScope | undefined;
  private offloadRunning = false;
  /** Holds every background task, so Postgres stopping cancels them all. */
  private readonly background = new CancellationScope();
  private readonly backgroundTasks: Promise<void>[] = [];

  constructor(
    private readonly compute: ComputeState,
    private readonly activities: ReturnType<typeof computeCacheActivities>,
    carried: CarriedComputeState | undefined,
  ) {
    this.prewarm = carried?.prewarm ?? { status: 'not_prewarmed' };
    this.offload = carried?.offload ?? { status: 'not_offloaded' };
    this.counters = carried?.lfcCounters ?? { prewarms: 0, prewarmErrors: 0, offloads: 0, offloadErrors: 0 };
  }

  /** No prewarm or offload is running (a continue-as-new would cut it off). */
  get idle(): boolean {
    return !this.prewarmScope && !this.offloadRunning;
  }

  private target() {
    const spec = this.compute.config!.spec;
    const { endpoint_storage_addr: addr, endpoint_storage_token: token } = spec;
    return {
      tenantId: spec.tenant_id,
      timelineId: spec.timeline_id,
      endpointId: spec.endpoint_id ?? this.compute.computeId,
      // Endpoint storage when the spec names it; else the compute worker's own S3.
      ...(addr !== undefined && token !== undefined ? { endpointStorage: { addr, token } } : {}),
    };
  }

  private running(): boolean {
    return this.compute.status === 'running' && this.compute.postgresRunning;
  }

  startPrewarm(fromEndpointId?: string): void {
    this.prewarm = { status: 'prewarming' };
    // Created inside the background scope, so Postgres stopping cancels it too.
    const task = this.background.run(async () => {
      const scope = new CancellationScope();
      this.prewarmScope = scope;
      try {
        this.prewarm = await scope.run(() => this.activities.prewarmCache({ ...this.target(), ...(fromEndpointId ? { fromEndpointId } : {}) }));
        this.counters.prewarms += 1;
      } catch (err) {
        if (isCancellation(err)) {
          this.prewarm = { status: 'cancelled' };
        } else {
          this.prewarm = { status: 'failed', error: describeFailure(err) };
          this.counters.prewarmErrors += 1;
        }
      } finally {
        if (this.prewarmScope === scope) this.prewarmScope = undefined;
      }
    });
    this.backgroundTasks.push(task.catch(() => undefined));
  }

  private async runOffload(): Promise<void> {
    this.offloadRunning = true;
    this.offload = { status: 'offloading' };
    try {
      this.offload = await this.activities.offloadCacheState(this.target());
      if (this.offload.status === 'completed') this.counters.offloads += 1;
    } catch (err) {
      this.offload = { status: 'failed', error: isCancellation(err) ? 'cancelled: Postgres stopped' : describeFailure(err) };
      if (!isCancellation(err)) this.counters.offloadErrors += 1;
    } finally {
      this.offloadRunning = false;
    }
  }

  /** compute_ctl's loop: first offload one full interval after start; skipped while the prewarm state forbids it. */
  private async periodicOffload(intervalSeconds: number): Promise<void> {
    for (;;) {
      await sleep(intervalSeconds * 1000);
      if (this.offloadRunning) continue;
      if (!mayOffloadPeriodically(this.prewarm)) {
        log.info('periodic cache offload skipped', { prewarm: this.prewarm.status });
        continue;
      }
      await this.runOffload();
    }
  }

  /** Starts the spec's periodic offload (offload_lfc_interval_seconds), if it has one. */
  startPeriodicOffload(intervalSeconds: number | undefined): void {
    if (intervalSeconds !== undefined && intervalSeconds > 0) {
      this.backgroundTasks.push(this.background.run(() => this.periodicOffload(intervalSeconds)).catch(() => undefined));
    }
  }

  /** Postgres stopped: compute_ctl's cache loops stop with it, with no final offload. Settles when all have. */
  stop(): Promise<unknown> {
    this.background.cancel();
    return Promise.all(this.backgroundTasks);
  }

  /** compute_ctl's /lfc endpoints. */
  registerHandlers(): void {
    setHandler(lfcStatusQuery, () => ({
      prewarm: this.prewarm,
      offload: this.offload,
      metrics: {
        [CACHE_METRICS.prewarms]: this.counters.prewarms,
        [CACHE_METRICS.prewarmErrors]: this.counters.prewarmErrors,
        [CACHE_METRICS.offloads]: this.counters.offloads,
        [CACHE_METRICS.offloadErrors]: this.counters.offloadErrors,
      },
    }));

    setHandler(
      prewarmUpdate,
      (arg) => {
        this.startPrewarm(arg.fromEndpoint);
        return this.prewarm;
      },
      {
        validator: (arg) => {
          if (!this.running()) throw new Error(`compute ${this.compute.computeId} is ${this.compute.status}; prewarm needs a running compute`);
          if (this.prewarmScope) throw new Error('a prewarm is already running');
          if (arg.fromEndpoint !== undefined && !ENDPOINT_ID.test(arg.fromEndpoint)) {
            throw new Error(`from_endpoint is not a valid endpoint ID: ${JSON.stringify(arg.fromEndpoint)}`);
          }
        },
      },
    );

    setHandler(
      cancelPrewarmUpdate,
      async () => {
        const scope = this.prewarmScope;
        scope?.cancel();
        await condition(() => this.prewarmScope !== scope);
        return this.prewarm;
      },
      {
        validator: () => {
          if (!this.prewarmScope) throw new Error('no prewarm is running');
        },
      },
    );

    setHandler(
      offloadUpdate,
      () => {
        this.backgroundTasks.push(this.background.run(() => this.runOffload()).catch(() => undefined));
        return this.offload;
      },
      {
        validator: () => {
          if (!this.running()) throw new Error(`compute ${this.compute.computeId} is ${this.compute.status}; offload needs a running compute`);
          if (this.offloadRunning) throw new Error('an offload is already running');
        },
      },
    );
  }
}
