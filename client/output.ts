import { UserFacingError, maskSecrets } from '../common/errors';

/** Errors go to stderr with a non-zero exit; user-facing ones without a stack trace, every one with secrets masked. */
export function exitWithError(err: unknown): never {
  const message = err instanceof UserFacingError ? err.message : err instanceof Error ? (err.stack ?? err.message) : String(err);
  process.stderr.write(`durable-compute: ${maskSecrets(message)}\n`);
  process.exit(1);
}

/** Every command's output goes through here, masked: a status can carry an error that quotes a connection string. */
export function printText(text: string): void {
  process.stdout.write(maskSecrets(text));
}

export function printJson(value: unknown): void {
  printText(`${JSON.stringify(value, null, 2)}\n`);
}
