/**
 * The WAL pusher: stands in for Neon's walproposer next to a stock PostgreSQL.
 *
 * Postgres streams its WAL to the pusher over physical replication (a replication slot keeps what
 * is not yet pushed). The pusher forwards it to every safekeeper and reports to Postgres, as the
 * synchronous standby named in synchronous_standby_names, a flush position equal to the highest LSN
 * a quorum of safekeepers has fsync'd. So a COMMIT returns only once a quorum holds it.
 *
 * Where pushing starts. The compute started from an image the pageserver built at LSN L0 = the
 * safekeepers' agreed position (the sync step), plus possibly a shutdown checkpoint written when the
 * image was made. The safekeepers' WAL must continue seamlessly, so the pusher, after winning an
 * election, pushes from the agreed end of the safekeepers' log L (which is L0 for a fresh compute,
 * and later also covers the image's checkpoint record). That requires L to lie within this
 * compute's WAL: L must not be past the end of the image's checkpoint record (an older image would
 * fork history and lose commits; we refuse), unless the log's last term belongs to an earlier pusher
 * of this same compute (the pusher restarted), in which case everything up to L is our own WAL. For a
 * timeline no safekeeper has WAL for yet, pushing starts at the image's checkpoint record.
 *
 * The pusher exits when Postgres goes away, after handing every byte it received to the
 * safekeepers and telling them the final commit LSN.
 */
import { formatLsn, parseLsn, type Lsn } from '../../../model/lsn';
import { processStartTime } from '../../../common/process-start-time';
import {
  copyWalInto,
  pushStartFor,
  quorumSize,
  runElection,
  target,
  type ConsensusConfig,
  type Election,
} from './consensus';
import {
  checkpointRecordEnd,
  connectHost,
  nextRecordStart,
  readPostmasterPid,
  type PostmasterInfo,
} from './local-postgres';
import { PgClientError, PgConnection, type CopyBothSession } from './pg-client';
import { readPusherState, writePusherState, writePusherStatus, type PusherState } from './pusher-files';
import { decodeWalSenderMessage, encodeStandbyStatus } from './replication-messages';
import { fetchStatus, PushSession } from './safekeeper-client';
import { compactHistory, MAX_WAL_FRAME_PAYLOAD, type AcceptorStatus, type FeedbackFrame, type TermHistory } from './safekeeper-protocol';
import { WalBuffer } from './wal-buffer';

export const PUSHER_APPLICATION_NAME = 'wal_pusher';
export const PUSHER_SLOT_NAME = 'wal_pusher';
/** SQLSTATE the dev safekeeper uses when a higher term took over. */
const TERM_SUPERSEDED = 'SK001';

const MAX_BUFFERED_BYTES = 64 * 1024 * 1024;
const ACK_TIMEOUT_MS = 30_000;
const STATUS_INTERVAL_MS = 10_000;
/** How long the pusher keeps trying to get the last WAL to a quorum (and all) after Postgres stopped. */
const FINAL_DRAIN_MS = 20_000;

export interface WalPusherOptions {
  pgdata: string;
  /** Role the pusher connects to Postgres as (the backend's dedicated replication role). */
  user: string;
  /** Its password (SCRAM-SHA-256 per the backend's hba lines); set afresh at every pusher start. */
  password?: string;
  database?: string;
  tenantId: string;
  timelineId: string;
  safekeepers: string[];
  authToken?: string;
  log: (line: string) => void;
}

/** Another proposer (a newer pusher or a sync) took over the timeline: this pusher must stop. */
class Superseded extends Error {
  override name = 'Superseded';
  constructor(reason: string) {
    super(`superseded by a newer proposer: ${reason}`);
  }
}

interface Link {
  address: string;
  session: PushSession | undefined;
  /** State from the election, used for the first session instead of asking again. */
  voteStatus: AcceptorStatus | undefined;
  /** Highest LSN up to which this safekeeper durably holds our log. */
  acked: Lsn;
  /** Next LSN to send in the current session. */
  sent: Lsn;
  commitSent: Lsn;
  streaming: boolean;
  lastError: string | undefined;
}

export class WalPusher {
  private readonly cfg: ConsensusConfig;
  private readonly links: Link[];
  private term = 0n;
  private history: TermHistory = [];
  private election: Election | undefined;
  private agreedLsn = 0n;
  private buffer!: WalBuffer;
  private quorumFlush = 0n;
  private stopping = false;
  private drainDeadline = 0;
  private fatal: Error | undefined;
  private waiters = new Set<() => void>();
  private replication: CopyBothSession | undefined;
  private postmaster!: PostmasterInfo;
  private postmasterStart: string | undefined;
  private stopRequested = false;

  constructor(private readonly opts: WalPusherOptions) {
    if (opts.safekeepers.length === 0) throw new Error('no safekeepers configured');
    this.cfg = {
      safekeepers: opts.safekeepers,
      tenantId: opts.tenantId,
      timelineId: opts.timelineId,
      applicationName: PUSHER_APPLICATION_NAME,
      log: opts.log,
      ...(opts.authToken !== undefined ? { authToken: opts.authToken } : {}),
    };
    this.links = opts.safekeepers.map((address) => ({
      address,
      session: undefined,
      voteStatus: undefined,
      acked: 0n,
      sent: 0n,
      commitSent: 0n,
      streaming: false,
      lastError: undefined,
    }));
  }

  /** Asks the pusher to stop as if Postgres had gone (SIGTERM). */
  requestStop(): void {
    this.stopRequested = true;
    this.replication?.finish().catch(() => undefined);
    this.notify();
  }

  private notify(): void {
    for (const w of [...this.waiters]) w();
  }

  /** Waits for any change (new WAL, acks, stop, failure) or `ms`. */
  private async changed(ms = 1000): Promise<void> {
    await new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.waiters.add(done);
    });
  }

  private postmasterAlive(): boolean {
    return processStartTime(this.postmaster.pid) === this.postmasterStart;
  }

  private fail(err: Error): void {
    this.fatal ??= err;
    this.replication?.finish().catch(() => undefined);
    this.notify();
  }

  private async connectLocal(replication: boolean): Promise<PgConnection> {
    return PgConnection.connect({
      host: connectHost(this.postmaster),
      port: this.postmaster.port,
      user: this.opts.user,
      ...(this.opts.password !== undefined ? { password: this.opts.password } : {}),
      database: this.opts.database ?? 'postgres',
      connectTimeoutMs: 10_000,
      params: { application_name: PUSHER_APPLICATION_NAME, ...(replication ? { replication: 'true' } : {}) },
    });
  }

  /** The image's checkpoint, learned once per compute and kept in PGDATA for later pusher runs. */
  private async imageInfo(): Promise<PusherState> {
    const known = readPusherState(this.opts.pgdata);
    if (known) return known;
    const c = await this.connectLocal(false);
    try {
      const cp = await c.query('SELECT checkpoint_lsn, redo_lsn, timeline_id FROM pg_catalog.pg_control_checkpoint()');
      const settings = await c.query("SELECT name, setting FROM pg_catalog.pg_settings WHERE name IN ('wal_segment_size', 'wal_block_size')");
      const recovery = await c.query('SELECT pg_catalog.pg_is_in_recovery()');
      if (recovery.rows[0]?.[0] !== 'f') throw new Error('Postgres is in recovery: the WAL pusher serves primaries only');
      const setting = (n: string) => Number(settings.rows.find((r) => r[0] === n)?.[1]);
      const checkpointLsn = parseLsn(cp.rows[0]![0]!);
      const end = await checkpointRecordEnd(this.opts.pgdata, Number(cp.rows[0]![2]), checkpointLsn, setting('wal_block_size'), setting('wal_segment_size'));
      const state: PusherState = {
        terms: [],
        imageCheckpointLsn: formatLsn(checkpointLsn),
        imageNextRecordLsn: formatLsn(nextRecordStart(end, setting('wal_block_size'), setting('wal_segment_size'))),
      };
      writePusherState(this.opts.pgdata, state);
      return state;
    } finally {
      await c.close();
    }
  }

  async run(): Promise<void> {
    const log = this.opts.log;
    writePusherStatus(this.opts.pgdata, { phase: 'starting' });
    try {
      this.postmaster = readPostmasterPid(this.opts.pgdata);
      this.postmasterStart = processStartTime(this.postmaster.pid);
      if (this.postmasterStart === undefined) throw new Error(`the postmaster (pid ${this.postmaster.pid}) is not running`);
      const state = await this.imageInfo();

      const repl = await this.connectLocal(true);
      let tli: number;
      let xlogpos: Lsn;
      try {
        const ident = await repl.query('IDENTIFY_SYSTEM');
        tli = Number(ident.rows[0]![1]);
        // Passed on with every push, so the safekeepers can identify the system to standbys.
        this.cfg.systemId = ident.rows[0]![0]!;
        xlogpos = parseLsn(ident.rows[0]![2]!);
        await repl.query(`CREATE_REPLICATION_SLOT ${PUSHER_SLOT_NAME} PHYSICAL RESERVE_WAL`).catch((err: unknown) => {
          if (!(err instanceof PgClientError && err.code === '42710')) throw err; // exists: a previous pusher of this compute
        });
      } catch (err) {
        await repl.close();
        throw err;
      }

      const election = await runElection(this.cfg);
      this.election = election;
      this.term = election.term;
      let start: Lsn;
      if (election.agreedLsn === null) {
        start = parseLsn(state.imageCheckpointLsn);
        this.history = [{ term: election.term, lsn: start }];
        log(`no safekeeper holds WAL for this timeline: pushing from the image's checkpoint at ${formatLsn(start)}`);
      } else {
        start = election.agreedLsn;
        this.history = compactHistory([...election.donorHistory, { term: election.term, lsn: start }]);
        const lastTerm = election.donorHistory[election.donorHistory.length - 1]?.term;
        const ours = lastTerm !== undefined && state.terms.includes(lastTerm.toString());
        const imageEnd = parseLsn(state.imageNextRecordLsn);
        if (!ours && start > imageEnd) {
          throw new Error(
            `the safekeepers' WAL ends at ${formatLsn(start)}, after the image this compute started from ` +
              `(its checkpoint is at ${state.imageCheckpointLsn}); the compute must start from a basebackup at ${formatLsn(start)}`,
          );
        }
      }
      if (start > xlogpos) {
        throw new Error(`the safekeepers' WAL ends at ${formatLsn(start)}, beyond this Postgres's WAL (${formatLsn(xlogpos)}): wrong compute for this timeline?`);
      }
      this.agreedLsn = start;
      writePusherState(this.opts.pgdata, { ...state, terms: [...state.terms, election.term.toString()] });
      this.buffer = new WalBuffer(start);
      for (const link of this.links) {
        const voted = election.voters.get(link.address);
        if (voted) link.voteStatus = voted;
      }
      const linkTasks = this.links.map((l) => this.runLink(l));

      writePusherStatus(this.opts.pgdata, { phase: 'streaming', term: this.term.toString(), startLsn: formatLsn(start) });
      log(`term ${this.term}: streaming from ${formatLsn(start)} (timeline ${tli}) to ${this.links.length} safekeepers, quorum ${quorumSize(this.links.length)}`);
      await this.replicate(repl, tli);

      this.stopping = true;
      this.drainDeadline = Date.now() + FINAL_DRAIN_MS;
      writePusherStatus(this.opts.pgdata, { phase: 'stopping', term: this.term.toString() });
      log(`Postgres is gone: draining WAL up to ${formatLsn(this.buffer.end)} to the safekeepers`);
      this.notify();
      await Promise.all(linkTasks);
      if (this.fatal) throw this.fatal;
      if (this.quorumFlush < this.buffer.end) {
        throw new Error(`only ${formatLsn(this.quorumFlush)} of ${formatLsn(this.buffer.end)} reached a quorum of safekeepers before giving up`);
      }
      log(`done: commit_lsn ${formatLsn(this.quorumFlush)} on a quorum`);
      writePusherStatus(this.opts.pgdata, { phase: 'exited', term: this.term.toString() });
    } catch (err) {
      this.fail(err as Error);
      for (const l of this.links) l.session?.abort();
      writePusherStatus(this.opts.pgdata, { phase: 'failed', error: (err as Error).message });
      throw err;
    }
  }

  /** Streams from Postgres until the postmaster is gone (reconnecting while it lives) or a stop. */
  private async replicate(firstConn: PgConnection, tli: number): Promise<void> {
    let conn: PgConnection | undefined = firstConn;
    for (;;) {
      if (this.fatal) throw this.fatal;
      if (conn) {
        try {
          await this.streamOnce(conn, tli);
        } catch (err) {
          if (this.fatal) throw this.fatal;
          if (err instanceof Superseded) throw err;
          if (this.postmasterAlive() && !this.stopRequested) this.opts.log(`replication stream ended: ${(err as Error).message}`);
        } finally {
          await conn.close().catch(() => undefined);
          conn = undefined;
        }
      }
      if (this.stopRequested) return;
      // A walsender can end while Postgres lives on (timeouts); only a gone postmaster ends the pusher.
      const deadline = Date.now() + 3000;
      while (this.postmasterAlive() && Date.now() < deadline) await this.changed(200);
      if (!this.postmasterAlive()) return;
      try {
        conn = await this.connectLocal(true);
      } catch (err) {
        this.opts.log(`reconnecting to Postgres failed: ${(err as Error).message}`);
      }
    }
  }

  private async streamOnce(conn: PgConnection, tli: number): Promise<void> {
    const from = this.buffer.end;
    const copy = await conn.copyBoth(`START_REPLICATION SLOT ${PUSHER_SLOT_NAME} PHYSICAL ${formatLsn(from)} TIMELINE ${tli}`);
    this.replication = copy;
    const timer = setInterval(() => this.sendStandbyStatus(), STATUS_INTERVAL_MS);
    try {
      this.sendStandbyStatus();
      for await (const payload of copy.incoming) {
        const m = decodeWalSenderMessage(payload);
        if (m.kind === 'xlogData') {
          if (m.data.length > 0) this.buffer.append(m.startLsn, m.data);
          this.notify();
          while (this.buffer.size > MAX_BUFFERED_BYTES && !this.fatal && !this.stopRequested) await this.changed();
        } else if (m.replyRequested) {
          this.sendStandbyStatus();
        }
      }
    } finally {
      clearInterval(timer);
      this.replication = undefined;
    }
  }

  private sendStandbyStatus(): void {
    const copy = this.replication;
    if (!copy) return;
    const end = this.buffer.end;
    const flush = this.quorumFlush < end ? this.quorumFlush : end;
    copy.send(encodeStandbyStatus(end, flush, flush)).catch(() => undefined);
  }

  private onFeedback(link: Link, f: FeedbackFrame): void {
    if (f.term > this.term) {
      this.fail(new Superseded(`safekeeper ${link.address} moved on to term ${f.term}`));
      return;
    }
    if (f.flushLsn > link.acked) link.acked = f.flushLsn;
    this.recompute();
  }

  private recompute(): void {
    const flushes = this.links.map((l) => l.acked).sort((a, b) => (a > b ? -1 : a < b ? 1 : 0));
    let q = flushes[quorumSize(this.links.length) - 1] ?? 0n;
    if (q > this.buffer.end) q = this.buffer.end;
    if (q > this.quorumFlush) {
      this.quorumFlush = q;
      this.sendStandbyStatus();
    }
    // Keep in memory only what some connected safekeeper may still need from us.
    const streaming = this.links.filter((l) => l.streaming);
    if (streaming.length > 0) {
      let trimTo = streaming.reduce((m, l) => (l.acked < m ? l.acked : m), this.buffer.end);
      // Under memory pressure, drop what a quorum has; laggards catch up from their peers.
      if (this.buffer.size > MAX_BUFFERED_BYTES && this.quorumFlush > trimTo) trimTo = this.quorumFlush;
      this.buffer.trimTo(trimTo);
    }
    this.notify();
  }

  /** A safekeeper holding our log over [from, ...) other than `self`, and how far it can supply. */
  private pickSource(from: Lsn, self: Link): { address: string; end: Lsn } | undefined {
    const until = this.buffer.start;
    const peers = this.links.filter((l) => l !== self && l.acked > from);
    peers.sort((a, b) => Number(b.streaming) - Number(a.streaming));
    const peer = peers[0];
    if (peer) return { address: peer.address, end: peer.acked < until ? peer.acked : until };
    const donor = this.election?.donor;
    if (donor && donor !== self.address && from < this.agreedLsn) {
      return { address: donor, end: this.agreedLsn < until ? this.agreedLsn : until };
    }
    return undefined;
  }

  private drained(link: Link): boolean {
    return (
      link.sent === this.buffer.end &&
      link.commitSent === this.quorumFlush &&
      (this.quorumFlush === this.buffer.end || Date.now() > this.drainDeadline)
    );
  }

  private async runLink(link: Link): Promise<void> {
    let backoff = 250;
    for (;;) {
      if (this.fatal) return;
      if (this.stopping && Date.now() > this.drainDeadline) return;
      try {
        await this.serveLink(link);
        return;
      } catch (err) {
        link.session?.abort();
        link.session = undefined;
        if (err instanceof Superseded || (err instanceof PgClientError && err.code === TERM_SUPERSEDED)) {
          this.fail(err instanceof Superseded ? err : new Superseded(err.message));
          return;
        }
        if (this.fatal) return;
        // Log a failure once, not on every retry while a safekeeper stays down.
        const message = (err as Error).message;
        if (message !== link.lastError) this.opts.log(`safekeeper ${link.address}: ${message}; retrying`);
        link.lastError = message;
      }
      await this.changed(backoff);
      backoff = Math.min(backoff * 2, 2000);
    }
  }

  private async serveLink(link: Link): Promise<void> {
    const t = target(this.cfg, link.address);
    const status = link.voteStatus ?? (await fetchStatus(t));
    link.voteStatus = undefined;
    if (status && status.term > this.term) throw new Superseded(`safekeeper ${link.address} promised term ${status.term}, above ours (${this.term})`);
    let start = pushStartFor(this.history, status);
    if (start > this.buffer.end) start = this.buffer.end;
    const session = await PushSession.open(t, this.term, start, this.history, (f) => this.onFeedback(link, f));
    link.session = session;
    link.sent = start;
    link.commitSent = 0n;
    if (start > link.acked) link.acked = start;
    this.recompute();
    while (link.sent < this.buffer.start) {
      const source = this.pickSource(link.sent, link);
      if (!source) throw new Error(`no peer holds WAL from ${formatLsn(link.sent)} and it is no longer buffered`);
      await copyWalInto(this.cfg, source.address, link.sent, source.end, session, this.quorumFlush, ACK_TIMEOUT_MS);
      this.opts.log(`safekeeper ${link.address}: caught up ${formatLsn(link.sent)}..${formatLsn(source.end)} from ${source.address}`);
      link.sent = source.end;
    }
    this.opts.log(`safekeeper ${link.address}: streaming from ${formatLsn(link.sent)}`);
    link.lastError = undefined;
    link.streaming = true;
    try {
      for (;;) {
        if (this.fatal) throw this.fatal;
        if (!session.isOpen) throw (await session.closed) ?? new Error('push session closed');
        if (link.sent < this.buffer.start) throw new Error(`fell behind the pusher's buffer at ${formatLsn(link.sent)}`);
        if (link.sent < this.buffer.end) {
          const data = this.buffer.read(link.sent, MAX_WAL_FRAME_PAYLOAD);
          const commit = this.quorumFlush;
          await session.sendWal(link.sent, data, commit);
          link.sent += BigInt(data.length);
          link.commitSent = commit;
          const want = link.sent;
          await session.waitUntil((s) => s.flushLsn >= want, ACK_TIMEOUT_MS, `flush up to ${formatLsn(want)}`);
          continue;
        }
        if (link.commitSent < this.quorumFlush) {
          const commit = this.quorumFlush;
          await session.sendCommit(commit);
          link.commitSent = commit;
          await session.waitUntil((s) => s.commitLsn >= commit, ACK_TIMEOUT_MS, `commit_lsn ${formatLsn(commit)}`);
          continue;
        }
        if (this.stopping && this.drained(link)) {
          await session.finish();
          link.session = undefined;
          return;
        }
        await this.changed();
      }
    } finally {
      link.streaming = false;
    }
  }
}
