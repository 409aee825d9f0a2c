import { ApplicationFailure, condition, patched } from '@temporalio/workflow';
import { controlPlane } from './activity-proxies';
import type { ImportRun } from './run';

/** Patch: the completion signal only wakes the wait, the pageserver's state decides (running workflows replay the old path). */
const COMPLETION_SIGNAL_ONLY_WAKES = 'import-completion-signal-only-wakes';

/**
 * Polls the pageserver until its import of the uploaded data directory is done; the storage
 * controller's completion signal cuts each wait short.
 */
export async function waitForPageserver(run: ImportRun): Promise<{ lsn: string; pgVersion: number }> {
  const { input, o } = run;
  const deadline = Date.now() + o.pageserverTimeoutSeconds * 1000;
  for (;;) {
    const s = await controlPlane.getPageserverImport(run.timeline);
    if (s.state === 'done') return { lsn: s.lastRecordLsn, pgVersion: s.pgVersion };
    if (s.state === 'failed') throw ApplicationFailure.nonRetryable(`the pageserver's import failed: ${s.error}`, 'PageserverImportFailed');
    if (s.state === 'missing') throw ApplicationFailure.nonRetryable(`timeline ${input.tenantId}/${input.timelineId} disappeared from the pageserver during the import`, 'TimelineMissing');
    // The callback's word alone (it may be forged) never fails the import: the poll above, right
    // after the signal woke the wait, is what decides.
    if (run.completion?.error && !patched(COMPLETION_SIGNAL_ONLY_WAKES)) {
      throw ApplicationFailure.nonRetryable(`the pageserver's import failed: ${run.completion.error}`, 'PageserverImportFailed');
    }
    if (Date.now() >= deadline) throw ApplicationFailure.nonRetryable(`the pageserver did not finish the import within ${o.pageserverTimeoutSeconds} s`, 'PageserverImportTimeout');
    // A durable timer; the completion signal cuts it short.
    const seen = run.completion;
    await condition(() => run.completion !== seen, `${o.pageserverPollSeconds} seconds`);
  }
}
