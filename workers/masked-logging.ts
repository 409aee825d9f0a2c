import { formatWithOptions } from 'node:util';
import { DefaultLogger, type LogEntry } from '@temporalio/worker';
import { maskSecrets } from '../common/errors';

/**
 * A worker's log is read by more people than may see its secrets: every line it writes, the SDK's
 * (activity and workflow failures, which quote what failed) and our own, goes through maskSecrets.
 */
function writeMasked({ level, timestampNanos, message, meta }: LogEntry): void {
  const date = new Date(Number(timestampNanos / 1000000n)).toISOString();
  const details = meta === undefined ? '' : ` ${formatWithOptions({ colors: false }, meta)}`;
  process.stderr.write(`${maskSecrets(`${date} [${level}] ${message}${details}`)}\n`);
}

export function maskedLogger(): DefaultLogger {
  return new DefaultLogger('INFO', writeMasked);
}

let consoleMasked = false;

/** console.log/info/warn/error/debug of this process, masked. */
export function maskConsole(): void {
  if (consoleMasked) return;
  consoleMasked = true;
  for (const name of ['log', 'info', 'warn', 'error', 'debug'] as const) {
    const original = console[name].bind(console);
    console[name] = (...args: unknown[]) => original(maskSecrets(formatWithOptions({ colors: false }, ...args)));
  }
}
