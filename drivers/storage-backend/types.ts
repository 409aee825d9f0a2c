/**
 * What a compute needs from its storage backend, beyond the pageserver basebackup: extra
 * postgresql.conf settings and pg_hba.conf lines, something to start once Postgres is up, and the command
 * that makes the safekeepers agree on where the WAL ends.
 *
 * - `neon`: Neon's Postgres with the neon extension; walproposer inside Postgres pushes WAL and
 *   `postgres --sync-safekeepers` syncs. This backend needs no settings of its own (the control plane
 *   puts neon into shared_preload_libraries; the spec gives the neon.* settings).
 * - `stock`: stock PostgreSQL 15; a WAL pusher sidecar emulates walproposer through synchronous
 *   physical replication, and a Node sync command stands in for --sync-safekeepers.
 */
import { confLine, storageIdentityConf, type ConfSetting } from '../postgres/config';

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
  /**
   * The settings this backend needs, as data; drivers/postgres/config.ts writes them into a
   * compute's postgresql.conf (the storage identity, neon.safekeepers included, comes from the spec).
   */
  postgresqlSettings(ctx: PostgresConfContext): ConfSetting[];
  /**
   * postgresql.conf lines for a Postgres started without a compute spec (a test's or a tool's
   * throwaway server): the storage identity and postgresqlSettings, rendered by the same writer.
   */
  postgresqlConf(ctx: PostgresConfContext): string;
  /** Lines for pg_hba.conf; put them before any broader rule so they match first. */
  hbaLines(): string[];
  /**
   * Runs just before Postgres is started, so a companion boots while Postgres does (stock: the
   * WAL pusher, which then waits for afterPostgresReady to give it its password). Optional.
   */
  beforePostgresStart?(ctx: Omit<PostgresReadyContext, 'socketDir' | 'port'>): void;
  /** Runs once Postgres accepts connections (stock: starts the WAL pusher, idempotently). */
  afterPostgresReady(ctx: PostgresReadyContext): Promise<void>;
  /**
   * argv of the command that syncs the safekeepers and prints the LSN `X/Y` on stdout. Append
   * `-D <pgdata>` (or set PGDATA); the storage auth token goes in NEON_AUTH_TOKEN, as for Neon.
   */
  syncSafekeepersCommand(pgBinDir: string): string[];
  /**
   * Exit statuses of that command that no retry can change (stock: the timeline is unknown to a
   * quorum of safekeepers), so the start fails at once with the command's own message.
   */
  readonly permanentSyncExitCodes: readonly number[];
}

/** The storage identity and the backend's settings as postgresql.conf text (see postgresqlConf). */
export function bareServerConf(settings: ConfSetting[], ctx: PostgresConfContext): string {
  return `${[storageIdentityConf(ctx), ...settings.map(confLine)].join('\n')}\n`;
}
