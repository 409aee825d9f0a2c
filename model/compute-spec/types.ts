/** The parsed compute spec's types: what the rest of the code reads (see ../compute-spec.ts for the normalization). */

export type ComputeMode = { kind: 'Primary' } | { kind: 'Static'; lsn: string } | { kind: 'Replica' };

export interface GenericOption {
  name: string;
  value?: string;
  vartype: string;
}

export interface Role {
  name: string;
  /** `md5<32 hex>`, `SCRAM-SHA-256$…`, or absent (the role gets PASSWORD NULL). */
  encrypted_password?: string;
  options?: GenericOption[];
}

export interface Database {
  name: string;
  owner: string;
  options?: GenericOption[];
}

export interface Cluster {
  cluster_id?: string;
  name?: string;
  state?: string;
  roles: Role[];
  databases: Database[];
  postgresql_conf?: string;
  settings?: GenericOption[];
}

export type DeltaAction = 'delete_db' | 'rename_db' | 'delete_role' | 'rename_role';

export interface DeltaOp {
  action: DeltaAction;
  name: string;
  new_name?: string;
}

export interface PageserverInfo {
  id?: number;
  libpq_url?: string;
  grpc_url?: string;
}

export interface PageserverConnectionInfo {
  /** 0 = unsharded (one shard with key "0000"), otherwise the number of shards. */
  shard_count: number;
  stripe_size?: number;
  prefer_protocol: 'libpq' | 'grpc';
  /** Keyed by shard index: two hex digits shard number, two hex digits shard count ("0000", "0104"). */
  shards: Record<string, { pageservers: PageserverInfo[] }>;
}

export interface ComputeSpec {
  format_version: number;
  operation_uuid?: string;
  features: string[];
  suspend_timeout_seconds: number;
  mode: ComputeMode;
  tenant_id: string;
  timeline_id: string;
  pageserver_connection_info: PageserverConnectionInfo;
  /** As given (legacy form); `pageserver_connection_info` is what to use. */
  pageserver_connstring?: string;
  shard_stripe_size?: number;
  safekeeper_connstrings: string[];
  safekeepers_generation?: number;
  storage_auth_token?: string;
  skip_pg_catalog_updates: boolean;
  drop_subscriptions_before_start: boolean;
  reconfigure_concurrency: number;
  cluster: Cluster;
  delta_operations?: DeltaOp[];
  endpoint_id?: string;
  project_id?: string;
  branch_id?: string;
  compute_id?: string;
  autoprewarm: boolean;
  offload_lfc_interval_seconds?: number;
  endpoint_storage_addr?: string;
  endpoint_storage_token?: string;
  /** Written into pgbouncer's ini ([pgbouncer] section) and reloaded, on start and on configure. */
  pgbouncer_settings?: Record<string, string>;
  /** compute_ctl's ComputeAudit; absent = Disabled (drivers/postgres/audit.ts). */
  audit_log_level?: AuditLogLevel;
}

/** compute_ctl's audit levels: Log and Base load pgaudit; Hipaa, Extended and Full are its compliance levels. */
export const AUDIT_LOG_LEVELS = ['Disabled', 'Log', 'Base', 'Hipaa', 'Extended', 'Full'] as const;
export type AuditLogLevel = (typeof AUDIT_LOG_LEVELS)[number];

export interface ComputeCtlConfig {
  /** JSON web keys (EdDSA) that may sign requests to the compute's external API. */
  jwks: { keys: Record<string, unknown>[] };
  tls?: unknown;
}

export interface ComputeConfig {
  spec: ComputeSpec;
  compute_ctl_config: ComputeCtlConfig;
}

export type ParseResult = { ok: true; config: ComputeConfig } | { ok: false; errors: string[] };
