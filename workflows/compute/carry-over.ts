import type { OffloadState, PrewarmState } from '../../model/cache-state';
import type { ComputeConfig } from '../../model/compute-spec';
import type { ComputeStartupMetrics } from '../../model/compute-status';
import type { ComputeCache, LfcCounters } from './cache';
import type { ComputeState } from './state';

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

/** The state the next run starts from: the compute keeps running, its history starts afresh. */
export function carryOver(compute: ComputeState, cache: ComputeCache): CarriedComputeState {
  return {
    config: compute.config!,
    startTime: compute.startTime,
    lastActive: compute.lastActive,
    startLsn: compute.startLsn,
    metrics: compute.metrics,
    status: compute.status === 'failed' ? 'failed' : 'running',
    error: compute.error,
    incarnation: compute.incarnation,
    prewarm: cache.prewarm,
    offload: cache.offload,
    lfcCounters: cache.counters,
  };
}
