/**
 * What a compute needs from its storage backend, beyond the pageserver basebackup: extra
 * postgresql.conf and pg_hba.conf lines, something to start once Postgres is up, and the command
 * that makes the safekeepers agree on where the WAL ends.
 *
 * - `neon`: Neon's Postgres with the neon extension; walproposer inside Postgres pushes WAL and
 *   `postgres --sync-safekeepers` syncs. This backend only emits Neon's GUCs (the control plane puts
 *   neon into shared_preload_libraries and sets neon.pageserver_connstring).
 * - `stock`: stock PostgreSQL 15; a WAL pusher sidecar emulates walproposer through synchronous
 *   physical replication, and a Node sync command stands in for --sync-safekeepers.
 */
export type ComputeMode = 'Primary' | 'Replica' | 'Static';

export interface PostgresConfContext {
  tenantId: string;
  timelineId: string;
  /** host:port of each safekeeper's libpq listener. */
  safekeepers: string[];
  mode: ComputeMode;
}

export interface PostgresReadyContext {
  pgdata: string;
  socketDir?: string;
  port: number;
  tenantId: string;
  timelineId: string;
  safekeepers: string[];
  /** Password for the safekeepers (the spec's storage_auth_token). */
  authToken?: string;
  /** Defaults to Primary; only a Primary pushes WAL. */
  mode?: ComputeMode;
  /** Role the stock WAL pusher connects as (superuser or REPLICATION); default cloud_admin. */
  superuser?: string;
}

export interface ComputeStorageBackend {
  name: 'stock' | 'neon';
  /** Lines appended to postgresql.conf. */
  postgresqlConf(ctx: PostgresConfContext): string;
  /** Lines for pg_hba.conf; put them before any broader rule so they match first. */
  hbaLines(): string[];
  /** Runs once Postgres accepts connections (stock: starts the WAL pusher, idempotently). */
  afterPostgresReady(ctx: PostgresReadyContext): Promise<void>;
  /**
   * argv of the command that syncs the safekeepers and prints the LSN `X/Y` on stdout. Append
   * `-D <pgdata>` (or set PGDATA); the storage auth token goes in NEON_AUTH_TOKEN, as for Neon.
   */
  syncSafekeepersCommand(pgBinDir: string): string[];
}
