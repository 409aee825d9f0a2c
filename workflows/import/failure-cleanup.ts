import { ApplicationFailure, CancellationScope, isCancellation, log, patched } from '@temporalio/workflow';
import { controlPlane } from './activity-proxies';
import { describeFailure, failureType, StepFailure } from './failures';
import type { ImportRun } from './run';

/** Patch: the cleanup deletes the timeline only if the pageserver's record of the import carries this import's idempotency key. */
const DELETE_ONLY_OWN_TIMELINE = 'import-delete-only-own-timeline';

/**
 * A failed or cancelled import: the timeline is deleted if the pageserver records it as this
 * import's (it would wait for the commit marker forever; any other timeline is never touched),
 * status/fast_import says why, the working directory goes. Always throws.
 */
export async function failImport(run: ImportRun, err: unknown): Promise<never> {
  const { status, timeline } = run;
  const cancelled = isCancellation(err);
  const phase = err instanceof StepFailure ? err.phase : status.phase;
  const cause = err instanceof StepFailure ? err.failure : err;
  const type = failureType(cause);
  // A timeline that exists for another reason was never ours: leave it alone.
  if (type === 'TimelineConflict' || type === 'PageserverRejected') run.pageserverMayHaveStarted = false;
  status.error = cancelled ? `cancelled during ${phase}` : `${phase} failed: ${describeFailure(cause)}`;
  status.finished_at = new Date().toISOString();
  await CancellationScope.nonCancellable(async () => {
    if (run.pageserverMayHaveStarted) {
      // Only a timeline the pageserver records as this import's is deleted: a start request
      // that failed transiently proves nothing about whose the timeline is.
      const which = patched(DELETE_ONLY_OWN_TIMELINE) ? { ...timeline, idempotencyKey: run.idempotencyKey } : timeline;
      await controlPlane
        .deleteImportTimeline(which)
        .then((r) => r.kept && log.warn('timeline kept', { reason: r.kept }))
        .catch((e: unknown) => log.warn('could not delete the timeline', { error: describeFailure(e) }));
    }
    await controlPlane.recordImportOutcome({ prefix: run.prefix, error: status.error! }).catch((e: unknown) => log.warn('could not write status/fast_import', { error: describeFailure(e) }));
    await run.removeWorkdir();
  });
  run.setPhase(cancelled ? 'cancelled' : 'failed');
  if (cancelled) throw err;
  throw ApplicationFailure.nonRetryable(status.error, 'ImportFailed', { phase, type: type ?? null });
}
