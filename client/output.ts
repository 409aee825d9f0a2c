import { UserFacingError, maskSecrets } from '../common/errors';

/** Errors go to stderr with a non-zero exit; user-facing ones without a stack trace, every one with secrets masked. */
export function exitWithError(err: unknown): never {
  const message = err instanceof UserFacingError ? err.message : err instanceof Error ? (err.stack ?? err.message) : String(err);
  process.stderr.write(`durable-compute: ${maskSecrets(message)}\n`);
  process.exit(1);
}

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}
