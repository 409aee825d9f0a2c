import { maskSecrets } from '../../common/errors';

/**
 * Failures talking to storage (pageserver, safekeepers) over libpq, sorted into kinds a caller can
 * act on: connection problems are worth retrying; an unknown tenant or timeline, a malformed
 * request, a refused credential or a hostile archive are not.
 */

export type StorageErrorKind =
  | 'connection-refused'
  | 'connect-timeout'
  /** No data for longer than the idle timeout once connected. */
  | 'timeout'
  | 'unreachable'
  | 'connection-lost'
  /** The server is shutting down or restarting. */
  | 'unavailable'
  | 'auth'
  | 'not-found'
  | 'bad-request'
  /** Any other error the server reported. */
  | 'server'
  /** The base backup archive was damaged or unsafe. */
  | 'bad-archive'
  | 'too-large'
  /** The local disk refused (permissions, no space). */
  | 'local-io'
  /** The pageserver would not grant an LSN lease: that LSN is garbage-collected. */
  | 'lease-refused'
  | 'aborted';

const PERMANENT: ReadonlySet<StorageErrorKind> = new Set(['auth', 'not-found', 'bad-request', 'bad-archive', 'too-large', 'lease-refused', 'aborted']);

export class StorageError extends Error {
  override name = 'StorageError';
  readonly retryable: boolean;
  constructor(
    readonly kind: StorageErrorKind,
    message: string,
    readonly details: { sqlState?: string; serverMessage?: string; cause?: unknown } = {},
  ) {
    super(maskSecrets(message), details.cause === undefined ? undefined : { cause: details.cause });
    this.retryable = !PERMANENT.has(kind);
  }
}

interface PgLikeError {
  message?: string;
  code?: string;
  severity?: string;
}

function asPgLike(err: unknown): PgLikeError {
  return typeof err === 'object' && err !== null ? (err as PgLikeError) : { message: String(err) };
}

/** An ErrorResponse from the server (pg's DatabaseError) rather than a socket or client failure. */
export function isServerError(err: unknown): boolean {
  const e = asPgLike(err);
  return typeof e.severity === 'string' && typeof e.code === 'string' && /^[0-9A-Z]{5}$/.test(e.code);
}

/**
 * Sorts a server's ErrorResponse. Neon's page service and safekeepers report most failures as
 * XX000 with a telling message ("Not found: Tenant … not found", "Unauthorized: …", "invalid
 * parameter for basebackup command: …"), so the message matters as much as the SQLSTATE.
 */
export function serverErrorKind(sqlState: string, message: string): StorageErrorKind {
  if (sqlState === '28000' || sqlState === '28P01' || /unauthori[sz]ed|authentication failed|permission denied|invalid token|jwt/i.test(message)) {
    return 'auth';
  }
  if (/not found|does not exist|no such (tenant|timeline)|is archived/i.test(message) || sqlState === '3D000' || sqlState === '42704') {
    return 'not-found';
  }
  if (
    /invalid (number of )?param|invalid parameter|duplicate parameter|cannot parse|failed to parse|unsupported command|invalid basebackup lsn|invalid lsn|syntax/i.test(
      message,
    ) ||
    ['42601', '22023', '22P02', '0A000', '08P01'].includes(sqlState)
  ) {
    return 'bad-request';
  }
  if (sqlState.startsWith('57P') || sqlState.startsWith('08') || /shutting down/i.test(message)) return 'unavailable';
  return 'server';
}

/** A StorageError for whatever a libpq exchange with `what` (e.g. "pageserver 127.0.0.1:6400") threw. */
export function classifyPgError(err: unknown, what: string, phase: 'connect' | 'query'): StorageError {
  if (err instanceof StorageError) return err;
  const e = asPgLike(err);
  const message = e.message ?? String(err);
  if (isServerError(err)) {
    const sqlState = e.code!;
    const kind = serverErrorKind(sqlState, message);
    return new StorageError(kind, `${what} reported an error: ${message}`, { sqlState, serverMessage: message, cause: err });
  }
  const code = e.code ?? '';
  if (code === 'ECONNREFUSED') return new StorageError('connection-refused', `${what} refused the connection`, { cause: err });
  if (code === 'ETIMEDOUT' || /timeout expired|connection timeout/i.test(message)) {
    return new StorageError(phase === 'connect' ? 'connect-timeout' : 'timeout', `${what}: ${phase === 'connect' ? 'connecting' : 'request'} timed out`, { cause: err });
  }
  if (['ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL'].includes(code)) {
    return new StorageError('unreachable', `${what} is unreachable (${code})`, { cause: err });
  }
  if (/asks for a password and no storage auth token/.test(message)) return new StorageError('auth', `${what}: ${message}`, { cause: err });
  if (['ECONNRESET', 'EPIPE'].includes(code) || /connection terminated|terminated unexpectedly|socket hang up|closed the connection/i.test(message)) {
    return new StorageError('connection-lost', `${what} closed the connection ${phase === 'connect' ? 'while connecting' : 'mid-request'}: ${message}`, {
      cause: err,
    });
  }
  return new StorageError(phase === 'connect' ? 'connection-lost' : 'server', `${what}: ${message}`, { cause: err });
}
