import { asyncLocalStorage, type Context } from '@temporalio/activity';

/**
 * The running activity's heartbeat, cancellation and previous heartbeat details, or inert
 * stand-ins when the code runs outside an activity (a benchmark, a one-off tool). The steps stay
 * usable both ways and never need to know which.
 */
export interface StepContext {
  heartbeat(details?: unknown): void;
  signal: AbortSignal;
  /** The details of the last heartbeat of an earlier attempt of this activity, if any. */
  previousDetails: unknown;
  attempt: number;
  /** Something an operator should know although the step goes on (the activity's log, or stderr outside one). */
  warn(message: string, attrs?: Record<string, unknown>): void;
}

export function stepContext(fallbackSignal?: AbortSignal): StepContext {
  const ctx: Context | undefined = asyncLocalStorage.getStore();
  if (!ctx) {
    return {
      heartbeat: () => {},
      signal: fallbackSignal ?? new AbortController().signal,
      previousDetails: undefined,
      attempt: 1,
      warn: (message, attrs) => console.warn(message, attrs ?? ''),
    };
  }
  return {
    heartbeat: (details) => ctx.heartbeat(details),
    signal: ctx.cancellationSignal,
    previousDetails: ctx.info.heartbeatDetails,
    attempt: ctx.info.attempt,
    warn: (message, attrs) => ctx.log.warn(message, attrs),
  };
}

/** Calls `fn` every `intervalMs` until the returned stop function is called. */
export function every(intervalMs: number, fn: () => void): () => void {
  const timer = setInterval(fn, intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}
