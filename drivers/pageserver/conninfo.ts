import net from 'node:net';
import pg from 'pg';
import { maskSecrets } from '../../common/errors';
import { ConnstringError, parseKeyValueConninfo } from '../conninfo';

/**
 * libpq connection strings as the control plane writes them for storage (`postgresql://user@host:port`
 * or `host=... port=...`), turned into `pg` client settings. Every setting is explicit so the `pg`
 * library never fills gaps from this process's PG* environment variables or ~/.pgpass: a compute
 * talks to storage with exactly what its spec says.
 */

export interface Conninfo {
  host: string;
  port: number;
  user?: string;
  password?: string;
  database?: string;
  options?: string;
  applicationName?: string;
  sslmode?: string;
  connectTimeoutSeconds?: number;
}

export class ConninfoError extends Error {
  override name = 'ConninfoError';
}

const KNOWN_KEYS = new Set(['host', 'hostaddr', 'port', 'user', 'password', 'dbname', 'options', 'application_name', 'sslmode', 'connect_timeout']);
const SSL_MODES = new Set(['disable', 'allow', 'prefer', 'require', 'verify-ca', 'verify-full']);

function fromPairs(pairs: Map<string, string>, shown: string): Conninfo {
  for (const key of pairs.keys()) {
    if (!KNOWN_KEYS.has(key)) throw new ConninfoError(`unsupported connection option ${JSON.stringify(key)} in ${shown}`);
  }
  const host = pairs.get('hostaddr') || pairs.get('host');
  if (!host) throw new ConninfoError(`connection string has no host: ${shown}`);
  if (host.includes(',')) throw new ConninfoError(`connection string names several hosts; give one: ${shown}`);
  const portText = pairs.get('port') || '5432';
  const port = Number(portText);
  if (!/^\d{1,5}$/.test(portText) || port < 1 || port > 65535) throw new ConninfoError(`invalid port ${JSON.stringify(portText)} in ${shown}`);
  const sslmode = pairs.get('sslmode');
  if (sslmode !== undefined && !SSL_MODES.has(sslmode)) throw new ConninfoError(`invalid sslmode ${JSON.stringify(sslmode)} in ${shown}`);
  const timeout = pairs.get('connect_timeout');
  if (timeout !== undefined && !/^\d+$/.test(timeout)) throw new ConninfoError(`invalid connect_timeout ${JSON.stringify(timeout)} in ${shown}`);
  const info: Conninfo = { host, port };
  const optional: [keyof Conninfo, string][] = [
    ['user', 'user'],
    ['password', 'password'],
    ['database', 'dbname'],
    ['options', 'options'],
    ['applicationName', 'application_name'],
  ];
  for (const [field, key] of optional) {
    const v = pairs.get(key);
    if (v !== undefined && v !== '') (info as unknown as Record<string, string>)[field] = v;
  }
  if (sslmode) info.sslmode = sslmode;
  if (timeout !== undefined && Number(timeout) > 0) info.connectTimeoutSeconds = Number(timeout);
  return info;
}

function parseUrl(text: string, shown: string): Conninfo {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new ConninfoError(`malformed connection URL (several hosts are not supported): ${shown}`);
  }
  const pairs = new Map<string, string>();
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
  if (host) pairs.set('host', decodeURIComponent(host));
  if (url.port) pairs.set('port', url.port);
  if (url.username) pairs.set('user', decodeURIComponent(url.username));
  if (url.password) pairs.set('password', decodeURIComponent(url.password));
  const db = url.pathname.replace(/^\//, '');
  if (db) pairs.set('dbname', decodeURIComponent(db));
  for (const [k, v] of url.searchParams) pairs.set(k, v);
  return fromPairs(pairs, shown);
}

/** libpq's keyword/value syntax: `key = value`, values bare or single-quoted with backslash escapes. */
function parseKeywords(text: string, shown: string): Conninfo {
  let pairs: [string, string][];
  try {
    pairs = parseKeyValueConninfo(text);
  } catch (err) {
    if (!(err instanceof ConnstringError)) throw err;
    if (err.message.startsWith('Unterminated')) throw new ConninfoError(`unterminated quoted value in connection string: ${shown}`);
    throw new ConninfoError(`malformed connection string (expected key=value): ${shown}`);
  }
  return fromPairs(new Map(pairs), shown);
}

export function parseConninfo(connstring: string): Conninfo {
  const text = connstring.trim();
  const shown = JSON.stringify(maskSecrets(text));
  if (!text) throw new ConninfoError('empty connection string');
  if (/^postgres(ql)?:\/\//i.test(text)) return parseUrl(text, shown);
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(text)) throw new ConninfoError(`not a libpq connection string: ${shown}`);
  return parseKeywords(text, shown);
}

/**
 * The first shard's connection string of a (possibly sharded, comma separated) pageserver
 * connection string: base backups always come from shard 0.
 */
export function shardZeroConnstring(connstring: string): string {
  const first = connstring.split(',')[0]?.trim() ?? '';
  if (!first) throw new ConninfoError('empty pageserver connection string');
  return first;
}

export interface PgSettings {
  /** Replaces any password of the connection string (compute_ctl does the same with storage_auth_token). */
  password?: string;
  applicationName?: string;
  /** Appended to the connection string's own options. */
  extraOptions?: string;
  connectTimeoutMs?: number;
}

/** `pg` client settings for `info`; nothing is left for `pg` to take from the environment. */
export function pgClientConfig(info: Conninfo, settings: PgSettings = {}): pg.ClientConfig {
  const password = settings.password ?? info.password;
  const user = info.user ?? 'no_user';
  const options = [info.options, settings.extraOptions].filter((o) => o && o.trim()).join(' ');
  const sslmode = info.sslmode ?? 'disable';
  const ssl: pg.ClientConfig['ssl'] =
    sslmode === 'require' ? { rejectUnauthorized: false } : sslmode === 'verify-ca' || sslmode === 'verify-full' ? true : false;
  const timeoutMs = settings.connectTimeoutMs ?? (info.connectTimeoutSeconds ? info.connectTimeoutSeconds * 1000 : undefined);
  return {
    host: info.host,
    port: info.port,
    user,
    database: info.database ?? user,
    // A function: `pg` then never looks for PGPASSWORD or ~/.pgpass, and a server asking for a
    // password we do not have gets a clear error instead of an empty one.
    password: () => {
      if (password === undefined) throw new Error(`server at ${info.host}:${info.port} asks for a password and no storage auth token was given`);
      return password;
    },
    application_name: settings.applicationName ?? info.applicationName ?? 'compute_ctl',
    ...(options ? { options } : {}),
    ssl,
    ...(timeoutMs ? { connectionTimeoutMillis: timeoutMs } : {}),
    keepAlive: true,
  };
}

/**
 * A `pg` client on a socket we own, so a hung or abandoned exchange can be cut off at once:
 * `pg`'s own end() only half-closes a connection that is still starting up, which leaves the
 * socket open for as long as a silent server keeps it.
 */
export function clientWithKillSwitch(config: pg.ClientConfig): { client: pg.Client; kill(): void } {
  const socket = new net.Socket();
  const client = new pg.Client({ ...config, stream: () => socket });
  // Failures reach callers through connect() and queries; this keeps a late socket error from crashing the process.
  client.on('error', () => undefined);
  return { client, kill: () => socket.destroy() };
}
