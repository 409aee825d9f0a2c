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
import { quorumSize, runElection } from './consensus';
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
import { compactHistory } from './safekeeper-protocol';
import { MAX_BUFFERED_BYTES, PUSHER_APPLICATION_NAME, PUSHER_SLOT_NAME, SafekeeperFanout, Superseded } from './safekeeper-fanout';
import { WalBuffer } from './wal-buffer';

export { PUSHER_APPLICATION_NAME, PUSHER_SLOT_NAME, type WalPusherOptions } from './safekeeper-fanout';

const STATUS_INTERVAL_MS = 10_000;
/** How long the pusher keeps trying to get the last WAL to a quorum (and all) after Postgres stopped. */
const FINAL_DRAIN_MS = 20_000;

export class WalPusher extends SafekeeperFanout {
  private replication: CopyBothSession | undefined;
  private postmaster!: PostmasterInfo;
  private postmasterStart: string | undefined;
  private stopRequested = false;

  /** Asks the pusher to stop as if Postgres had gone (SIGTERM). */
  requestStop(): void {
    this.stopRequested = true;
    this.replication?.finish().catch(() => undefined);
    this.notify();
  }


  private postmasterAlive(): boolean {
    return processStartTime(this.postmaster.pid) === this.postmasterStart;
  }


  protected endReplication(): void {
    this.replication?.finish().catch(() => undefined);
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

  protected sendStandbyStatus(): void {
    const copy = this.replication;
    if (!copy) return;
    const end = this.buffer.end;
    const flush = this.quorumFlush < end ? this.quorumFlush : end;
    copy.send(encodeStandbyStatus(end, flush, flush)).catch(() => undefined);
  }

}
