import { ActivityFailure, ApplicationFailure, TimeoutFailure } from '@temporalio/workflow';
import { PGDATA_LOST, SETTING_REJECTED } from '../../model/compute-status';

/** Formats an activity failure for the status `error`: the innermost message says what went wrong. */
export function describeFailure(err: unknown): string {
  let cause: unknown = err;
  while (cause instanceof ActivityFailure && cause.cause) cause = cause.cause;
  return cause instanceof Error ? cause.message : String(cause);
}

/** Postgres refused a setting of a reconfiguration: the previous configuration stays. */
export function isSettingRejected(err: unknown): boolean {
  return err instanceof ActivityFailure && err.cause instanceof ApplicationFailure && err.cause.type === SETTING_REJECTED;
}

/** PGDATA vanished or was replaced (a replaced VM): the startup starts afresh. */
export function isPgdataLost(err: unknown): boolean {
  return err instanceof ActivityFailure && err.cause instanceof ApplicationFailure && err.cause.type === PGDATA_LOST;
}

/** No compute worker ever took the activity: nothing ran on the VM. */
export function neverPolled(err: unknown): boolean {
  return err instanceof ActivityFailure && err.cause instanceof TimeoutFailure && err.cause.timeoutType === 'SCHEDULE_TO_START';
}
