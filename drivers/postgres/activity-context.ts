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

/**
 * How often a long, quiet activity (the watch) should heartbeat: half its heartbeat timeout, so
 * one late beat is tolerated. Beats this far apart each reach the server (the SDK sends a beat at
 * once when none went out for its throttle interval, min(0.8 × timeout, 60 s)), and each one is a
 * billed Temporal action, so a long timeout keeps an idle compute cheap. `fallbackMs` without a
 * heartbeat timeout (or outside an activity).
 */
export function heartbeatSpacingMs(fallbackMs: number): number {
  const timeoutMs = currentActivity()?.info.heartbeatTimeoutMs;
  return timeoutMs ? timeoutMs / 2 : fallbackMs;
}
