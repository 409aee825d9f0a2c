/**
 * The pageserver's operations, independent of the protocols that expose them: timeline creation
 * (bootstrap, branch, import hook), listing, deletion, TimelineInfo, and the image for a base
 * backup at an LSN. Errors carry an HTTP-ish status so both front ends can map them.
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { formatLsn, parseLsn } from '../../../model/lsn';
import { chownForPostgres } from '../../../common/pg-identity';
import { exists, fsyncDir, fsyncTree, linkTree, writeJsonAtomic } from './fs-util';
import { hasPrecomputedBasebackup, IMAGE_FILE, PGDATA_DIR, TARBALL, type ImageMeta, type ImageRetention } from './images';
import { KeyedMutex, LockWaitTimeout } from './keyed-mutex';
import { materializeAt } from './materialize';
import { PgdataImports } from './pgdata-imports';
import { BackgroundIngest } from './background-ingest';
import { runInitdb } from './postgres-run';
import {
  DEFAULT_IMAGE_RETENTION,
  PageserverError,
  type BasebackupSource,
  type CreateTimelineRequest,
  type ServiceDeps,
  type TimelineState,
} from './service-types';
import { cutoffOf, DEFAULT_GC_HORIZON_BYTES, DEFAULT_LSN_LEASE_LENGTH_MS, grantLease, nextCutoff, readGcState, tenantLeaseLengthMs, validLeaseLsns, writeGcState, writeTenantConfig } from './gc-state';
import { creationOf, newTimelineMeta } from './timeline-creation';
import { importingInfoOf, timelineInfoOf } from './timeline-info';
import type { TimelineCreation, TimelineMeta } from './timeline-store';

export { DEFAULT_IMAGE_RETENTION, PageserverError, SUPPORTED_PG_VERSION, type BasebackupSource, type CreateTimelineRequest, type ImportPgdataHandler, type ServiceDeps } from './service-types';

export class PageserverService {
  private readonly tenantLocks = new KeyedMutex('tenant lock');
  private readonly timelineLocks = new KeyedMutex('timeline lock');
  /** Images a base backup is being packed from, by `<tenant>/<timeline>@<lsn>`: never collected. */
  private readonly pins = new Map<string, number>();
  /** Image garbage collection running after base backups, one at a time; close() waits for it. */
  private gc: Promise<void> = Promise.resolve();
  /** Imports running in the background or failed; undefined without a background-capable handler. */
  private readonly imports: PgdataImports | undefined;
  private readonly ingest: BackgroundIngest;

  constructor(private readonly deps: ServiceDeps) {
    this.ingest = new BackgroundIngest({
      pollMs: deps.ingestPollMs ?? 500,
      safekeeperCount: deps.safekeepers.count,
      timeline: (tenantId, timelineId) => deps.store.get(tenantId, timelineId),
      state: (meta) => this.state(meta),
      buildImage: (meta, lsn) => this.imageAt(meta, lsn, 'LSN').then(() => undefined),
      log: deps.log,
    });
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

  /** See BackgroundIngest: once a primary compute has started, its WAL is made into an image in the background. */
  watchForIngest(tenantId: string, timelineId: string): void {
    this.ingest.watch(tenantId, timelineId);
  }

  async close(): Promise<void> {
    await this.ingest.close();
    await this.imports?.close();
    await this.gc;
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
    const gc = await readGcState(this.deps.store.timelineDir(meta.tenant_id, meta.timeline_id));
    return { meta, images, lastRecordLsn, prevRecordLsn, flushes, gcCutoffLsn: cutoffOf(gc, parseLsn(meta.start_lsn)) };
  }

  async timelineInfo(tenantId: string, timelineId: string): Promise<Record<string, unknown>> {
    const importing = this.imports?.get(tenantId, timelineId);
    if (importing && !(await this.deps.store.get(tenantId, timelineId))) return importingInfoOf(importing);
    return timelineInfoOf(await this.state(await this.meta(tenantId, timelineId)));
  }

  async listTimelines(tenantId: string): Promise<Record<string, unknown>[]> {
    if (!(await this.deps.store.tenantExists(tenantId))) throw new PageserverError(404, `tenant ${tenantId} not found`);
    const metas = await this.deps.store.list(tenantId);
    return Promise.all(metas.map(async (m) => timelineInfoOf(await this.state(m))));
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
      const creation = creationOf(req);
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

  private async bootstrap(tenantId: string, timelineId: string, creation: TimelineCreation): Promise<void> {
    const started = Date.now();
    await this.deps.store.create(tenantId, timelineId, async (_dir, images) => {
      const scratch = await images.scratch({ forPostgres: true });
      chownForPostgres(scratch);
      await runInitdb(this.deps.install, path.join(scratch, PGDATA_DIR));
      const image = await images.commit(scratch, 'initdb');
      return newTimelineMeta(tenantId, timelineId, image, creation, { initdbLsn: image.lsn });
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
      return newTimelineMeta(tenantId, timelineId, image, creation, { initdbLsn: image.lsn });
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
      return newTimelineMeta(tenantId, timelineId, branchImage, creation, {
        initdbLsn: ancestor.initdb_lsn,
        ancestorTimelineId: ancestorId,
        ancestorLsn: image.lsn,
      });
    });
    this.deps.log(`branched ${tenantId}/${timelineId} from ${ancestorId} at ${image.lsn}`);
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
   * Neon's `do_gc`: moves the timeline's GC cutoff to `last_record_lsn - gc_horizon` (default 64
   * MiB, as Neon), held back by valid LSN leases, then deletes every image below the cutoff's root
   * image and every image between it and the newest, except leased ones. A state at or above the
   * cutoff is rebuilt from the root and the safekeepers' WAL when asked for; one below it is gone.
   */
  async gcTimeline(tenantId: string, timelineId: string, horizonBytes?: bigint): Promise<{ layers_total: number; layers_removed: number; elapsed: number; gc_cutoff_lsn: string }> {
    const meta = await this.meta(tenantId, timelineId);
    const started = Date.now();
    const images = this.deps.store.images(tenantId, timelineId);
    const total = (await images.list()).length;
    const { lastRecordLsn } = await this.state(meta);
    const dir = this.deps.store.timelineDir(tenantId, timelineId);
    const id = `${tenantId}/${timelineId}`;
    const cutoff = await this.timelineLocks.run(
      id,
      async () => {
        const gc = await readGcState(dir);
        const next = nextCutoff(gc, { startLsn: parseLsn(meta.start_lsn), lastRecordLsn, horizonBytes: horizonBytes ?? this.deps.gcHorizonBytes ?? DEFAULT_GC_HORIZON_BYTES, now: Date.now() });
        if (gc.gc_cutoff_lsn === null || parseLsn(gc.gc_cutoff_lsn) !== next) await writeGcState(dir, { ...gc, gc_cutoff_lsn: formatLsn(next) });
        return next;
      },
      this.bounded('move the GC cutoff'),
    ).catch(busy);
    const removed = await this.pruneImages(tenantId, timelineId, { keepNewest: 1, graceMs: 0 });
    this.deps.log(`gc ${id}: cutoff ${formatLsn(cutoff)}`);
    return { layers_total: total, layers_removed: removed, elapsed: Date.now() - started, gc_cutoff_lsn: formatLsn(cutoff) };
  }

  /**
   * Neon's LSN lease: GC keeps the timeline readable at `lsn` until the returned time (the tenant's
   * `lsn_lease_length` from now, default 10 minutes; a renewal extends it). Refused with a 400
   * naming the cutoff when GC has already passed `lsn`.
   */
  async leaseLsn(tenantId: string, timelineId: string, lsn: bigint): Promise<{ validUntil: number }> {
    const meta = await this.meta(tenantId, timelineId);
    const lengthMs = await tenantLeaseLengthMs(this.deps.store.tenantDir(tenantId), this.deps.lsnLeaseLengthMs ?? DEFAULT_LSN_LEASE_LENGTH_MS);
    const dir = this.deps.store.timelineDir(tenantId, timelineId);
    const id = `${tenantId}/${timelineId}`;
    return this.timelineLocks.run(
      id,
      async () => {
        const gc = await readGcState(dir);
        const granted = grantLease(gc, lsn, parseLsn(meta.start_lsn), lengthMs, Date.now());
        if (!granted) {
          throw new PageserverError(400, `cannot lease LSN ${formatLsn(lsn)} of timeline ${id}: it is below the GC cutoff ${formatLsn(cutoffOf(gc, parseLsn(meta.start_lsn)))}, that history is gone`);
        }
        await writeGcState(dir, granted.state);
        return { validUntil: granted.validUntil };
      },
      this.bounded(`lease LSN ${formatLsn(lsn)}`),
    ).catch(busy);
  }

  /** Neon's tenant config, of which the dev pageserver knows `lsn_lease_length` only. */
  async setTenantConfig(tenantId: string, config: { lsn_lease_length?: string }): Promise<void> {
    if (!(await this.deps.store.tenantExists(tenantId))) throw new PageserverError(404, `tenant ${tenantId} not found`);
    await this.tenantLocks.run(tenantId, () => writeTenantConfig(this.deps.store.tenantDir(tenantId), config));
  }

  /** Deletes images under both locks a branch or a replay takes, so neither loses its source. */
  private async pruneImages(tenantId: string, timelineId: string, policy: ImageRetention): Promise<number> {
    const images = this.deps.store.images(tenantId, timelineId);
    const id = `${tenantId}/${timelineId}`;
    const meta = await this.meta(tenantId, timelineId);
    const removed = await this.tenantLocks.run(tenantId, () =>
      this.timelineLocks.run(id, async () => {
        const gc = await readGcState(this.deps.store.timelineDir(tenantId, timelineId));
        const leased = new Set(validLeaseLsns(gc, Date.now()));
        const inUse = (image: ImageMeta) => this.pins.has(`${id}@${image.lsn}`) || leased.has(parseLsn(image.lsn));
        return images.prune(policy, Date.now(), inUse, cutoffOf(gc, parseLsn(meta.start_lsn)));
      }),
    );
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
    if (target < s.gcCutoffLsn) {
      throw new PageserverError(
        400,
        `${what} ${formatLsn(target)} is earlier than the GC cutoff ${formatLsn(s.gcCutoffLsn)} of timeline ${id}: that history has been garbage-collected (no LSN lease held it)`,
      );
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
