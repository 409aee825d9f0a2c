import type pg from 'pg';
import { clientWithKillSwitch } from './conninfo';
import { classifyPgError, StorageError } from './errors';

export interface ExchangeOptions {
  /** Names the server in errors, e.g. "pageserver 127.0.0.1:6400". */
  what: string;
  /** For the connection and the answer alike. */
  timeoutMs: number;
  /** What the timeout error says, after `what`. */
  timeoutMessage: string;
  signal?: AbortSignal;
}

/**
 * One libpq exchange with a storage server on a client of our own: connect, `exchange`, end.
 * A timeout or an abort cuts the socket at once and is the error (kind `timeout` or `aborted`);
 * any other failure is classified with the phase it happened in. A StorageError thrown by
 * `exchange` itself (an answer it refuses) passes through as it is.
 */
export async function oneExchange<T>(config: pg.ClientConfig, opts: ExchangeOptions, exchange: (client: pg.Client) => Promise<T>): Promise<T> {
  const { what } = opts;
  if (opts.signal?.aborted) throw new StorageError('aborted', `${what}: aborted before it began`, { cause: opts.signal.reason });
  const { client, kill } = clientWithKillSwitch(config);
  let verdict: StorageError | undefined;
  const giveUp = (err: StorageError) => {
    verdict ??= err;
    kill();
  };
  const timer = setTimeout(() => giveUp(new StorageError('timeout', `${what}: ${opts.timeoutMessage} within ${opts.timeoutMs} ms`)), opts.timeoutMs);
  const onAbort = () => giveUp(new StorageError('aborted', `${what}: aborted`, { cause: opts.signal?.reason }));
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  let phase: 'connect' | 'query' = 'connect';
  try {
    await client.connect();
    phase = 'query';
    return await exchange(client);
  } catch (err) {
    if (verdict) throw verdict;
    throw classifyPgError(err, what, phase);
  } finally {
    clearTimeout(timer);
    opts.signal?.removeEventListener('abort', onAbort);
    await client.end().catch(() => undefined);
    kill();
  }
}
