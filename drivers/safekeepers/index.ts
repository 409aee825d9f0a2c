/** Clients for Neon safekeepers: timeline status (libpq and HTTP), the quorum sync rule, and the sync command. */
export { decideSafekeepersSynced, quorumSize } from './quorum';
export type { SafekeeperAnswer, SyncDecision } from './quorum';
export { checkSafekeepersSynced, DEFAULT_SYNC_CHECK_TIMEOUT_MS } from './sync-check';
export type { AskSafekeeper, CheckSafekeepersOptions, SyncCheckResult } from './sync-check';
export { runSyncSafekeepers, SyncSafekeepersError } from './sync-safekeepers';
export type { RunSyncSafekeepersOptions, SyncSafekeepersFailure, SyncSafekeepersResult } from './sync-safekeepers';
export { getTimelineStatus, parseSafekeeperAddress, queryTimelineStatus, SafekeeperHttpError, DEFAULT_STATUS_TIMEOUT_MS } from './timeline-status';
export type { SafekeeperLsns, StatusQueryOptions, TimelineStatus } from './timeline-status';
