import { defineQuery, defineUpdate } from '@temporalio/workflow';

/**
 * compute_ctl's PromoteState: `completed` carries its timings (and the LSN the replica had
 * replayed to when it was promoted); `failed` the reason.
 */
export type PromoteState =
  | { status: 'not_promoted' }
  | { status: 'completed'; lsn: string; lsn_wait_time_ms: number; pg_promote_time_ms: number; reconfigure_time_ms: number }
  | { status: 'failed'; error: string };

export interface PromoteRequest {
  /** The old primary's terminate LSN: the replica must have replayed up to it. Default: the safekeepers' commit LSN. */
  safekeepersLsn?: string;
  /** The spec to run as the primary (compute_ctl's promote body); default: this compute's spec in mode Primary. */
  spec?: unknown;
}

/** compute_ctl's POST /promote: a Replica becomes the primary of its timeline. */
export const promoteUpdate = defineUpdate<PromoteState, [PromoteRequest]>('promote');

/** The compute's mode (Primary, Replica, Static), or null before it has a spec. */
export const computeModeQuery = defineQuery<string | null>('computeMode');
