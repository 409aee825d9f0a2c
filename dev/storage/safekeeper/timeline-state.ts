/** A safekeeper timeline's consensus state and its on-disk form in the control file. */
import { formatLsn, parseLsn, type Lsn } from '../../../model/lsn';
import { formatTermHistory, parseTermHistory, type TermHistory } from '../../../drivers';

export interface TimelineState {
  tenantId: string;
  timelineId: string;
  /** The highest term promised (ELECT) or written by. */
  term: bigint;
  termHistory: TermHistory;
  timelineStartLsn: Lsn;
  flushLsn: Lsn;
  commitLsn: Lsn;
  backupLsn: Lsn;
  remoteConsistentLsn: Lsn;
  peerHorizonLsn: Lsn;
  pgVersion: number;
}

export interface StateDocument {
  version: 1;
  tenant_id: string;
  timeline_id: string;
  term: string;
  term_history: string;
  timeline_start_lsn: string;
  flush_lsn: string;
  commit_lsn: string;
  backup_lsn: string;
  remote_consistent_lsn: string;
  peer_horizon_lsn: string;
  pg_version: number;
}

export function toDocument(s: TimelineState): StateDocument {
  return {
    version: 1,
    tenant_id: s.tenantId,
    timeline_id: s.timelineId,
    term: s.term.toString(),
    term_history: formatTermHistory(s.termHistory),
    timeline_start_lsn: formatLsn(s.timelineStartLsn),
    flush_lsn: formatLsn(s.flushLsn),
    commit_lsn: formatLsn(s.commitLsn),
    backup_lsn: formatLsn(s.backupLsn),
    remote_consistent_lsn: formatLsn(s.remoteConsistentLsn),
    peer_horizon_lsn: formatLsn(s.peerHorizonLsn),
    pg_version: s.pgVersion,
  };
}

export function fromDocument(d: StateDocument): TimelineState {
  if (d.version !== 1) throw new Error(`unsupported safekeeper state version ${String(d.version)}`);
  return {
    tenantId: d.tenant_id,
    timelineId: d.timeline_id,
    term: BigInt(d.term),
    termHistory: parseTermHistory(d.term_history),
    timelineStartLsn: parseLsn(d.timeline_start_lsn),
    flushLsn: parseLsn(d.flush_lsn),
    commitLsn: parseLsn(d.commit_lsn),
    backupLsn: parseLsn(d.backup_lsn),
    remoteConsistentLsn: parseLsn(d.remote_consistent_lsn),
    peerHorizonLsn: parseLsn(d.peer_horizon_lsn),
    pgVersion: d.pg_version,
  };
}
