/**
 * The pageserver's operations, independent of the protocols that expose them: timeline creation
 * (bootstrap, branch, import hook), listing, deletion, TimelineInfo, and the image for a base
 * backup at an LSN. Errors carry an HTTP-ish status so both front ends can map them.
 */
import { promises as fsp } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { formatLsn, parseLsn } from '../../../model/lsn';
import type { PgInstallation } from '../../../common/pg-binaries';
import { chownForPostgres } from '../../../common/pg-identity';
import { exists, fsyncDir, fsyncTree, linkTree, writeJsonAtomic } from './fs-util';
import { hasPrecomputedBasebackup, IMAGE_FILE, PGDATA_DIR, TARBALL, type ImageMeta, type ImageRetention } from './images';
import { KeyedMutex, LockWaitTimeout } from './keyed-mutex';
import { materializeAt } from './materialize';
import { PgdataImports, type PgdataImportRecord } from './pgdata-imports';
import { runInitdb } from './postgres-run';
import type { SafekeeperClient } from './safekeeper-client';
import type { TimelineCreation, TimelineMeta, TimelineStore } from './timeline-store';

export class PageserverError extends Error {
  override name = 'PageserverError';
  constructor(
    public readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export const SUPPORTED_PG_VERSION = 15;

/** What a base backup is made from: a precomputed gzip'd tar, or an image's pgdata packed per request. */
export type BasebackupSource = { kind: 'tarball'; file: FileHandle } | { kind: 'pgdata'; pgdata: string; release: () => void };

/** Enough to serve the latest state and the one before it without a replay. */
/** How long a timeline whose base backup was served waits for its compute to connect before the watch ends. */
const INGEST_GRACE_MS = 10 * 60 * 1000;

export const DEFAULT_IMAGE_RETENTION: ImageRetention = { keepNewest: 2, graceMs: 10 * 60 * 1000 };

/**
 * Extension point for `import_pgdata`: fetch and validate the data directory (cleanly shut down
 * PostgreSQL 15) into `targetPgdata`. The pageserver then makes it the timeline's first image.
 * With `isCommitted`, the import runs in the background and first waits for the upload's commit
 * marker (Neon's behaviour); `validate` refuses a malformed request before anything is recorded.
 */
export type ImportPgdataHandler = ((request: {
  tenantId: string;
  timelineId: string;
  importPgdata: unknown;
  targetPgdata: string;
  signal?: AbortSignal;
}) => Promise<unknown>) & {
  validate?: (importPgdata: unknown) => unknown;
  isCommitted?: (importPgdata: unknown) => Promise<boolean>;
};

export type CreateTimelineRequest =
  | { mode: 'bootstrap'; timelineId: string; pgVersion: number }
  | { mode: 'branch'; timelineId: string; ancestorTimelineId: string; ancestorStartLsn: bigint | undefined }
  | { mode: 'import'; timelineId: string; importPgdata: unknown; idempotencyKey: string | null };

export interface ServiceDeps {
  store: TimelineStore;
  safekeepers: SafekeeperClient;
  install: PgInstallation;
  materializeTimeoutMs: number;
  /**
   * Longest wait for a timeline's lock before a base backup or branch gives up with an error
   * naming the holder (default: three materializations' worth, so a short queue of replays passes).
   */
  lockWaitMs?: number;
  /** Which images survive once newer ones exist; default: the first, the newest two, and any under 10 minutes old. */
  imageRetention?: ImageRetention;
  importPgdata?: ImportPgdataHandler;
  /** Background imports (with a handler that has `isCommitted`): poll interval and completion callback. */
  imports?: { pollIntervalMs: number; onComplete?: (record: PgdataImportRecord) => Promise<void> };
  /**
   * How often a timeline whose primary compute has started is checked for WAL to ingest (default
   * 500 ms; 0 turns background ingest off, so every new LSN is replayed on request).
   */
  ingestPollMs?: number;
  log: (line: string) => void;
}

interface TimelineState {
  meta: TimelineMeta;
  images: ImageMeta[];
  lastRecordLsn: bigint;
  prevRecordLsn: bigint | null;
  flushes: Awaited<ReturnType<SafekeeperClient['flushLsns']>>;
}

export class PageserverService {
  private readonly tenantLocks = new KeyedMutex('tenant lock');
  private readonly timelineLocks = new KeyedMutex('timeline lock');
  /** Images a base backup is being packed from, by `<tenant>/<timeline>@<lsn>`: never collected. */
  private readonly pins = new Map<string, number>();
  /** Image garbage collection running after base backups, one at a time; close() waits for it. */
  private gc: Promise<void> = Promise.resolve();
  /** Imports running in the background or failed; undefined without a background-capable handler. */
  private readonly imports: PgdataImports | undefined;
  /** Background WAL ingest: timelines with a primary compute since their newest image, and the quorum flush LSN seen last. */
  private readonly ingestWatch = new Map<string, { tenantId: string; timelineId: string; since: number; sawCompute: boolean; lastQuorum?: bigint }>();
  private ingestTimer: NodeJS.Timeout | undefined;
  private ingestRound: Promise<void> = Promise.resolve();
  private closing = false;

  constructor(private readonly deps: ServiceDeps) {
    const handler = deps.importPgdata;
    if (handler?.isCommitted) {
      const isCommitted = handler.isCommitted;
      this.imports = new PgdataImports({
        dir: path.join(path.dirname(deps.store.tenantsDir), 'imports'),
        pollIntervalMs: deps.imports?.pollIntervalMs ?? 10_000,
        onComplete: deps.imports?.onComplete,
        log: deps.log,
        runner: {
          isCommitted: (record) => isCommitted(record.import_pgdata),
          build: (record, signal) =>
            this.buildImportedTimeline(record.tenant_id, record.timeline_id, record.import_pgdata, { mode: 'import', idempotency_key: record.idempotency_key }, signal),
        },
      });
    }
  }

  /** Resumes background imports a previous run of the pageserver left running. */
  async init(): Promise<void> {
    await this.imports?.init();
  }

  async close(): Promise<void> {
    this.closing = true;
    if (this.ingestTimer) clearInterval(this.ingestTimer);
    await this.ingestRound;
    await this.imports?.close();
    await this.gc;
  }

  /**
   * Neon's pageserver ingests a timeline's WAL as the safekeepers receive it, so a compute that
   * starts again later gets its base backup at once. The dev pageserver replays WAL into a new
   * image instead, which takes seconds; doing it on request put those seconds on the next
   * compute's cold start. So once a primary compute has started on a timeline, the pageserver
   * watches the safekeepers, and when no compute is connected any more and the quorum flush LSN
   * holds still for one poll, it builds the image at that LSN in the background: the LSN the next
   * start will ask for.
   */
  watchForIngest(tenantId: string, timelineId: string): void {
    const pollMs = this.deps.ingestPollMs ?? 500;
    if (pollMs <= 0 || this.closing || this.deps.safekeepers.count === 0) return;
    this.ingestWatch.set(`${tenantId}/${timelineId}`, { tenantId, timelineId, since: Date.now(), sawCompute: false });
    this.ingestTimer ??= setInterval(() => {
      // One round at a time; a slow replay simply delays the next poll.
      this.ingestRound = this.ingestRound.then(() => this.ingestOnce());
    }, pollMs).unref();
  }

  private async ingestOnce(): Promise<void> {
    for (const [key, watched] of [...this.ingestWatch]) {
      if (this.closing) return;
      try {
        const meta = await this.deps.store.get(watched.tenantId, watched.timelineId);
        if (!meta) {
          this.ingestWatch.delete(key);
          continue;
        }
        const s = await this.state(meta);
        if (s.flushes.some((f) => f.computeConnected)) {
          watched.sawCompute = true;
          watched.lastQuorum = undefined;
          continue;
        }
        const newest = parseLsn(s.images[s.images.length - 1]!.lsn);
        if (s.lastRecordLsn <= newest) {
          // Nothing new: done once the compute has come and gone (or never came within the grace).
          if (watched.sawCompute || Date.now() - watched.since > INGEST_GRACE_MS) this.ingestWatch.delete(key);
          continue;
        }
        if (watched.lastQuorum !== s.lastRecordLsn) {
          watched.lastQuorum = s.lastRecordLsn;
          continue;
        }
        const started = Date.now();
        await this.imageAt(meta, s.lastRecordLsn, 'LSN');
        this.ingestWatch.delete(key);
        this.deps.log(`ingested ${key} up to ${formatLsn(s.lastRecordLsn)} in ${Date.now() - started} ms`);
      } catch (err) {
        // Left in the watch: the next round tries again; a base backup request would too.
        this.deps.log(`background ingest of ${key} failed: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
    if (this.ingestWatch.size === 0 && this.ingestTimer) {
      clearInterval(this.ingestTimer);
      this.ingestTimer = undefined;
    }
  }

  private async meta(tenantId: string, timelineId: string): Promise<TimelineMeta> {
    const meta = await this.deps.store.get(tenantId, timelineId);
    if (!meta) throw new PageserverError(404, `timeline ${tenantId}/${timelineId} not found`);
    return meta;
  }

  /** Images, safekeeper positions and the resulting last_record_lsn of a timeline. */
  private async state(meta: TimelineMeta): Promise<TimelineState> {
    const images = await this.deps.store.images(meta.tenant_id, meta.timeline_id).list();
    const newest = images[images.length - 1];
    if (!newest) throw new PageserverError(500, `timeline ${meta.tenant_id}/${meta.timeline_id} has no image`);
    const flushes = this.deps.safekeepers.count > 0 ? await this.deps.safekeepers.flushLsns(meta.tenant_id, meta.timeline_id) : [];
    const quorum = this.deps.safekeepers.quorumFlush(flushes);
    const imageLsn = parseLsn(newest.lsn);
    const lastRecordLsn = quorum !== undefined && quorum > imageLsn ? quorum : imageLsn;
    const prevRecordLsn = lastRecordLsn === imageLsn ? parseLsn(newest.prev_record_lsn) : null;
    return { meta, images, lastRecordLsn, prevRecordLsn, flushes };
  }

  private timelineInfoOf(s: TimelineState): Record<string, unknown> {
    const newest = s.images[s.images.length - 1]!;
    return {
      tenant_id: s.meta.tenant_id,
      timeline_id: s.meta.timeline_id,
      ancestor_timeline_id: s.meta.ancestor_timeline_id,
      ancestor_lsn: s.meta.ancestor_lsn,
      last_record_lsn: formatLsn(s.lastRecordLsn),
      prev_record_lsn: s.prevRecordLsn === null ? null : formatLsn(s.prevRecordLsn),
      disk_consistent_lsn: newest.lsn,
      remote_consistent_lsn: newest.lsn,
      remote_consistent_lsn_visible: newest.lsn,
      initdb_lsn: s.meta.initdb_lsn,
      latest_gc_cutoff_lsn: s.meta.start_lsn,
      applied_gc_cutoff_lsn: s.meta.start_lsn,
      pg_version: s.meta.pg_version,
      state: 'Active',
      walreceiver_status: s.flushes.length > 0 ? 'connected' : 'disconnected',
      current_logical_size: 0,
      current_physical_size: s.images.reduce((n, i) => n + i.basebackup_bytes, 0),
      is_archived: false,
      // Dev extras: the images the pageserver holds (each a cheap base backup).
      image_lsns: s.images.map((i) => i.lsn),
      // The import that created the timeline, from its durable record (Neon keeps it in the
      // timeline's index_part as import_pgdata Done {idempotency_key}): who may delete it.
      import_pgdata: s.meta.creation.mode === 'import' ? { state: 'done', idempotency_key: s.meta.creation.idempotency_key } : null,
    };
  }

  async timelineInfo(tenantId: string, timelineId: string): Promise<Record<string, unknown>> {
    const importing = this.imports?.get(tenantId, timelineId);
    if (importing && !(await this.deps.store.get(tenantId, timelineId))) return this.importingInfoOf(importing);
    return this.timelineInfoOf(await this.state(await this.meta(tenantId, timelineId)));
  }

  /** A timeline whose import has not finished: Loading while it runs, Broken with the reason once it failed. */
  private importingInfoOf(record: PgdataImportRecord): Record<string, unknown> {
    return {
      tenant_id: record.tenant_id,
      timeline_id: record.timeline_id,
      ancestor_timeline_id: null,
      ancestor_lsn: null,
      last_record_lsn: '0/0',
      prev_record_lsn: null,
      disk_consistent_lsn: '0/0',
      remote_consistent_lsn: '0/0',
      pg_version: SUPPORTED_PG_VERSION,
      state: record.state === 'failed' ? { Broken: { reason: `import_pgdata failed: ${record.error}`, backtrace: '' } } : 'Loading',
      // Dev extra: what the import is doing.
      import_pgdata: {
        state: record.state,
        // The durable import record's key (Neon's index_part import_pgdata InProgress {idempotency_key}).
        idempotency_key: record.idempotency_key,
        error: record.error,
        started_at: record.started_at,
        finished_at: record.finished_at,
      },
    };
  }

  async listTimelines(tenantId: string): Promise<Record<string, unknown>[]> {
    if (!(await this.deps.store.tenantExists(tenantId))) throw new PageserverError(404, `tenant ${tenantId} not found`);
    const metas = await this.deps.store.list(tenantId);
    return Promise.all(metas.map(async (m) => this.timelineInfoOf(await this.state(m))));
  }

  async listTenants(): Promise<{ id: string }[]> {
    return (await this.deps.store.listTenants()).map((id) => ({ id }));
  }

  async ensureTenant(tenantId: string): Promise<void> {
    await this.tenantLocks.run(tenantId, () => this.deps.store.ensureTenant(tenantId));
  }

  /** Creates a timeline; an identical repeat answers the existing one, a different one is a 409. */
  async createTimeline(tenantId: string, req: CreateTimelineRequest): Promise<Record<string, unknown>> {
    await this.tenantLocks.run(tenantId, async () => {
      const creation = this.creationOf(req);
      const importing = this.imports?.get(tenantId, req.timelineId);
      if (importing && !(await this.deps.store.get(tenantId, req.timelineId))) {
        if (req.mode !== 'import' || importing.idempotency_key !== req.idempotencyKey) {
          throw new PageserverError(409, `timeline ${tenantId}/${req.timelineId} is being imported with another idempotency key`);
        }
        // The same import again: still running is "come back later"; failed is answered with the broken timeline.
        if (importing.state === 'running') throw new PageserverError(429, `import_pgdata of ${tenantId}/${req.timelineId} is still in progress`);
        return;
      }
      const existing = await this.deps.store.get(tenantId, req.timelineId);
      if (existing) {
        if (JSON.stringify(existing.creation) !== JSON.stringify(creation)) {
          throw new PageserverError(
            409,
            `timeline ${tenantId}/${req.timelineId} already exists with different parameters (${JSON.stringify(existing.creation)})`,
          );
        }
        return;
      }
      if (req.mode === 'bootstrap') await this.bootstrap(tenantId, req.timelineId, creation);
      else if (req.mode === 'branch') await this.branch(tenantId, req.timelineId, req.ancestorTimelineId, req.ancestorStartLsn, creation);
      else await this.importTimeline(tenantId, req.timelineId, req.importPgdata, creation);
    });
    return this.timelineInfo(tenantId, req.timelineId);
  }

  private creationOf(req: CreateTimelineRequest): TimelineCreation {
    switch (req.mode) {
      case 'bootstrap':
        return { mode: 'bootstrap', pg_version: req.pgVersion };
      case 'branch':
        return {
          mode: 'branch',
          ancestor_timeline_id: req.ancestorTimelineId,
          ancestor_start_lsn: req.ancestorStartLsn === undefined ? null : formatLsn(req.ancestorStartLsn),
        };
      case 'import':
        return { mode: 'import', idempotency_key: req.idempotencyKey };
    }
  }

  private async bootstrap(tenantId: string, timelineId: string, creation: TimelineCreation): Promise<void> {
    const started = Date.now();
    await this.deps.store.create(tenantId, timelineId, async (_dir, images) => {
      const scratch = await images.scratch({ forPostgres: true });
      chownForPostgres(scratch);
      await runInitdb(this.deps.install, path.join(scratch, PGDATA_DIR));
      const image = await images.commit(scratch, 'initdb');
      return this.newMeta(tenantId, timelineId, image, creation, { initdbLsn: image.lsn });
    });
    this.deps.log(`bootstrapped timeline ${tenantId}/${timelineId} in ${Date.now() - started} ms`);
  }

  private async importTimeline(tenantId: string, timelineId: string, importPgdata: unknown, creation: TimelineCreation): Promise<void> {
    const handler = this.deps.importPgdata;
    if (!handler) throw new PageserverError(501, 'import_pgdata is not implemented yet');
    try {
      handler.validate?.(importPgdata);
    } catch (err) {
      throw new PageserverError(400, (err as Error).message);
    }
    if (this.imports) {
      // Accepted: the import waits for the commit marker and runs in the background.
      await this.deps.store.ensureTenant(tenantId);
      await this.imports.start(tenantId, timelineId, creation.mode === 'import' ? creation.idempotency_key : null, importPgdata);
      return;
    }
    await this.buildImportedTimeline(tenantId, timelineId, importPgdata, creation);
  }

  /** Downloads the validated data directory and makes it the first image of a new timeline. */
  private async buildImportedTimeline(tenantId: string, timelineId: string, importPgdata: unknown, creation: TimelineCreation, signal?: AbortSignal): Promise<void> {
    const handler = this.deps.importPgdata!;
    const started = Date.now();
    let downloadMs = 0;
    await this.deps.store.create(tenantId, timelineId, async (_dir, images) => {
      const scratch = await images.scratch({ forPostgres: false });
      await handler({ tenantId, timelineId, importPgdata, targetPgdata: path.join(scratch, PGDATA_DIR), signal });
      downloadMs = Date.now() - started;
      signal?.throwIfAborted();
      const image = await images.commit(scratch, 'import');
      signal?.throwIfAborted();
      return this.newMeta(tenantId, timelineId, image, creation, { initdbLsn: image.lsn });
    });
    const total = Date.now() - started;
    this.deps.log(`imported timeline ${tenantId}/${timelineId} in ${total} ms (download ${downloadMs} ms, first image and its base backup ${total - downloadMs} ms)`);
  }

  private async branch(
    tenantId: string,
    timelineId: string,
    ancestorId: string,
    requestedLsn: bigint | undefined,
    creation: TimelineCreation,
  ): Promise<void> {
    const ancestor = await this.deps.store.get(tenantId, ancestorId);
    if (!ancestor) throw new PageserverError(404, `ancestor timeline ${tenantId}/${ancestorId} not found`);
    const image = await this.imageAt(ancestor, requestedLsn, 'ancestor_start_lsn');
    const ancestorImages = this.deps.store.images(tenantId, ancestorId);
    const from = path.dirname(ancestorImages.pgdata(image));
    await this.deps.store.create(tenantId, timelineId, async (_dir, images) => {
      const scratch = await images.scratch({ forPostgres: false });
      // Images are immutable: the branch shares the ancestor's files.
      await linkTree(path.join(from, PGDATA_DIR), path.join(scratch, PGDATA_DIR));
      if (hasPrecomputedBasebackup(image)) await fsp.link(path.join(from, TARBALL), path.join(scratch, TARBALL));
      const branchImage: ImageMeta = { ...image, source: 'branch', created_at: new Date().toISOString() };
      await writeJsonAtomic(path.join(scratch, IMAGE_FILE), branchImage);
      await fsyncTree(scratch);
      await fsp.rename(scratch, images.imageDir(parseLsn(image.lsn)));
      await fsyncDir(images.dir);
      return this.newMeta(tenantId, timelineId, branchImage, creation, {
        initdbLsn: ancestor.initdb_lsn,
        ancestorTimelineId: ancestorId,
        ancestorLsn: image.lsn,
      });
    });
    this.deps.log(`branched ${tenantId}/${timelineId} from ${ancestorId} at ${image.lsn}`);
  }

  private newMeta(
    tenantId: string,
    timelineId: string,
    image: ImageMeta,
    creation: TimelineCreation,
    extra: { initdbLsn: string; ancestorTimelineId?: string; ancestorLsn?: string },
  ): TimelineMeta {
    return {
      tenant_id: tenantId,
      timeline_id: timelineId,
      pg_version: SUPPORTED_PG_VERSION,
      ancestor_timeline_id: extra.ancestorTimelineId ?? null,
      ancestor_lsn: extra.ancestorLsn ?? null,
      initdb_lsn: extra.initdbLsn,
      start_lsn: image.lsn,
      created_at: new Date().toISOString(),
      creation,
    };
  }

  async deleteTimeline(tenantId: string, timelineId: string): Promise<void> {
    await this.tenantLocks.run(tenantId, async () => {
      // A running import is stopped first (it might otherwise finish right after the deletion).
      const hadImport = (await this.imports?.remove(tenantId, timelineId)) ?? false;
      if (hadImport && !(await this.deps.store.get(tenantId, timelineId))) {
        this.deps.log(`deleted importing timeline ${tenantId}/${timelineId}`);
        return;
      }
      await this.meta(tenantId, timelineId);
      const children = (await this.deps.store.list(tenantId)).filter((m) => m.ancestor_timeline_id === timelineId);
      if (children.length > 0) {
        throw new PageserverError(412, `timeline ${tenantId}/${timelineId} has child timelines: ${children.map((c) => c.timeline_id).join(', ')}`);
      }
      await this.timelineLocks.run(`${tenantId}/${timelineId}`, () => this.deps.store.delete(tenantId, timelineId));
      this.deps.log(`deleted timeline ${tenantId}/${timelineId}`);
    });
  }

  /**
   * The image holding the timeline's state at `lsn` (latest if undefined), materialized if needed,
   * and what its base backup is made from: the precomputed tarball, opened (once open, garbage
   * collection can no longer take it away), or the image's pgdata, pinned until `release`.
   */
  async imageForBasebackup(tenantId: string, timelineId: string, lsn: bigint | undefined): Promise<{ image: ImageMeta; source: BasebackupSource }> {
    const meta = await this.meta(tenantId, timelineId);
    const images = this.deps.store.images(tenantId, timelineId);
    const id = `${tenantId}/${timelineId}`;
    for (let attempt = 1; ; attempt++) {
      const image = await this.imageAt(meta, lsn, 'LSN');
      // Garbage collection holds the timeline's lock: under it, the image is there or gone for good.
      const source = await this.timelineLocks.run(
        id,
        async (): Promise<BasebackupSource | undefined> => {
          if (!(await exists(images.imageDir(parseLsn(image.lsn))))) return undefined;
          if (hasPrecomputedBasebackup(image)) return { kind: 'tarball', file: await fsp.open(images.tarball(image)) };
          return { kind: 'pgdata', pgdata: images.pgdata(image), release: this.pin(id, image.lsn) };
        },
        this.bounded(`open image ${image.lsn} for a base backup`),
      ).catch(busy);
      if (source) {
        this.collectImagesLater(tenantId, timelineId);
        return { image, source };
      }
      // Collected between choosing and opening it: choose again (it is rebuilt if needed).
      if (attempt >= 3) throw new PageserverError(500, `image ${image.lsn} of ${id} keeps disappearing`);
    }
  }

  /** Keeps an image from garbage collection until the returned function is called (once is enough). */
  private pin(timelineKey: string, lsn: string): () => void {
    const key = `${timelineKey}@${lsn}`;
    this.pins.set(key, (this.pins.get(key) ?? 0) + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const left = (this.pins.get(key) ?? 1) - 1;
      if (left > 0) this.pins.set(key, left);
      else this.pins.delete(key);
    };
  }

  /**
   * Neon's `do_gc`: deletes every image but the timeline's first and its newest, whatever their
   * age; older states are rebuilt from the first image and the safekeepers' WAL when asked for.
   */
  async gcTimeline(tenantId: string, timelineId: string): Promise<{ layers_total: number; layers_removed: number; elapsed: number }> {
    await this.meta(tenantId, timelineId);
    const started = Date.now();
    const images = this.deps.store.images(tenantId, timelineId);
    const total = (await images.list()).length;
    const removed = await this.pruneImages(tenantId, timelineId, { keepNewest: 1, graceMs: 0 });
    return { layers_total: total, layers_removed: removed, elapsed: Date.now() - started };
  }

  /** Deletes images under both locks a branch or a replay takes, so neither loses its source. */
  private async pruneImages(tenantId: string, timelineId: string, policy: ImageRetention): Promise<number> {
    const images = this.deps.store.images(tenantId, timelineId);
    const id = `${tenantId}/${timelineId}`;
    const inUse = (image: ImageMeta) => this.pins.has(`${id}@${image.lsn}`);
    const removed = await this.tenantLocks.run(tenantId, () => this.timelineLocks.run(id, () => images.prune(policy, Date.now(), inUse)));
    if (removed.length > 0) this.deps.log(`gc ${tenantId}/${timelineId}: removed images at ${removed.map((i) => i.lsn).join(', ')}`);
    return removed.length;
  }

  /** Runs the retention policy after a base backup is on its way, without holding it up. */
  private collectImagesLater(tenantId: string, timelineId: string): void {
    const policy = this.deps.imageRetention ?? DEFAULT_IMAGE_RETENTION;
    this.gc = this.gc
      .then(() => this.pruneImages(tenantId, timelineId, policy))
      .then(
        () => undefined,
        (err: unknown) => this.deps.log(`gc ${tenantId}/${timelineId} failed: ${err instanceof Error ? err.message : String(err)}`),
      );
  }

  private async imageAt(meta: TimelineMeta, lsn: bigint | undefined, what: string): Promise<ImageMeta> {
    const s = await this.state(meta);
    const target = lsn ?? s.lastRecordLsn;
    const start = parseLsn(meta.start_lsn);
    const id = `${meta.tenant_id}/${meta.timeline_id}`;
    if (target < start) {
      throw new PageserverError(400, `${what} ${formatLsn(target)} is before the start of timeline ${id} (${meta.start_lsn})`);
    }
    if (target > s.lastRecordLsn) {
      throw new PageserverError(
        400,
        `${what} ${formatLsn(target)} is beyond the last record LSN ${formatLsn(s.lastRecordLsn)} of timeline ${id}: that WAL is not available yet`,
      );
    }
    const cached = s.images.find((i) => parseLsn(i.lsn) === target);
    if (cached) return cached;
    const images = this.deps.store.images(meta.tenant_id, meta.timeline_id);
    return this.timelineLocks.run(
      id,
      () =>
        materializeAt(
          {
            install: this.deps.install,
            safekeepers: this.deps.safekeepers,
            tenantId: meta.tenant_id,
            timelineId: meta.timeline_id,
            images,
            flushes: s.flushes,
            timeoutMs: this.deps.materializeTimeoutMs,
            log: this.deps.log,
          },
          target,
        ),
      this.bounded(`replay WAL up to ${formatLsn(target)}`),
    ).catch(busy);
  }

  /** Lock options of a request: what it does (named to whoever gives up behind it) and how long it waits. */
  private bounded(what: string): { what: string; waitMs: number } {
    return { what, waitMs: this.deps.lockWaitMs ?? 3 * this.deps.materializeTimeoutMs };
  }
}

/** A lock wait that gave up is a 503 (busy, try again), with the holder named. */
function busy(err: unknown): never {
  if (err instanceof LockWaitTimeout) throw new PageserverError(503, err.message);
  throw err;
}
