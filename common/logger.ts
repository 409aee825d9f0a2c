import { formatWithOptions } from 'node:util';
import { pino, type DestinationStream, type Logger } from 'pino';
import { maskSecrets } from './errors';

/**
 * The one logger of a process: JSON lines (`level`, `time`, `msg`, then the fields) on stderr,
 * pretty lines when stderr is a terminal. Workers, the SDK (through workers/masked-logging.ts),
 * the dev stack's servers and the CLI's own diagnostics all write through it, so one parser reads
 * every line and one place keeps secrets out:
 *
 * - fields named like a secret (password, token, authorization, connection string...) are replaced
 *   whole by pino's `redact`, before anything is serialized;
 * - every other string, the message included, goes through maskSecrets (common/errors.ts), which
 *   finds secrets inside text: a libpq URL's password, `password=...`, a bearer token, a JSON field
 *   quoted in an error message.
 */

export type { Logger };

/** Fields whose whole value is a secret, at the top level or one object down (pino's redact paths). */
const SECRET_KEYS = [
  'password',
  'passwd',
  'token',
  'authToken',
  'accessToken',
  'refreshToken',
  'secret',
  'secretAccessKey',
  'sessionToken',
  'apiKey',
  'api_key',
  'authorization',
  'Authorization',
  'connectionString',
  'connstr',
  'databaseUrl',
];
const REDACT_PATHS = SECRET_KEYS.flatMap((k) => [k, `*.${k}`]);

const MAX_DEPTH = 8;

/** A copy of `value` with maskSecrets applied to every string in it; Errors become plain objects (JSON would drop their message). */
export function maskDeep(value: unknown, depth = 0, seen = new WeakSet<object>()): unknown {
  if (typeof value === 'string') return maskSecrets(value);
  if (typeof value === 'bigint') return value.toString();
  if (typeof value !== 'object' || value === null) return value;
  if (seen.has(value)) return '[Circular]';
  if (depth >= MAX_DEPTH) return '[Object]';
  seen.add(value);
  if (value instanceof Error) {
    const { name, message, stack, cause, ...rest } = value as Error & { cause?: unknown };
    return maskDeep({ type: name, message, stack, ...(cause !== undefined ? { cause } : {}), ...rest }, depth + 1, seen);
  }
  if (Array.isArray(value)) return value.map((v) => maskDeep(v, depth + 1, seen));
  if (value instanceof Date) return value.toISOString();
  if (ArrayBuffer.isView(value)) return `[${value.byteLength} bytes]`;
  return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, maskDeep(v, depth + 1, seen)]));
}

/** A new logger writing to `destination` (default: stderr, synchronously, so nothing is lost at exit). */
export function createLogger(destination: DestinationStream = pino.destination({ fd: 2, sync: true }), level = 'info'): Logger {
  return pino(
    {
      level,
      redact: { paths: REDACT_PATHS, censor: '********' },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: {
        level: (label) => ({ level: label }),
        log: (fields) => maskDeep(fields) as Record<string, unknown>,
      },
      hooks: {
        // The message (and printf-style arguments) are masked like any other string.
        logMethod(args, method) {
          method.apply(this, args.map((a) => (typeof a === 'string' ? maskSecrets(a) : a)) as Parameters<typeof method>);
        },
      },
    },
    destination,
  );
}

/** Where this process's log goes; swapped by the functions below, so loggers held anywhere follow. */
let target: DestinationStream | undefined;
const processDestination: DestinationStream = { write: (line: string) => (target ??= pino.destination({ fd: 2, sync: true })).write(line) };
let processLogger: Logger | undefined;

/** This process's logger. */
export function log(): Logger {
  return (processLogger ??= createLogger(processDestination));
}

/**
 * Pretty, coloured lines instead of JSON when stderr is a terminal (a person reads it, no parser).
 * Called once at a program's start; pino-pretty is loaded only then, so a worker under systemd or
 * in a container (never a terminal) does not load it.
 */
export async function prettyLogsOnTerminal(): Promise<void> {
  if (!process.stderr.isTTY) return;
  // The compute worker's bundle leaves pino-pretty out (a VM has no terminal): JSON there.
  const pretty = await import('pino-pretty').then((m) => m.default).catch(() => undefined);
  if (pretty === undefined) return;
  target = pretty({ destination: 2, sync: true, colorize: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' });
}

/** Appends this process's log to `file` from now on, as JSON lines (the main job: the terminal keeps a few human lines). */
export function logToFile(file: string): void {
  target = pino.destination({ dest: file, append: true, mkdir: true, sync: true });
}

let consoleLogged = false;

/** console.* of this process (a worker, a dev server) as log lines: log and info at info, warn at warn, error at error. */
export function consoleToLog(): void {
  if (consoleLogged) return;
  consoleLogged = true;
  const level = { log: 'info', info: 'info', warn: 'warn', error: 'error', debug: 'debug' } as const;
  for (const name of ['log', 'info', 'warn', 'error', 'debug'] as const) {
    console[name] = (...args: unknown[]) => log()[level[name]](formatWithOptions({ colors: false }, ...args));
  }
  // Process warnings (a deprecation, a library's notice) too, instead of Node's own lines on stderr.
  process.removeAllListeners('warning');
  process.on('warning', (warning: Error & { code?: string }) => log().warn({ warning: warning.name, ...(warning.code ? { code: warning.code } : {}) }, warning.message));
}

/**
 * Third-party banners that tell a person nothing they can act on while running this program. Only
 * each library's own documented switch, and only if the environment does not set it already:
 *
 * - the AWS SDK's NodeVersionSupportWarning (future SDK releases will want Node 22; this program
 *   supports Node >= 20.3 and pins its SDK), switched off by AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED
 *   (https://github.com/aws/aws-sdk-js-v3/issues/7983). Every other process warning still shows.
 */
export function quietThirdPartyBanners(env: NodeJS.ProcessEnv = process.env): void {
  env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
}
