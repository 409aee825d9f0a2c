/**
 * The safekeeper side of the WAL pusher (wal-pusher.ts): one link per safekeeper, each pushing the
 * buffered WAL and the quorum's commit LSN, catching a lagging safekeeper up from its peers, and
 * computing the flush position a quorum holds. The Postgres side (replication in, standby status
 * out) is the WalPusher subclass.
 */
import { formatLsn, type Lsn } from '../../../model/lsn';
import { copyWalInto, pushStartFor, quorumSize, target, type ConsensusConfig, type Election } from './consensus';
import { PgClientError } from './pg-client';
import { fetchStatus, PushSession } from './safekeeper-client';
import { MAX_WAL_FRAME_PAYLOAD, type AcceptorStatus, type FeedbackFrame, type TermHistory } from './safekeeper-protocol';
import type { WalBuffer } from './wal-buffer';

export const PUSHER_APPLICATION_NAME = 'wal_pusher';
export const PUSHER_SLOT_NAME = 'wal_pusher';
/** SQLSTATE the dev safekeeper uses when a higher term took over. */
const TERM_SUPERSEDED = 'SK001';

export const MAX_BUFFERED_BYTES = 64 * 1024 * 1024;
const ACK_TIMEOUT_MS = 30_000;

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
export class Superseded extends Error {
  override name = 'Superseded';
  constructor(reason: string) {
    super(`superseded by a newer proposer: ${reason}`);
  }
}

export interface Link {
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

export abstract class SafekeeperFanout {
  protected readonly cfg: ConsensusConfig;
  protected readonly links: Link[];
  protected term = 0n;
  protected history: TermHistory = [];
  protected election: Election | undefined;
  protected agreedLsn = 0n;
  protected buffer!: WalBuffer;
  protected quorumFlush = 0n;
  protected stopping = false;
  protected drainDeadline = 0;
  protected fatal: Error | undefined;
  protected waiters = new Set<() => void>();

  constructor(protected readonly opts: WalPusherOptions) {
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


  /** Tells Postgres how far a quorum has flushed (the Postgres side's standby status). */
  protected abstract sendStandbyStatus(): void;

  /** Ends the replication stream from Postgres, if one runs. */
  protected abstract endReplication(): void;

  protected notify(): void {
    for (const w of [...this.waiters]) w();
  }

  /** Waits for any change (new WAL, acks, stop, failure) or `ms`. */
  protected async changed(ms = 1000): Promise<void> {
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

  protected fail(err: Error): void {
    this.fatal ??= err;
    this.endReplication();
    this.notify();
  }

  protected onFeedback(link: Link, f: FeedbackFrame): void {
    if (f.term > this.term) {
      this.fail(new Superseded(`safekeeper ${link.address} moved on to term ${f.term}`));
      return;
    }
    if (f.flushLsn > link.acked) link.acked = f.flushLsn;
    this.recompute();
  }

  protected recompute(): void {
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
  protected pickSource(from: Lsn, self: Link): { address: string; end: Lsn } | undefined {
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

  protected drained(link: Link): boolean {
    return (
      link.sent === this.buffer.end &&
      link.commitSent === this.quorumFlush &&
      (this.quorumFlush === this.buffer.end || Date.now() > this.drainDeadline)
    );
  }

  protected async runLink(link: Link): Promise<void> {
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

  protected async serveLink(link: Link): Promise<void> {
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
