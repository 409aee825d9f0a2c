import { defineQuery, defineUpdate } from '@temporalio/workflow';
import type { ComputeStatusResponse, TerminateMode } from '../../model/compute-status';

/** compute_ctl's POST /configure: takes a ComputeConfig or bare ComputeSpec JSON; returns the final status. */
export const configureUpdate = defineUpdate<ComputeStatusResponse, [unknown]>('configure');

/** compute_ctl's POST /terminate?mode=: returns the LSN the safekeepers were synced at after Postgres stopped. */
export const terminateUpdate = defineUpdate<{ lsn: string | null }, [{ mode?: TerminateMode }]>('terminate');

/** compute_ctl's GET /status, plus startup timings under /metrics.json names. */
export const statusQuery = defineQuery<ComputeStatusResponse>('status');
