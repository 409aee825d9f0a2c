import { writeFileAtomicSync } from '../../common/atomic-write';
import { chmodSync, existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Connection } from '@temporalio/client';
import { msToTs } from '@temporalio/common/lib/time';
import proto from '@temporalio/proto';
import { UserFacingError } from '../../common/errors';
import { SEARCH_ATTRIBUTES } from '../../model/search-attributes';
import { assertPortFree, freePort, isTrackedAlive, spawnDetached, stopTracked, waitUntilReady, type TrackedProcess } from '../processes';
import { withDirLock } from '../dir-lock';
import { provisionTemporalServer } from './binaries';
import { writeDynamicConfig, writeServerConfig, type ServerPorts } from './config';
import {
  initPrivateCluster,
  PRIVATE_CLUSTER_USER,
  probePostgres,
  startPrivateCluster,
  stopPrivateCluster,
  writePassfile,
  type PostgresEndpoint,
} from './postgres-cluster';
import { applySchemas } from './schema';

/**
 * The Temporal server as production runs it (go.temporal.io/server on PostgreSQL), for local runs:
 * everything lives in one directory (state, config, logs, the private PostgreSQL cluster), data
 * survives a restart, and stopping stops exactly the processes this directory started.
 */

export interface SqlTemporalServerOptions {
  /** Home of its state, config, logs and (unless `postgres` is given) its PostgreSQL cluster. */
  dir: string;
  /** Loopback address everything binds to. */
  host?: string;
  /** Frontend gRPC port; a free one unless given (then kept across restarts). */
  frontendPort?: number;
  namespace?: string;
  /** Fixed at the first start: a cluster's shard count cannot change. */
  numHistoryShards?: number;
  /** The server's log level (debug, info, warn, error). */
  logLevel?: string;
  /** An existing PostgreSQL to use instead of a private cluster; the role must be allowed to create databases. */
  postgres?: { host: string; port: number; user: string; passwordFile: string };
  pgBinDir?: string;
  env?: Record<string, string | undefined>;
  onProgress?: (line: string) => void;
}

export interface SqlTemporalServer {
  /** Frontend gRPC address, host:port. */
  address: string;
  namespace: string;
  /** Prometheus scrape URL (its `action` counter counts billable actions). */
  metricsUrl: string;
  dir: string;
  /** Stops the server, then its private PostgreSQL; the data stays for the next start. */
  stop(): Promise<void>;
}

interface ServerState {
  version: 1;
  host: string;
  namespace: string;
  numHistoryShards: number;
  logLevel: string;
  ports: ServerPorts;
  postgres: { host: string; port: number; user: string; private: boolean };
  processes: { postgres?: TrackedProcess; server?: TrackedProcess };
}

const STATE_FILE = 'temporal-server.json';
/** Upstream's default retention for a new namespace. */
const DEFAULT_NAMESPACE_RETENTION = '3 days';

export const serverFiles = (dir: string) => ({
  state: path.join(dir, STATE_FILE),
  config: path.join(dir, 'config.yaml'),
  dynamicConfig: path.join(dir, 'dynamicconfig.yaml'),
  passfile: path.join(dir, 'pgpass'),
  log: path.join(dir, 'temporal-server.log'),
});

function readState(dir: string): ServerState | undefined {
  const file = serverFiles(dir).state;
  if (!existsSync(file)) return undefined;
  try {
    const state = JSON.parse(readFileSync(file, 'utf8')) as ServerState;
    if (state.version !== 1 || typeof state.ports !== 'object') throw new Error('unknown format');
    return state;
  } catch (err) {
    throw new UserFacingError(`The Temporal server state file ${file} is unreadable (${(err as Error).message}); remove it after checking no server process runs.`);
  }
}

function writeState(dir: string, state: ServerState): void {
  const file = serverFiles(dir).state;
  writeFileAtomicSync(file, JSON.stringify(state, null, 2), { mode: 0o600 });
}

/**
 * A free port below 32768: the PostgreSQL schema keeps a member's membership port in a SMALLINT
 * (cluster_membership.rpc_port), so a kernel-chosen port (32768 and up on Linux) fails the
 * server's first membership heartbeat with "value ... is out of range for type smallint".
 */
async function freeSmallintPort(host: string, taken: number[]): Promise<number> {
  for (let attempt = 0; attempt < 100; attempt++) {
    const port = 20_000 + Math.floor(Math.random() * 12_000);
    if (taken.includes(port)) continue;
    const free = await assertPortFree(host, port, 'probe', '').then(
      () => true,
      () => false,
    );
    if (free) return port;
  }
  throw new Error(`no free port between 20000 and 32000 on ${host}`);
}

async function freshPorts(host: string, frontendPort: number | undefined): Promise<ServerPorts> {
  const taken: number[] = frontendPort === undefined ? [] : [frontendPort];
  const next = async (smallint: boolean) => {
    const port = smallint ? await freeSmallintPort(host, taken) : await freePort(host);
    if (taken.includes(port)) return next(smallint);
    taken.push(port);
    return port;
  };
  return {
    frontendGrpc: frontendPort ?? (await next(false)),
    frontendHttp: await next(false),
    frontendMembership: await next(true),
    historyGrpc: await next(false),
    historyMembership: await next(true),
    matchingGrpc: await next(false),
    matchingMembership: await next(true),
    workerGrpc: await next(false),
    workerMembership: await next(true),
    metrics: await next(false),
  };
}

function endpointOf(state: ServerState, dir: string): PostgresEndpoint {
  return { ...state.postgres, passfile: serverFiles(dir).passfile };
}

async function withConnection<T>(address: string, fn: (c: Connection) => Promise<T>): Promise<T> {
  const connection = await Connection.connect({ address, connectTimeout: '2s' });
  try {
    return await fn(connection);
  } finally {
    await connection.close();
  }
}

function isGrpcCode(err: unknown, code: number): boolean {
  return (err as { code?: number }).code === code;
}
const GRPC_NOT_FOUND = 5;
const GRPC_ALREADY_EXISTS = 6;

/** Registers the namespace and the project's search attributes unless present; returns whether anything was added. */
async function ensureNamespaceAndSearchAttributes(connection: Connection, namespace: string): Promise<boolean> {
  let changed = false;
  try {
    await connection.workflowService.describeNamespace({ namespace });
  } catch (err) {
    if (!isGrpcCode(err, GRPC_NOT_FOUND)) throw err;
    await connection.workflowService
      .registerNamespace({ namespace, workflowExecutionRetentionPeriod: msToTs(DEFAULT_NAMESPACE_RETENTION) })
      .catch((e: unknown) => {
        if (!isGrpcCode(e, GRPC_ALREADY_EXISTS)) throw e;
      });
    changed = true;
  }
  const { customAttributes } = await connection.operatorService.listSearchAttributes({ namespace });
  const types = proto.temporal.api.enums.v1.IndexedValueType;
  const missing = Object.entries(SEARCH_ATTRIBUTES).filter(([name]) => !customAttributes?.[name]);
  if (missing.length > 0) {
    await connection.operatorService.addSearchAttributes({
      namespace,
      searchAttributes: Object.fromEntries(missing.map(([name, type]) => [name, type === 'Keyword' ? types.INDEXED_VALUE_TYPE_KEYWORD : types.INDEXED_VALUE_TYPE_UNSPECIFIED])),
    });
    changed = true;
  }
  return changed;
}

/**
 * Ready means a worker and a client can use the namespace with its search attributes: the
 * frontend lists workflows by every one of them (it resolves their names through its namespace
 * cache, which a fresh registration reaches within its refresh interval).
 */
async function probeReady(address: string, namespace: string): Promise<void> {
  await withConnection(address, async (connection) => {
    await connection.workflowService.getSystemInfo({});
    const query = Object.keys(SEARCH_ATTRIBUTES)
      .map((name) => `${name} = 'readiness-probe'`)
      .join(' AND ');
    await connection.workflowService.listWorkflowExecutions({ namespace, query, pageSize: 1 });
  });
}

async function startPostgres(dir: string, state: ServerState, opts: SqlTemporalServerOptions, onProgress: (l: string) => void): Promise<void> {
  const files = serverFiles(dir);
  const endpoint = endpointOf(state, dir);
  if (!state.postgres.private) {
    const given = opts.postgres;
    if (given) writePassfile(files.passfile, given.host, given.port, given.user, readFileSync(given.passwordFile, 'utf8').trim());
    if (!existsSync(files.passfile)) throw new UserFacingError(`${dir} uses an external PostgreSQL whose password file is gone; start it again with its password file.`);
    await probePostgres(endpoint).catch((err: Error) => {
      throw new UserFacingError(`Cannot connect to PostgreSQL at ${endpoint.host}:${endpoint.port} as ${endpoint.user}: ${err.message}`);
    });
    return;
  }
  if (state.processes.postgres && isTrackedAlive(state.processes.postgres)) return;
  const { created } = await initPrivateCluster(dir, files.passfile, opts.pgBinDir);
  if (created) onProgress(`initialized a PostgreSQL cluster in ${path.join(dir, 'postgres')}`);
  await assertPortFree(state.host, state.postgres.port, 'PostgreSQL for the Temporal server', `stop what uses it, or remove ${files.state} to choose new ports`);
  onProgress(`starting PostgreSQL on ${state.host}:${state.postgres.port}...`);
  state.processes.postgres = await startPrivateCluster(dir, endpoint, opts.pgBinDir);
  writeState(dir, state);
}

function handle(dir: string, state: ServerState): SqlTemporalServer {
  return {
    address: `${state.host}:${state.ports.frontendGrpc}`,
    namespace: state.namespace,
    metricsUrl: `http://${state.host}:${state.ports.metrics}/metrics`,
    dir,
    stop: async () => {
      await stopSqlTemporalServer(dir);
    },
  };
}

/**
 * Starts PostgreSQL (a private cluster unless one is given), applies Temporal's schemas with its
 * SQL tool, starts the server with all four services, and returns once the frontend serves the
 * namespace with the project's search attributes. Idempotent: on a running server it returns
 * the same endpoints.
 */
export async function startSqlTemporalServer(opts: SqlTemporalServerOptions): Promise<SqlTemporalServer> {
  const dir = path.resolve(opts.dir);
  const onProgress = opts.onProgress ?? (() => {});
  return withDirLock(dir, 'The Temporal server', async () => {
    // PostgreSQL runs as an unprivileged user when we are root; it must reach its directory below this one.
    chmodSync(dir, 0o755);
    const host = opts.host ?? '127.0.0.1';
    const previous = readState(dir);
    if (previous?.processes.server && isTrackedAlive(previous.processes.server)) {
      await probeReady(`${previous.host}:${previous.ports.frontendGrpc}`, previous.namespace);
      return handle(dir, previous);
    }
    if (previous && opts.numHistoryShards !== undefined && opts.numHistoryShards !== previous.numHistoryShards) {
      throw new UserFacingError(
        `The Temporal cluster in ${dir} has ${previous.numHistoryShards} history shards; a cluster cannot change that. Use another directory for ${opts.numHistoryShards}.`,
      );
    }
    const postgresPrivate = opts.postgres === undefined && (previous?.postgres.private ?? true);
    const state: ServerState = {
      version: 1,
      host,
      namespace: opts.namespace ?? previous?.namespace ?? 'default',
      numHistoryShards: previous?.numHistoryShards ?? opts.numHistoryShards ?? 4,
      logLevel: opts.logLevel ?? previous?.logLevel ?? 'warn',
      ports:
        previous && previous.host === host
          ? { ...previous.ports, frontendGrpc: opts.frontendPort ?? previous.ports.frontendGrpc }
          : await freshPorts(host, opts.frontendPort),
      postgres: opts.postgres
        ? { host: opts.postgres.host, port: opts.postgres.port, user: opts.postgres.user, private: false }
        : postgresPrivate && previous?.postgres.private
          ? previous.postgres
          : { host, port: await freePort(host), user: PRIVATE_CLUSTER_USER, private: true },
      processes: { postgres: previous?.processes.postgres },
    };
    writeState(dir, state);

    const binaries = await provisionTemporalServer({ env: opts.env, onProgress });
    await startPostgres(dir, state, opts, onProgress);
    await applySchemas(binaries.sqlTool, endpointOf(state, dir), onProgress);

    const files = serverFiles(dir);
    writeServerConfig(files.config, {
      host,
      ports: state.ports,
      postgres: endpointOf(state, dir),
      numHistoryShards: state.numHistoryShards,
      logLevel: state.logLevel,
      dynamicConfigFile: files.dynamicConfig,
    });
    if (!existsSync(files.dynamicConfig)) writeDynamicConfig(files.dynamicConfig);
    for (const [key, port] of Object.entries(state.ports)) {
      await assertPortFree(host, port, `Temporal server ${key}`, `stop what uses it, or remove ${files.state} to choose new ports`);
    }

    onProgress(`starting the Temporal server on ${host}:${state.ports.frontendGrpc}...`);
    const server = spawnDetached(binaries.server, ['--config-file', files.config, '--allow-no-auth', 'start'], {
      log: files.log,
      // Nothing of ours in its environment: it reads all it needs from the config and the pgpass file.
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
      cwd: dir,
    });
    state.processes.server = server;
    writeState(dir, state);
    const address = `${host}:${state.ports.frontendGrpc}`;
    try {
      await waitUntilReady('the Temporal server', server, () => withConnection(address, (c) => c.workflowService.getSystemInfo({}).then(() => undefined)), 120_000);
      // Registration right after start can meet a cluster still taking its shards: retried until ready.
      let lastError: unknown;
      for (let attempt = 0; attempt < 60; attempt++) {
        try {
          const changed = await withConnection(address, (c) => ensureNamespaceAndSearchAttributes(c, state.namespace));
          if (changed) onProgress(`registered namespace ${state.namespace} and its search attributes`);
          lastError = undefined;
          break;
        } catch (err) {
          lastError = err;
          await sleep(500);
        }
      }
      if (lastError) throw lastError;
      await waitUntilReady('the Temporal server (namespace and search attributes)', server, () => probeReady(address, state.namespace), 60_000);
    } catch (err) {
      await stopTracked(server, 30_000);
      throw new UserFacingError((err as Error).message);
    }
    return handle(dir, state);
  });
}

/** Stops the server, then the private PostgreSQL, each only if it is still the process this directory started. */
export async function stopSqlTemporalServer(dir: string): Promise<string[]> {
  const resolved = path.resolve(dir);
  if (!existsSync(resolved)) return [];
  return withDirLock(resolved, 'The Temporal server', async () => {
    const state = readState(resolved);
    if (!state) return [];
    const stopped: string[] = [];
    if (state.processes.server && isTrackedAlive(state.processes.server)) {
      // SIGTERM: the services stop gracefully, releasing their shards.
      await stopTracked(state.processes.server, 30_000);
      stopped.push('temporal-server');
    }
    delete state.processes.server;
    writeState(resolved, state);
    if (state.processes.postgres && isTrackedAlive(state.processes.postgres)) {
      await stopPrivateCluster(state.processes.postgres);
      stopped.push('temporal-postgres');
    }
    delete state.processes.postgres;
    writeState(resolved, state);
    return stopped;
  });
}

export interface SqlTemporalServerStatus {
  dir: string;
  address: string;
  namespace: string;
  metricsUrl: string;
  postgres: string;
  processes: Record<string, { pid: number; running: boolean; log: string }>;
}

export function sqlTemporalServerStatus(dir: string): SqlTemporalServerStatus | undefined {
  const resolved = path.resolve(dir);
  const state = readState(resolved);
  if (!state) return undefined;
  const processes: SqlTemporalServerStatus['processes'] = {};
  if (state.processes.postgres) processes['temporal-postgres'] = { pid: state.processes.postgres.pid, running: isTrackedAlive(state.processes.postgres), log: state.processes.postgres.log };
  if (state.processes.server) processes['temporal-server'] = { pid: state.processes.server.pid, running: isTrackedAlive(state.processes.server), log: state.processes.server.log };
  const h = handle(resolved, state);
  return {
    dir: resolved,
    address: h.address,
    namespace: h.namespace,
    metricsUrl: h.metricsUrl,
    postgres: `${state.postgres.user}@${state.postgres.host}:${state.postgres.port}${state.postgres.private ? ' (private cluster)' : ''}`,
    processes,
  };
}
