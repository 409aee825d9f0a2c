import { formatWithOptions } from 'node:util';
import { LogTimestamp, type Logger as SdkLogger, type LogLevel, type LogMetadata } from '@temporalio/worker';
import { maskSecrets } from '../common/errors';
import { log } from '../common/logger';

const PINO_LEVEL = { TRACE: 'trace', DEBUG: 'debug', INFO: 'info', WARN: 'warn', ERROR: 'error' } as const;

/**
 * The Temporal Runtime's logger over this process's pino logger (common/logger.ts): the SDK's own
 * lines (worker state, activity and workflow failures, which quote what failed) and the Rust
 * core's forwarded ones come out in the same JSON as ours, masked the same way.
 */
export function maskedLogger(): SdkLogger {
  const write = (level: LogLevel, message: string, meta?: LogMetadata) => {
    // The core's own timestamp (nanoseconds) duplicates `time`; the rest are fields (sdkComponent, workflowId...).
    const { [LogTimestamp]: _timestamp, ...fields } = (meta ?? {}) as LogMetadata & { [LogTimestamp]?: bigint };
    log()[PINO_LEVEL[level]](fields, message);
  };
  return {
    log: write,
    trace: (message, meta) => write('TRACE', message, meta),
    debug: (message, meta) => write('DEBUG', message, meta),
    info: (message, meta) => write('INFO', message, meta),
    warn: (message, meta) => write('WARN', message, meta),
    error: (message, meta) => write('ERROR', message, meta),
  };
}

let consoleMasked = false;

/** console.log/info/warn/error/debug of this process, masked (a CLI command's output to its user). */
export function maskConsole(): void {
  if (consoleMasked) return;
  consoleMasked = true;
  for (const name of ['log', 'info', 'warn', 'error', 'debug'] as const) {
    const original = console[name].bind(console);
    console[name] = (...args: unknown[]) => original(maskSecrets(formatWithOptions({ colors: false }, ...args)));
  }
}
