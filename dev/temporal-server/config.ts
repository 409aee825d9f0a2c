import { writeFileSync } from 'node:fs';
import type { PostgresEndpoint } from './postgres-cluster';

/** The Temporal server's loopback ports: each of the four services has a gRPC and a membership (ringpop) port. */
export interface ServerPorts {
  frontendGrpc: number;
  frontendHttp: number;
  frontendMembership: number;
  historyGrpc: number;
  historyMembership: number;
  matchingGrpc: number;
  matchingMembership: number;
  workerGrpc: number;
  workerMembership: number;
  /** Prometheus scrape endpoint (`/metrics`). */
  metrics: number;
}

export const TEMPORAL_DATABASE = 'temporal';
export const VISIBILITY_DATABASE = 'temporal_visibility';

export interface ServerConfigInput {
  host: string;
  ports: ServerPorts;
  postgres: PostgresEndpoint;
  /** Fixed when the schema is first set up: Temporal cannot change a cluster's shard count later. */
  numHistoryShards: number;
  logLevel: string;
  dynamicConfigFile: string;
}

function sqlStore(input: ServerConfigInput, databaseName: string, maxConns: number) {
  return {
    sql: {
      pluginName: 'postgres12',
      databaseName,
      connectAddr: `${input.postgres.host}:${input.postgres.port}`,
      connectProtocol: 'tcp',
      user: input.postgres.user,
      // No password in this file: lib/pq reads it from the pgpass file (mode 0600).
      connectAttributes: { passfile: input.postgres.passfile },
      maxConns,
      maxIdleConns: maxConns,
      maxConnLifetime: '1h',
    },
  };
}

/**
 * The server's static configuration, shaped like upstream's config/development-postgres12.yaml:
 * PostgreSQL persistence and SQL visibility, the four services in one process on loopback, no TLS,
 * Prometheus metrics on loopback, archival off.
 */
export function serverConfig(input: ServerConfigInput): Record<string, unknown> {
  const { host, ports } = input;
  const service = (grpcPort: number, membershipPort: number, extra: Record<string, unknown> = {}) => ({
    rpc: { grpcPort, membershipPort, bindOnIP: host, ...extra },
  });
  return {
    log: { stdout: true, level: input.logLevel },
    persistence: {
      defaultStore: 'postgres-default',
      visibilityStore: 'postgres-visibility',
      numHistoryShards: input.numHistoryShards,
      datastores: {
        'postgres-default': sqlStore(input, TEMPORAL_DATABASE, 20),
        'postgres-visibility': sqlStore(input, VISIBILITY_DATABASE, 10),
      },
    },
    global: {
      membership: { maxJoinDuration: '30s', broadcastAddress: host },
      metrics: { prometheus: { framework: 'tally', timerType: 'histogram', listenAddress: `${host}:${ports.metrics}` } },
    },
    services: {
      frontend: service(ports.frontendGrpc, ports.frontendMembership, { httpPort: ports.frontendHttp }),
      history: service(ports.historyGrpc, ports.historyMembership),
      matching: service(ports.matchingGrpc, ports.matchingMembership),
      worker: service(ports.workerGrpc, ports.workerMembership),
    },
    clusterMetadata: {
      enableGlobalNamespace: false,
      failoverVersionIncrement: 10,
      masterClusterName: 'active',
      currentClusterName: 'active',
      clusterInformation: {
        active: { enabled: true, initialFailoverVersion: 1, rpcAddress: `${host}:${ports.frontendGrpc}`, httpAddress: `${host}:${ports.frontendHttp}` },
      },
    },
    dcRedirectionPolicy: { policy: 'noop' },
    dynamicConfigClient: { filepath: input.dynamicConfigFile, pollInterval: '10s' },
  };
}

/** JSON is valid YAML, so the file needs no YAML library; mode 0600 like everything else in the directory. */
export function writeServerConfig(file: string, input: ServerConfigInput): void {
  writeFileSync(file, `${JSON.stringify(serverConfig(input), null, 2)}\n`, { mode: 0o600 });
}

/**
 * Dynamic config, production defaults (none overridden): the file is where an operator tunes a
 * running server, and the server re-reads it every 10 s.
 */
export function writeDynamicConfig(file: string): void {
  writeFileSync(file, '{}\n', { mode: 0o600 });
}
