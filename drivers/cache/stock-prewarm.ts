/**
 * One prewarm of stock PostgreSQL's shared_buffers (stock-backend.ts): walks the captured block
 * ranges from the resume point and loads them with pg_prewarm, never evicting.
 */
import type { BlockRange, CacheState, PrewarmProgress } from '../../model/cache-state';
import { FORK_NAMES, NO_PROGRESS, cacheStatePages, validResumePoint } from '../../model/cache-state';
import { incompatibleCacheState, type PrewarmCounts, type PrewarmOptions } from './backend';
import { normalizeSpans, relForkKey, subtractCached, type Span } from './block-ranges';
import { cancellableQuery, ensureExtension, openSession, throwIfAborted, type ConnectFn, type Session } from './pg-session';

/**
 * Counting unused buffers means a full pg_buffercache scan (PostgreSQL 15 has no summary
 * function; ~80 ms for 1 GiB of shared_buffers), a cost comparable to loading 64 MiB. So the count
 * from the initial scan is kept while it leaves a margin of a tenth of shared_buffers (at least
 * 1024 buffers) over everything still to load; closer to the limit it is refreshed per database,
 * every recountEveryBlocks, and whenever the estimate runs out.
 */
const SESSION_RESERVE = 64;

const MAX_PIECES_PER_STATEMENT = 2000;
const NO_SUCH_DATABASE = '3D000';

export interface NumericRow {
  [column: string]: string | number | null;
}

export const num = (v: string | number | null | undefined): number => Number(v);

function snapshotSql(bc: string): string {
  // Only valid buffers come back; the unused ones are shared_buffers minus those, which saves
  // materializing the whole buffer list a second time.
  return `
    with runs as (
      select *, blk - row_number() over (partition by db, spc, rel, fork order by blk) as run
      from (select distinct reldatabase as db, reltablespace as spc, relfilenode as rel, relforknumber as fork, relblocknumber as blk
            from ${bc}.pg_buffercache where relfilenode is not null) b
    )
    select db::int8, spc::int8, rel::int8, fork::int, min(blk)::int8 as first, count(*)::int8 as n
    from runs group by db, spc, rel, fork, run`;
}

const freeSql = (bc: string) => `select count(*)::int8 as free from ${bc}.pg_buffercache where relfilenode is null`;

// pg_filenode_relation() is NULL for a relation dropped or rewritten since the capture;
// pg_relation_size() is NULL if it disappears between the two calls.
const RESOLVE_SQL = `
  select t.ord::int as ord, c.oid::int8 as oid,
         coalesce(pg_relation_size(c.oid::regclass, t.fork), 0) / current_setting('block_size')::int8 as nblocks
  from unnest($1::oid[], $2::oid[], $3::text[]) with ordinality as t(spc, rel, fork, ord)
  left join pg_class c on c.oid = pg_filenode_relation(t.spc, t.rel)`;

/**
 * Loads pieces and returns how many blocks were read. Each piece is clamped to the relation's
 * size at this moment and skipped if the relation is gone, so a concurrent DROP or truncation
 * shows up as skipped blocks rather than an error.
 */
const loadSql = (pw: string) => `
  select coalesce(sum(case when s.nblocks > p.first
                           then ${pw}.pg_prewarm(p.rel::regclass, 'buffer', p.fork, p.first, least(p.last, s.nblocks - 1))
                           else 0 end), 0)::int8 as loaded
  from unnest($1::oid[], $2::text[], $3::int8[], $4::int8[]) as p(rel, fork, first, last)
  cross join lateral (select coalesce(pg_relation_size(p.rel::regclass, p.fork), 0) / current_setting('block_size')::int8 as nblocks) s`;

export async function serverBlockSize(session: Session): Promise<number> {
  const { rows } = await session.client.query<{ bs: number }>(`select current_setting('block_size')::int as bs`);
  return rows[0]!.bs;
}

interface ForkTarget {
  oid: number | null;
  nblocks: number;
}

interface Position {
  rangeIndex: number;
  blockOffset: number;
}

type Pending = { kind: 'skip'; blocks: number; end: Position } | { kind: 'load'; rel: number; fork: string; first: number; blocks: number; end: Position };

/** One prewarm run: walks the ranges in order from the resume point, batching pg_prewarm calls. */
export class StockPrewarm {
  private readonly ranges: readonly BlockRange[];
  private readonly total: number;
  private progress: PrewarmProgress;
  private readonly resumedAt: PrewarmProgress;
  private readonly sessions = new Map<string, Session>();
  private control!: Session;
  private bufferCacheSchema = '';
  private cached = new Map<string, Span[]>();
  private budget = 0;
  private sharedBuffers = 0;
  private loadedSinceCount = 0;
  private full = false;
  private pending: Pending[] = [];
  private pendingLoadBlocks = 0;

  constructor(
    private readonly connect: ConnectFn,
    private readonly maintenance: string,
    private readonly limits: { batchBlocks: number; recountEvery: number; reserve: number },
    private readonly state: Extract<CacheState, { kind: 'block-ranges' }>,
    private readonly opts: PrewarmOptions,
  ) {
    this.ranges = state.ranges;
    this.total = cacheStatePages(state);
    this.resumedAt = validResumePoint(state, opts.resumeFrom) ?? NO_PROGRESS;
    this.progress = { ...this.resumedAt };
  }

  private get signal(): AbortSignal {
    return this.opts.signal;
  }

  private readonly cancelVia = () => openSession(this.connect, this.maintenance);

  async run(): Promise<PrewarmCounts> {
    throwIfAborted(this.signal);
    try {
      this.control = await openSession(this.connect, this.maintenance);
      this.sessions.set(this.maintenance, this.control);
      this.bufferCacheSchema = await ensureExtension(this.control, 'pg_buffercache');
      const { rows } = await this.control.client.query<{ bs: number; nbuffers: number }>(
        `select current_setting('block_size')::int as bs, (select setting::int from pg_settings where name = 'shared_buffers') as nbuffers`,
      );
      const blockSize = rows[0]!.bs;
      this.sharedBuffers = rows[0]!.nbuffers;
      if (blockSize !== this.state.blockSize) throw incompatibleCacheState(`captured with ${this.state.blockSize}-byte blocks, this server uses ${blockSize}`);
      await this.snapshotBuffers();
      const databases = await this.databases();

      let i = this.progress.rangeIndex;
      while (i < this.ranges.length) {
        const database = this.ranges[i]!.database;
        let groupEnd = i;
        while (groupEnd < this.ranges.length && this.ranges[groupEnd]!.database === database) groupEnd++;
        await this.prewarmDatabase(database === 0 ? this.maintenance : databases.get(database), i, groupEnd);
        i = groupEnd;
      }
      const { prewarmed, skipped } = this.progress;
      if (prewarmed + skipped !== this.total) throw new Error(`prewarm accounting error: ${prewarmed} + ${skipped} != ${this.total}`);
      return { total: this.total, prewarmed, skipped };
    } finally {
      await Promise.all([...this.sessions.values()].map((s) => s.close()));
    }
  }

  /** Cached blocks per relation fork, and the unused-buffer count, from one pg_buffercache scan. */
  private async snapshotBuffers(): Promise<void> {
    const { rows } = await cancellableQuery<NumericRow>(this.control, snapshotSql(this.bufferCacheSchema), [], this.signal, this.cancelVia);
    const spans = new Map<string, Span[]>();
    let valid = 0;
    for (const r of rows) {
      valid += num(r.n);
      const key = relForkKey(num(r.db), num(r.spc), num(r.rel), num(r.fork));
      let list = spans.get(key);
      if (!list) spans.set(key, (list = []));
      list.push({ start: num(r.first), end: num(r.first) + num(r.n) });
    }
    for (const [key, list] of spans) this.cached.set(key, normalizeSpans(list));
    this.setBudget(this.sharedBuffers - valid);
  }

  private async recountFree(): Promise<void> {
    const { rows } = await cancellableQuery<NumericRow>(this.control, freeSql(this.bufferCacheSchema), [], this.signal, this.cancelVia);
    this.setBudget(num(rows[0]!.free));
  }

  private setBudget(free: number): void {
    this.budget = Math.max(0, free - this.limits.reserve);
    this.loadedSinceCount = 0;
  }

  /** Whether the estimated unused buffers exceed everything still to load by a safe margin. */
  private comfortable(): boolean {
    const left = this.total - this.progress.prewarmed - this.progress.skipped;
    return this.budget - left >= Math.max(1024, Math.floor(this.sharedBuffers / 10));
  }

  /**
   * Connectable databases by OID. Template databases are left out on purpose: a session held
   * in template1 would make a concurrent CREATE DATABASE fail.
   */
  private async databases(): Promise<Map<number, string>> {
    const { rows } = await this.control.client.query<{ oid: string; datname: string }>(
      'select oid::int8 as oid, datname from pg_database where datallowconn and not datistemplate',
    );
    return new Map(rows.map((r) => [Number(r.oid), r.datname]));
  }

  private async sessionFor(database: string): Promise<{ session: Session; prewarmSchema: string } | null> {
    let session = this.sessions.get(database);
    if (!session) {
      try {
        session = await openSession(this.connect, database);
        this.budget = Math.max(0, this.budget - SESSION_RESERVE);
      } catch (err) {
        if ((err as { code?: string }).code === NO_SUCH_DATABASE) return null; // dropped since we listed it
        throw err;
      }
      this.sessions.set(database, session);
    }
    return { session, prewarmSchema: await ensureExtension(session, 'pg_prewarm') };
  }

  private async prewarmDatabase(database: string | undefined, from: number, to: number): Promise<void> {
    const target = database === undefined || this.full ? null : await this.sessionFor(database);
    if (!target) {
      // Database gone, not connectable, or the cache already full: all its blocks are skipped.
      for (let r = from; r < to; r++) this.queueSkip(this.ranges[r]!.blockCount - this.offsetIn(r), { rangeIndex: r + 1, blockOffset: 0 });
      this.flushSkipsOnly();
      return;
    }
    const forks = await this.resolve(target.session, from, to);
    // Connecting and resolving relations read catalog pages into unused buffers.
    if (!this.comfortable()) await this.recountFree();
    for (let r = from; r < to; r++) await this.prewarmRange(target, r, forks.get(this.forkKeyOf(this.ranges[r]!))!);
    await this.flush(target);
    if (target.session !== this.control) {
      this.sessions.delete(target.session.database);
      await target.session.close();
    }
  }

  private forkKeyOf(r: BlockRange): string {
    return relForkKey(r.database, r.tablespace, r.relfilenode, r.fork);
  }

  /** Blocks of range `rangeIndex` an earlier attempt already did (only the resume range has any). */
  private offsetIn(rangeIndex: number): number {
    return rangeIndex === this.resumedAt.rangeIndex ? this.resumedAt.blockOffset : 0;
  }

  /** Relation OID and current size in blocks of every fork ranges [from, to) name. */
  private async resolve(session: Session, from: number, to: number): Promise<Map<string, ForkTarget>> {
    const keys: string[] = [];
    const spc: number[] = [];
    const rel: number[] = [];
    const fork: string[] = [];
    const seen = new Set<string>();
    for (let r = from; r < to; r++) {
      const range = this.ranges[r]!;
      const key = this.forkKeyOf(range);
      if (seen.has(key)) continue;
      seen.add(key);
      keys.push(key);
      spc.push(range.tablespace);
      rel.push(range.relfilenode);
      fork.push(FORK_NAMES[range.fork]);
    }
    const { rows } = await cancellableQuery<NumericRow>(session, RESOLVE_SQL, [spc, rel, fork], this.signal, this.cancelVia);
    const out = new Map<string, ForkTarget>();
    for (const row of rows) out.set(keys[num(row.ord) - 1]!, { oid: row.oid === null ? null : num(row.oid), nblocks: num(row.nblocks) });
    return out;
  }

  private async prewarmRange(target: { session: Session; prewarmSchema: string }, r: number, fork: ForkTarget): Promise<void> {
    // Long runs of skipped ranges still report progress now and then.
    if (this.pending.length >= MAX_PIECES_PER_STATEMENT) await this.flush(target);
    const range = this.ranges[r]!;
    const offset = this.offsetIn(r);
    const at = (block: number): Position =>
      block - range.firstBlock >= range.blockCount ? { rangeIndex: r + 1, blockOffset: 0 } : { rangeIndex: r, blockOffset: block - range.firstBlock };
    const start = range.firstBlock + offset;
    const end = range.firstBlock + range.blockCount;
    if (this.full || fork.oid === null) {
      this.queueSkip(end - start, at(end));
      return;
    }
    const existingEnd = Math.max(start, Math.min(end, fork.nblocks));
    const { missing } = subtractCached({ start, end: existingEnd }, this.cached.get(this.forkKeyOf(range)) ?? []);
    let cursor = start;
    for (const span of missing) {
      if (span.start > cursor) this.queueSkip(span.start - cursor, at(span.start)); // already cached
      cursor = span.start;
      while (cursor < span.end) {
        if (this.budget === 0) {
          await this.flush(target);
          await this.recountFree();
          if (this.budget === 0) {
            this.full = true;
            break;
          }
        }
        if (this.pendingLoadBlocks >= this.limits.batchBlocks || this.pending.length >= MAX_PIECES_PER_STATEMENT) await this.flush(target);
        const take = Math.min(span.end - cursor, this.budget, this.limits.batchBlocks - this.pendingLoadBlocks);
        this.pending.push({ kind: 'load', rel: fork.oid, fork: FORK_NAMES[range.fork], first: cursor, blocks: take, end: at(cursor + take) });
        this.pendingLoadBlocks += take;
        this.budget -= take;
        cursor += take;
      }
      if (this.full) break;
    }
    // Blocks past the relation's current end (truncated), cached ones after the last gap, or
    // everything left once the cache is full.
    if (end > cursor) this.queueSkip(end - cursor, at(end));
  }

  private queueSkip(blocks: number, end: Position): void {
    if (blocks > 0) this.pending.push({ kind: 'skip', blocks, end });
  }

  private flushSkipsOnly(): void {
    let skipped = 0;
    let last: Position | undefined;
    for (const p of this.pending) {
      if (p.kind !== 'skip') throw new Error('internal: loads pending without a session');
      skipped += p.blocks;
      last = p.end;
    }
    this.pending = [];
    if (last) this.advance(0, skipped, last);
  }

  /** Runs the pending loads as one statement, then reports progress up to the last pending entry. */
  private async flush(target: { session: Session; prewarmSchema: string }): Promise<void> {
    if (this.pending.length === 0) return;
    const loads = this.pending.filter((p): p is Extract<Pending, { kind: 'load' }> => p.kind === 'load');
    let skipped = 0;
    for (const p of this.pending) if (p.kind === 'skip') skipped += p.blocks;
    let loaded = 0;
    if (loads.length > 0) {
      const args = [loads.map((p) => p.rel), loads.map((p) => p.fork), loads.map((p) => p.first), loads.map((p) => p.first + p.blocks - 1)];
      const sql = loadSql(target.prewarmSchema);
      let result;
      try {
        result = await cancellableQuery<NumericRow>(target.session, sql, args, this.signal, this.cancelVia);
      } catch (err) {
        // A relation dropped between the size check and pg_prewarm's open fails the statement;
        // run it once more, when the clamp sees the relation gone.
        if (this.signal.aborted) throw err;
        result = await cancellableQuery<NumericRow>(target.session, sql, args, this.signal, this.cancelVia);
      }
      loaded = num(result.rows[0]!.loaded);
    }
    const requested = this.pendingLoadBlocks;
    this.loadedSinceCount += loaded;
    const last = this.pending[this.pending.length - 1]!.end;
    this.pending = [];
    this.pendingLoadBlocks = 0;
    this.advance(loaded, skipped + requested - loaded, last);
    if (loads.length > 0) await this.opts.afterBatch?.({ ...this.progress });
    if (this.loadedSinceCount >= this.limits.recountEvery && !this.comfortable()) await this.recountFree();
  }

  private advance(prewarmed: number, skipped: number, to: Position): void {
    this.progress = { rangeIndex: to.rangeIndex, blockOffset: to.blockOffset, prewarmed: this.progress.prewarmed + prewarmed, skipped: this.progress.skipped + skipped };
    this.opts.onProgress({ ...this.progress });
  }
}
