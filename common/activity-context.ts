/**
 * The one activity-context module: what code that may run inside an activity (or outside one, in
 * a test, a benchmark or a CLI command) needs of it - heartbeats, cancellation, earlier attempts'
 * progress - with inert stand-ins outside an activity.
 */
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
  const ctx = currentActivity();
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

/**
 * Calls `fn` every `intervalMs` until the returned stop function is called: the one heartbeat loop
 * (an activity keeps beating while it waits on something that reports no progress).
 */
export function every(intervalMs: number, fn: () => void): () => void {
  const timer = setInterval(fn, intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}

/**
 * Runs `work`, heartbeating every `intervalMs` while it runs: for short activities that report no
 * progress of their own, so a worker killed mid-call is noticed within the heartbeat timeout
 * instead of the whole start-to-close timeout.
 */
export async function whileBeating<T>(work: () => Promise<T>, intervalMs = 5000): Promise<T> {
  heartbeat();
  const stop = every(intervalMs, () => heartbeat());
  try {
    return await work();
  } finally {
    stop();
  }
}

/** `fns` with each one wrapped in `whileBeating`. */
export function beatingWhileRunning<T extends Record<string, (...args: never[]) => Promise<unknown>>>(fns: T, intervalMs?: number): T {
  return Object.fromEntries(
    Object.entries(fns).map(([name, fn]) => [name, (...args: never[]) => whileBeating(() => fn(...args), intervalMs)]),
  ) as T;
}
