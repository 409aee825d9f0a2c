import { Context } from '@temporalio/activity';

/**
 * The current activity's context, or undefined when the code runs outside an activity (a test, a
 * CLI command). The building blocks here are plain functions usable either way; only the factory's
 * wrappers need a context, for heartbeats and cancellation.
 */
export function currentActivity(): Context | undefined {
  try {
    return Context.current();
  } catch {
    return undefined;
  }
}

/** Heartbeats with `details` when running as an activity; a no-op otherwise. */
export function heartbeat(details?: unknown): void {
  currentActivity()?.heartbeat(details);
}

/** The activity's cancellation signal (aborted when the workflow cancels it), if any. */
export function cancellationSignal(): AbortSignal | undefined {
  return currentActivity()?.cancellationSignal;
}
