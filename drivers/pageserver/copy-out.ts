import { Transform, type Readable, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { to as copyTo } from 'pg-copy-streams';
import { classifyPgError, StorageError } from './errors';
import { clientWithKillSwitch, parseConninfo, pgClientConfig } from './conninfo';

/**
 * One libpq command answered with COPY OUT (a pageserver's `basebackup`, or any `COPY ... TO
 * STDOUT`), streamed to a consumer with backpressure: the socket is only read as fast as the
 * consumer takes the data, so nothing piles up in memory however big the stream is.
 */

export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
/**
 * Longest silence tolerated once connected. Generous: a pageserver asked for an LSN it has not
 * received yet waits for the WAL (a minute by default) before it sends anything.
 */
export const DEFAULT_IDLE_TIMEOUT_MS = 120_000;

export interface CopyOutOptions {
  connstring: string;
  command: string;
  /** Overrides the connection string's password (the storage auth token). */
  password?: string;
  applicationName?: string;
  /** Appended to the connection's `options` (e.g. `-c neon.compute_mode=primary`). */
  extraOptions?: string;
  connectTimeoutMs?: number;
  idleTimeoutMs?: number;
  signal?: AbortSignal;
  /** Called with the running total of bytes received. */
  onBytes?: (received: number) => void;
  /** Names the server in errors, e.g. "pageserver". */
  serverLabel?: string;
}

export interface CopyOutResult<T> {
  result: T;
  /** From the start of the attempt until the connection was ready (compute_ctl's pageserver_connect_micros). */
  connectMicros: number;
  /** COPY payload bytes received on the wire. */
  bytes: number;
  elapsedMs: number;
}

/** Counts the bytes going through and proves the stream is alive for the idle timer. */
class ByteCounter extends Transform {
  bytes = 0;
  constructor(private readonly onChunk: (total: number) => void) {
    super();
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.bytes += chunk.length;
    this.onChunk(this.bytes);
    cb(null, chunk);
  }
}

/** pg's hooks on a submitted query (its "submittable" interface), used to learn how the query ended. */
interface QueryHooks {
  handleError(err: Error): void;
  handleReadyForQuery(): void;
}

/**
 * Connects, runs `command`, hands the COPY data to `consume` and waits for the server to confirm
 * the command succeeded. `consume` must read its input to the end (or fail). Errors are
 * StorageErrors, except those `consume` throws itself, which are passed through unchanged.
 */
export async function runCopyOut<T>(opts: CopyOutOptions, consume: (data: Readable) => Promise<T>): Promise<CopyOutResult<T>> {
  const info = parseConninfo(opts.connstring);
  const what = `${opts.serverLabel ?? 'server'} ${info.host}:${info.port}`;
  const connectTimeoutMs = opts.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
  const idleTimeoutMs = opts.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS;
  if (opts.signal?.aborted) throw new StorageError('aborted', `${what}: aborted before connecting`, { cause: opts.signal.reason });

  const started = performance.now();
  const { client, kill } = clientWithKillSwitch(
    pgClientConfig(info, {
      ...(opts.password !== undefined ? { password: opts.password } : {}),
      ...(opts.applicationName !== undefined ? { applicationName: opts.applicationName } : {}),
      ...(opts.extraOptions !== undefined ? { extraOptions: opts.extraOptions } : {}),
      connectTimeoutMs,
    }),
  );
  opts.signal?.addEventListener('abort', kill, { once: true });
  try {
    await client.connect();
  } catch (err) {
    kill();
    if (opts.signal?.aborted) throw new StorageError('aborted', `${what}: aborted while connecting`, { cause: opts.signal.reason });
    throw classifyPgError(err, what, 'connect');
  } finally {
    opts.signal?.removeEventListener('abort', kill);
  }
  const connectMicros = Math.round((performance.now() - started) * 1000);

  const copy = copyTo(opts.command);
  /** Why we tore the stream down ourselves (idle timeout, abort); wins over the consequences. */
  let ownVerdict: StorageError | undefined;
  /** The server's error (or the connection's end) as pg reported it to the query. */
  let queryError: Error | undefined;
  const completed = new Promise<void>((resolve, reject) => {
    const hooks = copy as unknown as QueryHooks;
    const handleError = hooks.handleError.bind(copy);
    hooks.handleError = (err: Error) => {
      queryError ??= err;
      reject(err);
      handleError(err);
    };
    hooks.handleReadyForQuery = () => resolve();
  });
  completed.catch(() => undefined);

  // Fails when we give up (idle timeout, abort): also covers the wait for ReadyForQuery after the data.
  let giveUp: (err: StorageError) => void = () => undefined;
  const watchdog = new Promise<never>((_resolve, reject) => {
    giveUp = reject;
  });
  watchdog.catch(() => undefined);
  const stop = (verdict: StorageError) => {
    ownVerdict ??= verdict;
    copy.destroy(ownVerdict);
    giveUp(ownVerdict);
  };
  let idleTimer: NodeJS.Timeout | undefined;
  const armIdle = () => {
    clearTimeout(idleTimer);
    idleTimer = setTimeout(() => stop(new StorageError('timeout', `${what} sent nothing for ${idleTimeoutMs} ms`)), idleTimeoutMs);
  };
  const onAbort = () => stop(new StorageError('aborted', `${what}: aborted`, { cause: opts.signal?.reason }));
  opts.signal?.addEventListener('abort', onAbort, { once: true });

  const counter = new ByteCounter((total) => {
    armIdle();
    opts.onBytes?.(total);
  });
  let consumeError: unknown;
  let consumeFailedFirst = false;
  let succeeded = false;
  try {
    armIdle();
    client.query(copy);
    const transport = pipeline(copy, counter);
    const consuming = consume(counter).catch((err: unknown) => {
      consumeError = err;
      if (queryError === undefined && ownVerdict === undefined) consumeFailedFirst = true;
      counter.destroy();
      copy.destroy();
      throw err;
    });
    const [transportOutcome, consumeOutcome] = await Promise.allSettled([transport, consuming]);
    if (transportOutcome.status === 'fulfilled' && consumeOutcome.status === 'fulfilled') {
      // The data ended with CopyDone; the server may still report a failure before ReadyForQuery.
      await Promise.race([completed, watchdog]);
      succeeded = true;
      clearTimeout(idleTimer);
      return { result: consumeOutcome.value, connectMicros, bytes: counter.bytes, elapsedMs: performance.now() - started };
    }
    if (consumeFailedFirst) throw consumeError;
    if (ownVerdict) throw ownVerdict;
    if (queryError) throw classifyPgError(queryError, what, 'query');
    if (consumeOutcome.status === 'rejected') throw consumeError;
    throw classifyPgError(transportOutcome.status === 'rejected' ? transportOutcome.reason : new Error('COPY ended abnormally'), what, 'query');
  } catch (err) {
    if (err === consumeError || err instanceof StorageError) throw err;
    if (ownVerdict) throw ownVerdict;
    throw classifyPgError(err, what, 'query');
  } finally {
    clearTimeout(idleTimer);
    opts.signal?.removeEventListener('abort', onAbort);
    // A failed exchange is cut off at once rather than waiting for the rest of the stream.
    if (!succeeded) kill();
    await client.end().catch(() => undefined);
  }
}
