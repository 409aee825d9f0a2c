/**
 * Physical streaming replication from a dev safekeeper, as Neon's safekeepers serve read replicas:
 * a stock standby (`primary_conninfo` naming the safekeepers, `standby.signal`, `hot_standby`)
 * connects with `replication=true` and runs the walsender commands PostgreSQL's walreceiver sends:
 *
 * - `IDENTIFY_SYSTEM`: systemid, timeline (always 1: a timeline's WAL is one stream on PG
 *   timeline 1), xlogpos (the commit LSN), dbname (null).
 * - `TIMELINE_HISTORY <tli>`: only asked for timelines above 1, which never exist here: an error.
 * - `START_REPLICATION [SLOT <name>] [PHYSICAL] <lsn> [TIMELINE <tli>]`: COPY BOTH with the real
 *   XLogData ('w') and keepalive ('k') messages; the standby's status updates ('r') and hot standby
 *   feedback ('h') are read and recorded.
 *
 * Only WAL up to the timeline's commit_lsn is sent (as Neon does for replicas): WAL beyond it may
 * still be truncated by a new proposer, and a standby that replayed it would have forked.
 *
 * A walreceiver asks for WAL from the start of a segment. A timeline's WAL on a safekeeper may
 * start inside that segment (at the image's checkpoint, or a branch point); the standby's base
 * backup from the pageserver holds the bytes before it, so streaming starts at timeline_start_lsn
 * then. The system identifier comes from the WAL pusher (START_WAL_PUSH's optional last argument)
 * and is kept beside the timeline's control file.
 */
import { writeFileAtomic } from '../../../common/atomic-write';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { formatLsn, isLsn, parseLsn, type Lsn } from '../../../model/lsn';
import { WAL_SEGMENT_SIZE } from '../../../drivers';
import { PgWireError, type PgWireSession, type QueryResult } from '../pgwire/server';
import type { TimelineRegistry } from './registry';
import type { Timeline } from './timeline';

const SYSTEM_ID_FILE = 'system_id';
const SEG = BigInt(WAL_SEGMENT_SIZE);
/** Largest WAL payload of one XLogData message (the walsender's MAX_SEND_SIZE is 128 KiB too). */
const MAX_SEND = 128 * 1024;
/** How often new commits are looked for while the standby is caught up. */
const POLL_MS = 5;
/** A keepalive when nothing was sent for this long (well under wal_receiver_timeout's 60 s). */
const KEEPALIVE_MS = 10_000;
const PG_EPOCH_MS = 946_684_800_000n;

const INVALID_PARAMETER = '22023';
const SYNTAX_ERROR = '42601';
const UNDEFINED_OBJECT = '42704';

/** What a connected standby last reported (status update 'r'), for status and tests. */
export interface StandbyFeedback {
  applicationName: string;
  writeLsn: Lsn;
  flushLsn: Lsn;
  applyLsn: Lsn;
  sentLsn: Lsn;
}

const standbys = new WeakMap<Timeline, Set<StandbyFeedback>>();

/** The standbys streaming from this timeline right now. */
export function connectedStandbys(t: Timeline): StandbyFeedback[] {
  return [...(standbys.get(t) ?? [])].map((s) => ({ ...s }));
}

function isSystemId(text: string): boolean {
  return /^\d{1,20}$/.test(text) && BigInt(text) <= 0xffffffffffffffffn;
}

/** The system identifier recorded for the timeline, or undefined if no pusher has told it yet. */
export async function readSystemId(t: Timeline): Promise<string | undefined> {
  try {
    const text = (await fsp.readFile(path.join(t.dir, SYSTEM_ID_FILE), 'utf8')).trim();
    return isSystemId(text) ? text : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Records the pusher's system identifier (START_WAL_PUSH's last argument). A different one for the
 * same timeline means a compute of another database is pushing to it: refused.
 */
export async function recordSystemId(t: Timeline, systemId: string): Promise<void> {
  if (!isSystemId(systemId)) throw new PgWireError(`system_id must be an unsigned 64-bit decimal, got ${JSON.stringify(systemId)}`, INVALID_PARAMETER);
  const known = await readSystemId(t);
  if (known === systemId) return;
  if (known !== undefined) {
    throw new PgWireError(`system identifier ${systemId} differs from this timeline's ${known}: wrong compute for this timeline?`, INVALID_PARAMETER);
  }
  const file = path.join(t.dir, SYSTEM_ID_FILE);
  await writeFileAtomic(file, `${systemId}\n`, { mode: 0o600, durability: 'file' });
}

function pgNow(): bigint {
  return (BigInt(Date.now()) - PG_EPOCH_MS) * 1000n;
}

export function encodeXLogData(startLsn: Lsn, walEnd: Lsn, data: Buffer): Buffer {
  const head = Buffer.alloc(25);
  head[0] = 0x77; // w
  head.writeBigUInt64BE(startLsn, 1);
  head.writeBigUInt64BE(walEnd, 9);
  head.writeBigInt64BE(pgNow(), 17);
  return Buffer.concat([head, data]);
}

export function encodeKeepalive(walEnd: Lsn, replyRequested: boolean): Buffer {
  const out = Buffer.alloc(18);
  out[0] = 0x6b; // k
  out.writeBigUInt64BE(walEnd, 1);
  out.writeBigInt64BE(pgNow(), 9);
  out[17] = replyRequested ? 1 : 0;
  return out;
}

/** Parses `START_REPLICATION [SLOT name] [PHYSICAL] X/Y [TIMELINE n]` (the walsender's grammar). */
export function parseStartReplication(args: string[]): { slot?: string; startLsn: Lsn; timeline: number } {
  let i = 0;
  let slot: string | undefined;
  if (args[i]?.toUpperCase() === 'SLOT') {
    slot = args[i + 1]?.replace(/^"(.*)"$/, '$1');
    if (!slot) throw new PgWireError('START_REPLICATION SLOT needs a slot name', SYNTAX_ERROR);
    i += 2;
  }
  if (args[i]?.toUpperCase() === 'LOGICAL') throw new PgWireError('logical replication is not served by a safekeeper', '0A000');
  if (args[i]?.toUpperCase() === 'PHYSICAL') i += 1;
  const lsnText = args[i];
  if (lsnText === undefined || !isLsn(lsnText)) throw new PgWireError(`START_REPLICATION needs a start LSN like 0/16B5A50, got ${JSON.stringify(lsnText ?? '')}`, INVALID_PARAMETER);
  i += 1;
  let timeline = 1;
  if (args[i]?.toUpperCase() === 'TIMELINE') {
    const text = args[i + 1] ?? '';
    if (!/^\d{1,10}$/.test(text)) throw new PgWireError(`TIMELINE must be a number, got ${JSON.stringify(text)}`, INVALID_PARAMETER);
    timeline = Number(text);
    i += 2;
  }
  if (i !== args.length) throw new PgWireError(`unexpected ${JSON.stringify(args.slice(i).join(' '))} in START_REPLICATION`, SYNTAX_ERROR);
  return { ...(slot !== undefined ? { slot } : {}), startLsn: parseLsn(lsnText), timeline };
}

async function knownTimeline(registry: TimelineRegistry, session: PgWireSession): Promise<Timeline> {
  const tenantId = session.params.tenant_id ?? session.params.tenantid;
  const timelineId = session.params.timeline_id ?? session.params.timelineid;
  if (tenantId === undefined || timelineId === undefined) {
    throw new PgWireError("replication needs tenant_id and timeline_id in the connection options (options='-c tenant_id=... -c timeline_id=...')", INVALID_PARAMETER);
  }
  if (!/^[0-9a-f]{32}$/.test(tenantId) || !/^[0-9a-f]{32}$/.test(timelineId)) {
    throw new PgWireError(`invalid tenant_id/timeline_id ${JSON.stringify(`${tenantId}/${timelineId}`)}: expected 32 lower-case hex characters each`, INVALID_PARAMETER);
  }
  const t = await registry.get(tenantId, timelineId);
  // A timeline no proposer ever reached: nothing to stream, and the standby must not wait forever.
  if (!t || (t.snapshot().flushLsn === 0n && t.snapshot().termHistory.length === 0)) {
    throw new PgWireError(`timeline ${tenantId}/${timelineId} is not known to this safekeeper`, '58P01');
  }
  return t;
}

function senderLsn(t: Timeline): Lsn {
  const s = t.snapshot();
  return s.commitLsn < s.flushLsn ? s.commitLsn : s.flushLsn;
}

/** Where streaming begins for a request at `requested`, or why it cannot. */
function streamStart(t: Timeline, requested: Lsn): Lsn {
  const s = t.snapshot();
  if (requested < s.timelineStartLsn) {
    // The standby's base backup holds the segment's bytes before the timeline's start.
    if (requested / SEG === s.timelineStartLsn / SEG) return s.timelineStartLsn;
    throw new PgWireError(
      `requested WAL at ${formatLsn(requested)} precedes this timeline's start ${formatLsn(s.timelineStartLsn)} on this safekeeper`,
      '58P01',
    );
  }
  if (requested > s.flushLsn) {
    throw new PgWireError(`requested starting point ${formatLsn(requested)} is ahead of the WAL flush position of this safekeeper ${formatLsn(s.flushLsn)}`, '58P01');
  }
  return requested;
}

/** Reads the standby's messages until it ends the copy; records its status updates. */
async function readStandby(incoming: AsyncIterable<Buffer>, feedback: StandbyFeedback, log: (line: string) => void): Promise<void> {
  for await (const m of incoming) {
    const tag = m[0];
    if (tag === 0x72 /* r */ && m.length >= 34) {
      feedback.writeLsn = m.readBigUInt64BE(1);
      feedback.flushLsn = m.readBigUInt64BE(9);
      feedback.applyLsn = m.readBigUInt64BE(17);
    } else if (tag === 0x68 /* h */) {
      // Hot standby feedback: Neon forwards it to the primary; stock primaries here need none.
    } else {
      log(`standby ${feedback.applicationName}: ignoring replication message with tag ${tag === undefined ? 'none' : `0x${tag.toString(16)}`}`);
    }
  }
}

async function stream(t: Timeline, start: Lsn, feedback: StandbyFeedback, io: { incoming: AsyncIterable<Buffer>; send(payload: Buffer): Promise<void> }, log: (line: string) => void): Promise<void> {
  let done = false;
  let readerError: unknown;
  const reader = readStandby(io.incoming, feedback, log)
    .catch((err: unknown) => {
      readerError = err;
    })
    .finally(() => {
      done = true;
    });
  let pos = start;
  // At once, so the standby knows the stream is up even when there is nothing to send yet.
  await io.send(encodeKeepalive(senderLsn(t), false));
  let lastSend = Date.now();
  try {
    while (!done) {
      const end = senderLsn(t);
      if (end > pos) {
        const until = end - pos > BigInt(MAX_SEND) ? pos + BigInt(MAX_SEND) : end;
        for await (const chunk of t.readWal(pos, until)) {
          await io.send(encodeXLogData(pos, end, chunk));
          pos += BigInt(chunk.length);
        }
        feedback.sentLsn = pos;
        lastSend = Date.now();
        continue;
      }
      if (Date.now() - lastSend >= KEEPALIVE_MS) {
        await io.send(encodeKeepalive(pos, false));
        lastSend = Date.now();
      }
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    }
  } finally {
    done = true;
  }
  // The standby ended the copy (CopyDone): the pgwire server answers with ours.
  await reader;
  if (readerError !== undefined) throw readerError;
}

/** Handles the walsender commands; undefined for any other command. */
export async function handleReplicationCommand(
  registry: TimelineRegistry,
  session: PgWireSession,
  command: string,
  args: string[],
  log: (line: string) => void,
): Promise<QueryResult | undefined> {
  switch (command) {
    case 'IDENTIFY_SYSTEM': {
      const t = await knownTimeline(registry, session);
      const systemId = await readSystemId(t);
      if (systemId === undefined) {
        throw new PgWireError(`the system identifier of timeline ${t.snapshot().tenantId}/${t.snapshot().timelineId} is not known yet: no WAL pusher has told it`, '55000');
      }
      return { kind: 'rows', columns: ['systemid', 'timeline', 'xlogpos', 'dbname'], rows: [[systemId, '1', formatLsn(senderLsn(t)), null]] };
    }
    case 'TIMELINE_HISTORY': {
      // Timelines above 1 never exist: a timeline's WAL is one stream on PostgreSQL timeline 1.
      throw new PgWireError(`could not find history file for timeline ${JSON.stringify(args[0] ?? '')}: a safekeeper serves PostgreSQL timeline 1 only`, UNDEFINED_OBJECT);
    }
    case 'START_REPLICATION': {
      const t = await knownTimeline(registry, session);
      const request = parseStartReplication(args);
      if (request.timeline !== 1) {
        throw new PgWireError(`requested timeline ${request.timeline} is not in this server's history (a safekeeper serves PostgreSQL timeline 1 only)`, UNDEFINED_OBJECT);
      }
      const start = streamStart(t, request.startLsn);
      const feedback: StandbyFeedback = { applicationName: session.applicationName ?? '', writeLsn: 0n, flushLsn: 0n, applyLsn: 0n, sentLsn: start };
      const s = t.snapshot();
      log(`START_REPLICATION ${s.tenantId}/${s.timelineId} from ${formatLsn(start)} (requested ${formatLsn(request.startLsn)}) for ${JSON.stringify(feedback.applicationName)}`);
      return {
        kind: 'copyBoth',
        run: async (io) => {
          let set = standbys.get(t);
          if (!set) standbys.set(t, (set = new Set()));
          set.add(feedback);
          try {
            await stream(t, start, feedback, io, log);
          } finally {
            set.delete(feedback);
          }
        },
      };
    }
    default:
      return undefined;
  }
}
