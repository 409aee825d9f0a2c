import { Context } from '@temporalio/activity';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { every } from '../common/activity-context';

export interface FailpointOptions {
  /**
   * What to heartbeat while paused. A point inside an activity that heartbeats progress passes
   * its latest details, so pausing there does not overwrite them with nothing.
   */
  heartbeatDetails?: unknown;
  /**
   * Fire on a retried attempt too. For points inside one activity that resumes past the steps an
   * earlier attempt finished: each worker a test starts stops at its own point, whatever the attempt.
   */
  evenOnRetry?: boolean;
}

/**
 * Named pause points for fault-injection tests, in the spirit of Neon's failpoints: a worker
 * started with failpoints {"startPostgres"} stops at the start of that activity's first attempt
 * (heartbeating, so it looks alive) until the test kills the worker or cancels the activity.
 * A few points sit inside an activity rather than at its start ("prewarmBatch": after a prewarm
 * statement's progress was heartbeated). Each fires once per worker process, on attempt 1 only.
 * With no failpoints configured — always in production — this returns at once.
 * A paused point also goes on when a file named after it appears in the directory that
 * DURABLE_COMPUTE_FAILPOINT_RELEASE_DIR names: the chaos table (test/chaos/) pauses in a step,
 * injects a fault, then lets the step run into it.
 */
export function createFailpoints(enabled: ReadonlySet<string>, warn: (line: string) => void = console.warn) {
  // Said at startup, so a worker that will pause on purpose is never mistaken for a production one.
  if (enabled.size > 0) {
    warn(`WARNING: failpoints armed: ${[...enabled].join(', ')} (DURABLE_COMPUTE_FAILPOINTS); activities will pause on purpose. A test feature: never run production work on this worker.`);
  }
  const fired = new Set<string>();
  const releaseDir = enabled.size > 0 ? process.env.DURABLE_COMPUTE_FAILPOINT_RELEASE_DIR : undefined;
  return async function failpoint(name: string, opts: FailpointOptions = {}): Promise<void> {
    if (!enabled.has(name) || fired.has(name)) return;
    const ctx = Context.current();
    if (ctx.info.attempt > 1 && !opts.evenOnRetry) return;
    fired.add(name);
    console.log(`failpoint ${name} reached (pid ${process.pid})`);
    for (;;) {
      ctx.heartbeat(opts.heartbeatDetails);
      await sleep(200);
      if (ctx.cancellationSignal.aborted) throw ctx.cancellationSignal.reason;
      if (releaseDir && existsSync(path.join(releaseDir, name))) {
        console.log(`failpoint ${name} released (pid ${process.pid})`);
        return;
      }
    }
  };
}
export type Failpoint = ReturnType<typeof createFailpoints>;

/**
 * Runs `fn` while heartbeating every second, so a killed worker is noticed within the activity's
 * heartbeat timeout; `details` supplies the progress recorded with each heartbeat.
 */
export async function whileHeartbeating<T>(fn: () => Promise<T>, details?: () => unknown): Promise<T> {
  const ctx = Context.current();
  const beat = () => ctx.heartbeat(details?.());
  beat();
  const stopBeating = every(1000, beat);
  try {
    return await fn();
  } finally {
    stopBeating();
  }
}
