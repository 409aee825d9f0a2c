import { ActivityFailure, ApplicationFailure, TimeoutFailure } from '@temporalio/workflow';
import type { ImportPhase } from '../../model/import-status';

/** The innermost message of a failure chain: what actually went wrong. */
export function describeFailure(err: unknown): string {
  let cause: unknown = err;
  while (cause instanceof ActivityFailure && cause.cause) cause = cause.cause;
  if (cause instanceof TimeoutFailure) return `${cause.timeoutType?.toLowerCase().replaceAll('_', '-') ?? 'activity'} timeout`;
  return cause instanceof Error ? cause.message : String(cause);
}

/** The ApplicationFailure type an activity failed with, if any. */
export function failureType(err: unknown): string | undefined {
  return err instanceof ActivityFailure && err.cause instanceof ApplicationFailure ? err.cause.type ?? undefined : undefined;
}

/** A host step nobody picked up in time: its host (the only one with the files) is gone. */
export function isHostLost(err: unknown): boolean {
  return err instanceof ActivityFailure && err.cause instanceof TimeoutFailure && err.cause.timeoutType === 'SCHEDULE_TO_START';
}

/** A step's failure, tagged with the phase it happened in. */
export class StepFailure extends Error {
  constructor(
    readonly phase: ImportPhase,
    readonly failure: unknown,
  ) {
    super(describeFailure(failure));
  }
}
