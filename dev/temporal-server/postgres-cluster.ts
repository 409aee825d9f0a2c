import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { findPostgres, pgBin } from '../../common/pg-binaries';
import { chownForPostgres, pgSpawnIdentity } from '../../common/pg-identity';
import { spawnDetached, stopTracked, waitUntilReady, type TrackedProcess } from '../processes';

/**
 * The PostgreSQL 15 cluster the Temporal server persists to: a private one, initdb'd in the
 * server's directory and started on a loopback port, or one the caller already runs.
 * Either way the password travels only in a pgpass file (mode 0600), never in argv or environment.
 */

const run = promisify(execFile);

/** The role Temporal connects as; on a private cluster it is the bootstrap superuser. */
export const PRIVATE_CLUSTER_USER = 'temporal';

export interface PostgresEndpoint {
  host: string;
  port: number;
  user: string;
  /** libpq password file with this endpoint's password; both lib/pq (the server) and the schema tool read it. */
  passfile: string;
}

export interface PrivateClusterPaths {
  root: string;
  dataDir: string;
  socketDir: string;
  log: string;
  initializedMarker: string;
}

export function privateClusterPaths(serverDir: string): PrivateClusterPaths {
  const root = path.join(serverDir, 'postgres');
  return {
    root,
    dataDir: path.join(root, 'data'),
    socketDir: path.join(root, 'run'),
    log: path.join(root, 'postgres.log'),
    initializedMarker: path.join(root, 'initialized'),
  };
}

/** A line of a pgpass file; `:` and `\` are escaped as libpq wants. */
function pgpassLine(host: string, port: number | '*', user: string, password: string): string {
  const esc = (v: string) => (v === '*' ? v : v.replace(/\\/g, '\\\\').replace(/:/g, '\\:'));
  return `${esc(host)}:${port}:*:${esc(user)}:${esc(password)}\n`;
}

export function writePassfile(file: string, host: string, port: number | '*', user: string, password: string): void {
  writeFileSync(file, pgpassLine(host, port, user, password), { mode: 0o600 });
  // libpq ignores a password file others can read; an existing file keeps its old mode on rewrite.
  chmodSync(file, 0o600);
}

/**
 * initdb into `<serverDir>/postgres/data` unless an earlier initdb completed there. The password
 * is random and lands only in `passfile`.
 */
export async function initPrivateCluster(serverDir: string, passfile: string, pgBinDir?: string): Promise<{ created: boolean }> {
  const paths = privateClusterPaths(serverDir);
  if (existsSync(paths.initializedMarker) && existsSync(path.join(paths.dataDir, 'PG_VERSION')) && existsSync(passfile)) {
    return { created: false };
  }
  const install = findPostgres({ pgBinDir });
  // A data directory without the marker is the remains of an interrupted initdb.
  rmSync(paths.dataDir, { recursive: true, force: true });
  mkdirSync(paths.socketDir, { recursive: true, mode: 0o700 });
  chmodSync(paths.root, 0o755);
  chownForPostgres(paths.root);
  const password = randomBytes(24).toString('hex');
  const pwfile = path.join(paths.root, 'initdb.pwfile');
  writeFileSync(pwfile, `${password}\n`, { mode: 0o600 });
  chownForPostgres(pwfile, false);
  try {
    await run(
      pgBin(install, 'initdb'),
      ['-D', paths.dataDir, '-U', PRIVATE_CLUSTER_USER, '-E', 'UTF8', '--locale', 'C', '--auth-local', 'trust', '--auth-host', 'scram-sha-256', '--pwfile', pwfile],
      { ...pgSpawnIdentity(), env: { PATH: process.env.PATH ?? '/usr/bin:/bin', LC_ALL: 'C' }, timeout: 300_000 },
    );
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`initdb into ${paths.dataDir} failed: ${(e.stderr || e.message).trim()}`);
  } finally {
    rmSync(pwfile, { force: true });
  }
  // Any host and port: the port is chosen at each start (postgresql.auto.conf).
  writePassfile(passfile, '*', '*', PRIVATE_CLUSTER_USER, password);
  writeFileSync(paths.initializedMarker, new Date().toISOString());
  return { created: true };
}

/** Connects with the pgpass file's password, as Temporal will; resolves once a query answers. */
export async function probePostgres(endpoint: PostgresEndpoint, database = 'postgres'): Promise<void> {
  const password = readPassfilePassword(endpoint.passfile);
  const client = new pg.Client({ host: endpoint.host, port: endpoint.port, user: endpoint.user, password, database, connectionTimeoutMillis: 2000 });
  await client.connect();
  try {
    await client.query('SELECT 1');
  } finally {
    await client.end();
  }
}

/** The password of a one-line pgpass file this module wrote. */
export function readPassfilePassword(passfile: string): string {
  const line = readFileSync(passfile, 'utf8').split('\n')[0] ?? '';
  const fields: string[] = [];
  let current = '';
  for (let i = 0; i < line.length; i++) {
    if (line[i] === '\\' && i + 1 < line.length) current += line[++i];
    else if (line[i] === ':') {
      fields.push(current);
      current = '';
    } else current += line[i];
  }
  fields.push(current);
  if (fields.length !== 5) throw new Error(`${passfile} is not a one-line pgpass file`);
  return fields[4]!;
}

/**
 * Starts the private cluster on `host:port` (loopback), as the PostgreSQL user when we are root.
 * Durable settings (fsync on): Temporal's data must survive a crash as in production.
 */
export async function startPrivateCluster(serverDir: string, endpoint: PostgresEndpoint, pgBinDir?: string): Promise<TrackedProcess> {
  const install = findPostgres({ pgBinDir });
  const paths = privateClusterPaths(serverDir);
  const conf: Record<string, string> = {
    listen_addresses: `'${endpoint.host}'`,
    port: String(endpoint.port),
    unix_socket_directories: `'${paths.socketDir}'`,
    // Four services in one process, each with its own pools (up to 20 + 2 per store).
    max_connections: '200',
    logging_collector: 'off',
  };
  const autoConf = path.join(paths.dataDir, 'postgresql.auto.conf');
  writeFileSync(
    autoConf,
    Object.entries(conf)
      .map(([k, v]) => `${k} = ${v}\n`)
      .join(''),
  );
  chownForPostgres(autoConf, false);
  const proc = spawnDetached(pgBin(install, 'postgres'), ['-D', paths.dataDir], {
    log: paths.log,
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', LC_ALL: 'C' },
    ...pgSpawnIdentity(),
  });
  try {
    await waitUntilReady('the Temporal server\'s PostgreSQL', proc, () => probePostgres(endpoint), 120_000);
  } catch (err) {
    await stopPrivateCluster(proc);
    throw err;
  }
  return proc;
}

/** Fast shutdown (SIGINT): open transactions roll back, everything committed stays. */
export async function stopPrivateCluster(proc: TrackedProcess): Promise<void> {
  await stopTracked(proc, 60_000, 'SIGINT');
}
