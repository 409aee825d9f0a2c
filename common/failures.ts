import { ApplicationFailure } from '@temporalio/common';
import { maskSecrets } from './errors';

/**
 * The one vocabulary activities and drivers report failures in. `type` is what workflows and
 * retry policies match on; the message is masked, since the SDK records it in history as is.
 * Non-retryable is for conditions that do not fix themselves (a wrong password, a missing
 * binary, an invalid spec): retrying would only delay the error the user must see.
 */
export function nonRetryable(type: string, message: string, details?: unknown): ApplicationFailure {
  return ApplicationFailure.create({ type, message: maskSecrets(message), nonRetryable: true, details: details === undefined ? [] : [details] });
}

/** A failure a retry may get past (an unreachable server, an interrupted tool). */
export function retryable(type: string, message: string, details?: unknown): ApplicationFailure {
  return ApplicationFailure.create({ type, message: maskSecrets(message), nonRetryable: false, details: details === undefined ? [] : [details] });
}
