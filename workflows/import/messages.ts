import { defineQuery, defineSignal } from '@temporalio/workflow';
import type { ImportStatus } from '../../model/import-status';

/** The import's status: phase, host, steps, totals (the running step's live progress comes from its heartbeats). */
export const importStatusQuery = defineQuery<ImportStatus>('importStatus');

/**
 * The storage controller's completion callback (`PUT /import_complete {tenant_id, timeline_id,
 * error}`) delivered as a signal: it ends the wait for the pageserver early. Repeats are harmless.
 * It only wakes the wait: the pageserver's own state decides the outcome, so a forged notice
 * cannot fail (or finish) an import.
 */
export interface ImportCompleteNotice {
  tenant_id: string;
  timeline_id: string;
  error: string | null;
}
export const importCompleteSignal = defineSignal<[ImportCompleteNotice]>('importComplete');
