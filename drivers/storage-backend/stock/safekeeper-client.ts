/**
 * Talking to one safekeeper over libpq: status, election, reading WAL and pushing WAL. Every call
 * opens its own connection so a broken session never poisons the next one.
 */
import type { Lsn } from '../../../model/lsn';
import { PgClientError, PgConnection, type CopyBothSession } from './pg-client';
import {
  decodeFeedbackFrame,
  electCommand,
  encodeCommitFrame,
  encodeWalFrame,
  MAX_WAL_FRAME_PAYLOAD,
  parseStatusRow,
  readWalCommand,
  startWalPushCommand,
  timelineStatusCommand,
  type AcceptorStatus,
  type FeedbackFrame,
  type TermHistory,
} from './safekeeper-protocol';

export interface SafekeeperTarget {
  /** host:port of the safekeeper's libpq listener, as in neon.safekeepers. */
  address: string;
  tenantId: string;
  timelineId: string;
  authToken?: string;
  connectTimeoutMs?: number;
  applicationName?: string;
  /** The compute's system identifier, told to the safekeeper with a push (for its standbys). */
  systemId?: string;
}

export function splitHostPort(address: string): { host: string; port: number } {
  const m = /^(.+):(\d{1,5})$/.exec(address.trim());
  const port = m ? Number(m[2]) : NaN;
  if (!m || !(port > 0 && port < 65536)) throw new RangeError(`safekeeper address must be host:port, got ${JSON.stringify(address)}`);
  return { host: m[1]!.replace(/^\[(.*)\]$/, '$1'), port };
}

async function connect(t: SafekeeperTarget): Promise<PgConnection> {
  const { host, port } = splitHostPort(t.address);
  return PgConnection.connect({
    host,
    port,
    user: 'cloud_admin',
    database: 'postgres',
    ...(t.authToken !== undefined ? { password: t.authToken } : {}),
    connectTimeoutMs: t.connectTimeoutMs ?? 5000,
    params: {
      application_name: t.applicationName ?? 'wal_pusher',
      // As Neon's compute does: the timeline rides in the startup options.
      options: `-c tenant_id=${t.tenantId} -c timeline_id=${t.timelineId}`,
    },
  });
}

async function withConnection<T>(t: SafekeeperTarget, fn: (c: PgConnection) => Promise<T>): Promise<T> {
  const c = await connect(t);
  try {
    return await fn(c);
  } finally {
    await c.close();
  }
}

/** The safekeeper's view of the timeline, or null if it does not know it. */
export async function fetchStatus(t: SafekeeperTarget): Promise<AcceptorStatus | null> {
  return withConnection(t, async (c) => {
    const r = await c.query(timelineStatusCommand(t.tenantId, t.timelineId));
    if (r.rows.length === 0) return null;
    return parseStatusRow(r.columns, r.rows[0]!);
  });
}

export interface ElectResult {
  accepted: boolean;
  status: AcceptorStatus;
}

export async function elect(t: SafekeeperTarget, term: bigint): Promise<ElectResult> {
  return withConnection(t, async (c) => {
    const r = await c.query(electCommand(t.tenantId, t.timelineId, term));
    const row = r.rows[0];
    if (!row) throw new PgClientError(`safekeeper ${t.address} answered ELECT without a row`);
    return { accepted: row[r.columns.indexOf('accepted')] === 't', status: parseStatusRow(r.columns, row) };
  });
}

/** WAL bytes [start, end) as the safekeeper stores them. */
export async function* readWal(t: SafekeeperTarget, start: Lsn, end: Lsn): AsyncGenerator<Buffer> {
  const c = await connect(t);
  try {
    yield* c.copyOut(readWalCommand(t.tenantId, t.timelineId, start, end));
  } finally {
    await c.close();
  }
}

/**
 * An open WAL push session. `sendWal` / `sendCommit` send frames; the safekeeper's latest feedback
 * is kept in `flushLsn` / `commitLsn` (and reported through `onFeedback`). `closed` resolves when
 * the session ends, with the reason if it failed; it never rejects.
 */
export class PushSession {
  flushLsn: Lsn;
  commitLsn: Lsn = 0n;
  term: bigint;
  private endError: Error | undefined;
  private ended = false;
  private waiters = new Set<() => void>();
  readonly closed: Promise<Error | undefined>;

  private constructor(
    private readonly conn: PgConnection,
    private readonly copy: CopyBothSession,
    startLsn: Lsn,
    term: bigint,
    onFeedback: ((f: FeedbackFrame) => void) | undefined,
  ) {
    this.flushLsn = startLsn;
    this.term = term;
    this.closed = (async () => {
      try {
        for await (const payload of copy.incoming) {
          const f = decodeFeedbackFrame(payload);
          this.flushLsn = f.flushLsn;
          this.commitLsn = f.commitLsn;
          this.term = f.term;
          onFeedback?.(f);
          this.notify();
        }
        return undefined;
      } catch (err) {
        this.endError = err as Error;
        return this.endError;
      } finally {
        this.ended = true;
        this.notify();
        await conn.close().catch(() => undefined);
      }
    })();
  }

  static async open(
    t: SafekeeperTarget,
    term: bigint,
    startLsn: Lsn,
    history: TermHistory,
    onFeedback?: (f: FeedbackFrame) => void,
  ): Promise<PushSession> {
    const conn = await connect(t);
    let copy: CopyBothSession;
    try {
      copy = await conn.copyBoth(startWalPushCommand(t.tenantId, t.timelineId, term, startLsn, history, t.systemId));
    } catch (err) {
      await conn.close();
      throw err;
    }
    return new PushSession(conn, copy, startLsn, term, onFeedback);
  }

  get isOpen(): boolean {
    return !this.ended;
  }

  private notify(): void {
    for (const w of [...this.waiters]) w();
  }

  /** Resolves once `pred` holds for the latest feedback; rejects if the session ends or time runs out. */
  async waitUntil(pred: (s: PushSession) => boolean, timeoutMs: number, what: string): Promise<void> {
    if (pred(this)) return;
    await new Promise<void>((resolve, reject) => {
      const check = () => {
        if (pred(this)) done();
        else if (this.ended) done(this.endError ?? new PgClientError(`push session ended before ${what}`));
      };
      const timer = setTimeout(() => done(new PgClientError(`timed out after ${timeoutMs} ms waiting for ${what}`)), timeoutMs);
      const done = (err?: Error) => {
        clearTimeout(timer);
        this.waiters.delete(check);
        if (err) reject(err);
        else resolve();
      };
      this.waiters.add(check);
      check();
    });
  }

  /** Sends WAL starting at `start` (with the commit LSN known so far), split into frames the safekeeper accepts. */
  async sendWal(start: Lsn, data: Buffer, commitLsn: Lsn): Promise<void> {
    for (let off = 0; off < data.length; off += MAX_WAL_FRAME_PAYLOAD) {
      const part = data.subarray(off, Math.min(data.length, off + MAX_WAL_FRAME_PAYLOAD));
      await this.copy.send(encodeWalFrame(start + BigInt(off), commitLsn, part));
    }
  }

  async sendCommit(commitLsn: Lsn): Promise<void> {
    await this.copy.send(encodeCommitFrame(commitLsn));
  }

  /** Ends the session cleanly: the safekeeper has persisted its state once this resolves. */
  async finish(): Promise<void> {
    if (!this.ended) await this.copy.finish().catch((err: unknown) => (this.endError ??= err as Error));
    const err = await this.closed;
    if (err) throw err;
  }

  abort(): void {
    this.conn.destroy();
  }
}
