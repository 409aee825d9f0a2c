/**
 * The libpq commands of the dev safekeeper (see PROTOCOL.md). Tenant and timeline come from the
 * command's arguments or, as Neon's compute sends them, from the connection's startup options.
 */
import { isNeonId } from '../../../model/ids';
import { formatLsn, isLsn, parseLsn, type Lsn } from '../../../model/lsn';
import { MAX_U64, parseTermHistory, STATUS_COLUMNS } from '../../../drivers';
import { PgWireError, type PgWireSession, type QueryResult } from '../pgwire/server';
import { handleReplicationCommand, recordSystemId } from './physical-replication';
import { runPushSession } from './push-session';
import type { TimelineRegistry } from './registry';
import type { Timeline } from './timeline';

const INVALID_PARAMETER = '22023';
const SYNTAX_ERROR = '42601';

function statusValues(t: Timeline): string[] {
  const s = t.snapshot();
  const byColumn: Record<(typeof STATUS_COLUMNS)[number], string> = {
    tenant_id: s.tenantId,
    timeline_id: s.timelineId,
    term: s.term.toString(),
    last_log_term: t.lastLogTerm < 0n ? '0' : t.lastLogTerm.toString(),
    term_history: s.termHistory.map((e) => `${e.term}@${formatLsn(e.lsn)}`).join(','),
    flush_lsn: formatLsn(s.flushLsn),
    commit_lsn: formatLsn(s.commitLsn),
    timeline_start_lsn: formatLsn(s.timelineStartLsn),
    local_start_lsn: formatLsn(s.timelineStartLsn),
    backup_lsn: formatLsn(s.backupLsn),
    remote_consistent_lsn: formatLsn(s.remoteConsistentLsn),
    peer_horizon_lsn: formatLsn(s.peerHorizonLsn),
  };
  return STATUS_COLUMNS.map((c) => byColumn[c]);
}

function lsnArg(text: string | undefined, what: string): Lsn {
  if (text === undefined || !isLsn(text)) throw new PgWireError(`${what} must be an LSN like 0/16B5A50, got ${JSON.stringify(text ?? '')}`, INVALID_PARAMETER);
  return parseLsn(text);
}

function termArg(text: string | undefined): bigint {
  if (text === undefined || !/^\d{1,20}$/.test(text) || BigInt(text) > MAX_U64) {
    throw new PgWireError(`term must be an unsigned 64-bit integer, got ${JSON.stringify(text ?? '')}`, INVALID_PARAMETER);
  }
  return BigInt(text);
}

/** Tenant and timeline from `args[0..1]` if present, else from the startup options. */
function timelineIds(session: PgWireSession, args: string[], command: string): { tenantId: string; timelineId: string; rest: string[] } {
  let tenantId: string | undefined;
  let timelineId: string | undefined;
  let rest = args;
  if (args.length >= 2 && !isLsn(args[0]!) && !/^\d+$/.test(args[0]!)) {
    [tenantId, timelineId] = args as [string, string];
    rest = args.slice(2);
  } else {
    tenantId = session.params.tenant_id ?? session.params.tenantid;
    timelineId = session.params.timeline_id ?? session.params.timelineid;
  }
  if (tenantId === undefined || timelineId === undefined) {
    throw new PgWireError(`${command}: tenant_id and timeline_id are required (as arguments or as -c tenant_id=... -c timeline_id=... in the connection options)`, INVALID_PARAMETER);
  }
  if (!isNeonId(tenantId)) throw new PgWireError(`invalid tenant_id ${JSON.stringify(tenantId)}: expected 32 lower-case hex characters`, INVALID_PARAMETER);
  if (!isNeonId(timelineId)) throw new PgWireError(`invalid timeline_id ${JSON.stringify(timelineId)}: expected 32 lower-case hex characters`, INVALID_PARAMETER);
  return { tenantId, timelineId, rest };
}

export function createCommandHandler(registry: TimelineRegistry, log: (line: string) => void) {
  return async function onQuery(session: PgWireSession, sql: string): Promise<QueryResult> {
    const words = sql.trim().replace(/;\s*$/, '').split(/\s+/);
    const command = (words[0] ?? '').toUpperCase();
    const args = words.slice(1);
    switch (command) {
      case 'TIMELINE_STATUS': {
        const { tenantId, timelineId } = timelineIds(session, args, command);
        const t = await registry.get(tenantId, timelineId);
        // Unknown timeline: no row, as Neon's safekeeper answers.
        return { kind: 'rows', columns: [...STATUS_COLUMNS], rows: t ? [statusValues(t)] : [] };
      }
      case 'ELECT': {
        const { tenantId, timelineId, rest } = timelineIds(session, args, command);
        if (rest.length !== 1) throw new PgWireError('usage: ELECT <tenant_id> <timeline_id> <term>', SYNTAX_ERROR);
        const term = termArg(rest[0]);
        const { timeline } = await registry.getOrCreate(tenantId, timelineId);
        const accepted = await timeline.elect(term);
        log(`ELECT ${tenantId}/${timelineId} term ${term}: ${accepted ? 'accepted' : `rejected (promised ${timeline.snapshot().term})`}`);
        return { kind: 'rows', columns: ['accepted', ...STATUS_COLUMNS], rows: [[accepted ? 't' : 'f', ...statusValues(timeline)]] };
      }
      case 'START_WAL_PUSH': {
        const { tenantId, timelineId, rest } = timelineIds(session, args, command);
        if (rest.length !== 3 && rest.length !== 4) throw new PgWireError('usage: START_WAL_PUSH <tenant_id> <timeline_id> <term> <start_lsn> <term_history> [<system_id>]', SYNTAX_ERROR);
        const term = termArg(rest[0]);
        const startLsn = lsnArg(rest[1], 'start_lsn');
        let history;
        try {
          history = parseTermHistory(rest[2]!);
        } catch (err) {
          throw new PgWireError(`invalid term_history: ${(err as Error).message}`, INVALID_PARAMETER);
        }
        const { timeline } = await registry.getOrCreate(tenantId, timelineId);
        // The pusher's system identifier, for standbys' IDENTIFY_SYSTEM (physical-replication.ts).
        if (rest[3] !== undefined) await recordSystemId(timeline, rest[3]);
        const token = await timeline.beginPush(term, startLsn, history);
        log(`START_WAL_PUSH ${tenantId}/${timelineId} term ${term} from ${formatLsn(startLsn)}`);
        return { kind: 'copyBoth', run: (io) => runPushSession(timeline, token, io) };
      }
      case 'READ_WAL': {
        const { tenantId, timelineId, rest } = timelineIds(session, args, command);
        if (rest.length !== 2) throw new PgWireError('usage: READ_WAL <tenant_id> <timeline_id> <start_lsn> <end_lsn>', SYNTAX_ERROR);
        const start = lsnArg(rest[0], 'start_lsn');
        const end = lsnArg(rest[1], 'end_lsn');
        const t = await registry.get(tenantId, timelineId);
        if (!t) throw new PgWireError(`timeline ${tenantId}/${timelineId} is not on this safekeeper`, '58P01');
        const problem = t.checkRange(start, end);
        if (problem) throw new PgWireError(problem, '58P01');
        return { kind: 'copyOut', stream: t.readWal(start, end) };
      }
      default: {
        const replication = await handleReplicationCommand(registry, session, command, args, log);
        if (replication) return replication;
        throw new PgWireError(
          `unsupported command ${JSON.stringify(command.slice(0, 64))}; this safekeeper understands TIMELINE_STATUS, ELECT, START_WAL_PUSH, READ_WAL, IDENTIFY_SYSTEM, TIMELINE_HISTORY and START_REPLICATION`,
          SYNTAX_ERROR,
        );
      }
    }
  };
}
