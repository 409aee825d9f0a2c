/**
 * Connections to the compute's Postgres for the cache backends: one per database, each knowing
 * its backend pid so a running statement can be cancelled with pg_cancel_backend.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';

/** Opens a connected client to `database` on the compute's Postgres (superuser or equivalent). */
export type ConnectFn = (database: string) => Promise<pg.Client>;

export interface Session {
  database: string;
  client: pg.Client;
  pid: number;
  close(): Promise<void>;
}

export async function openSession(connect: ConnectFn, database: string): Promise<Session> {
  const client = await connect(database);
  // A backend that dies (e.g. terminated by the server) emits 'error' on an idle client; without
  // a listener that would crash the worker. The next query on it fails and reports it.
  client.on('error', () => undefined);
  try {
    // Our statements name only pg_catalog objects or schema-qualified ones, so nothing earlier in
    // a user's search_path can stand in for them; a role's statement_timeout must not cut a
    // long prewarm call short either (cancellation is ours to do).
    const { rows } = await client.query<{ pid: number }>(
      `select pg_backend_pid() as pid, set_config('search_path', 'pg_catalog, pg_temp', false), set_config('statement_timeout', '0', false)`,
    );
    const pid = rows[0]!.pid;
    let closed = false;
    return {
      database,
      client,
      pid,
      async close() {
        if (closed) return;
        closed = true;
        await client.end().catch(() => undefined);
      },
    };
  } catch (err) {
    await client.end().catch(() => undefined);
    throw err;
  }
}

/** The error to throw when `signal` aborted: its reason if that is an Error. */
export function abortError(signal: AbortSignal): Error {
  const reason: unknown = signal.reason;
  if (reason instanceof Error) return reason;
  const err = new Error(typeof reason === 'string' ? reason : 'operation cancelled');
  err.name = 'AbortError';
  return err;
}

export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw abortError(signal);
}

const QUERY_CANCELED = '57014';

/**
 * Runs a statement on `session`. If `signal` aborts meanwhile, asks the server to cancel it
 * (pg_cancel_backend through a separate short-lived connection), repeating until the statement
 * ends, since a cancel that lands just before the statement starts is lost; then throws the
 * abort reason. The session stays usable afterwards.
 */
export async function cancellableQuery<R extends pg.QueryResultRow>(
  session: Session,
  text: string,
  values: unknown[],
  signal: AbortSignal | undefined,
  cancelVia: () => Promise<Session>,
): Promise<pg.QueryResult<R>> {
  throwIfAborted(signal);
  const running = session.client.query<R>(text, values);
  if (!signal) return running;
  let settled = false;
  const done = running.then(
    () => undefined,
    () => undefined,
  );
  const onAbort = () => {
    void (async () => {
      let canceller: Session | undefined;
      try {
        canceller = await cancelVia();
        while (!settled) {
          await canceller.client.query('select pg_cancel_backend($1)', [session.pid]);
          await Promise.race([done, sleep(250)]);
        }
      } catch {
        // The statement ends on its own or the session breaks; either settles `running`.
      } finally {
        await canceller?.close();
      }
    })();
  };
  signal.addEventListener('abort', onAbort, { once: true });
  try {
    return await running;
  } catch (err) {
    if (signal.aborted && (err as { code?: string }).code === QUERY_CANCELED) throw abortError(signal);
    throw err;
  } finally {
    settled = true;
    signal.removeEventListener('abort', onAbort);
  }
}

/**
 * Creates `extension` in the session's database unless it exists, and returns its schema, quoted,
 * so callers name its objects schema-qualified (a same-named function earlier in search_path
 * must not shadow them). Checked first, so a database that already has it needs no CREATE
 * privilege (and a hot standby, which refuses every CREATE, still works); a concurrent creator
 * winning the race is fine.
 */
export async function ensureExtension(session: Session, extension: string): Promise<string> {
  const schema = async () =>
    (await session.client.query<{ schema: string }>('select n.nspname as schema from pg_extension e join pg_namespace n on n.oid = e.extnamespace where e.extname = $1', [extension])).rows[0]
      ?.schema;
  let found = await schema();
  if (found === undefined) {
    try {
      // Explicit schema: our sessions' search_path is pg_catalog only. public is where a plain
      // CREATE EXTENSION puts it under the default search_path.
      await session.client.query(`create extension if not exists ${session.client.escapeIdentifier(extension)} with schema public`);
    } catch (err) {
      found = await schema().catch(() => undefined);
      if (found === undefined) throw new Error(`cannot create extension ${extension} in database ${JSON.stringify(session.database)}: ${(err as Error).message}`);
    }
    found ??= await schema();
    if (found === undefined) throw new Error(`extension ${extension} is missing in database ${JSON.stringify(session.database)} after CREATE EXTENSION`);
  }
  return session.client.escapeIdentifier(found);
}
