/** Clients for a Neon pageserver: base backups over libpq and the management HTTP API. */
export { basebackupCommand, fetchBasebackup, DEFAULT_BASEBACKUP_MAX_BYTES } from './basebackup';
export type { BasebackupMetrics, ComputeModeType, FetchBasebackupOptions, FetchBasebackupResult } from './basebackup';
export { leaseLsn, leaseLsnCommand } from './lsn-lease';
export type { LeaseLsnOptions } from './lsn-lease';
export { parseConninfo, pgClientConfig, shardZeroConnstring, ConninfoError } from './conninfo';
export type { Conninfo, PgSettings } from './conninfo';
export { runCopyOut, DEFAULT_CONNECT_TIMEOUT_MS, DEFAULT_IDLE_TIMEOUT_MS } from './copy-out';
export type { CopyOutOptions, CopyOutResult } from './copy-out';
export { StorageError, classifyPgError, serverErrorKind } from './errors';
export type { StorageErrorKind } from './errors';
export { StorageHttpError } from './http';
export type { HttpRequestOptions } from './http';
export { createPageserverClient, isPageserverNotFound, PageserverHttpError } from './mgmt-api';
export type {
  BootstrapTimelineRequest,
  BranchTimelineRequest,
  CreateTimelineRequest,
  ImportTimelineRequest,
  PageserverClient,
  PageserverClientOptions,
  TimelineInfo,
} from './mgmt-api';
