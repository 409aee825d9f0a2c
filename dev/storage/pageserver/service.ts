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
import { hasPrecomputedBasebackup, IMAGE_FILE, PGDATA_DIR, TARBALL, type ImageMeta } from './images';
import { KeyedMutex } from './keyed-mutex';
import { materializeAt } from './materialize';
import { PgdataImports } from './pgdata-imports';
import { BackgroundIngest } from './background-ingest';
import { runInitdb } from './postgres-run';
import {
  busy,
  PageserverError,
  type BasebackupSource,
  type CreateTimelineRequest,
  type ServiceDeps,
  type TimelineState,
} from './service-types';
import { cutoffOf, readGcState } from './gc-state';
import { TimelineGc } from './timeline-gc';
import { creationOf, newTimelineMeta } from './timeline-creation';
import { importingInfoOf, timelineInfoOf } from './timeline-info';
import type { TimelineCreation, TimelineMeta } from './timeline-store';

export { DEFAULT_IMAGE_RETENTION, PageserverError, SUPPORTED_PG_VERSION, type BasebackupSource, type CreateTimelineRequest, type ImportPgdataHandler, type ServiceDeps } from './service-types';

export class PageserverService {
  private readonly tenantLocks = new KeyedMutex('tenant lock');
  private readonly timelineLocks = new KeyedMutex('timeline lock');
  /** Image garbage collection, the GC cutoff and LSN leases. */
  readonly gc: TimelineGc;
  /** Imports running in the background or failed; undefined without a background-capable handler. */
  private readonly imports: PgdataImports | undefined;
  private readonly ingest: BackgroundIngest;

  constructor(private readonly deps: ServiceDeps) {
    this.gc = new TimelineGc({
      deps,
      tenantLocks: this.tenantLocks,
      timelineLocks: this.timelineLocks,
      meta: (tenantId, timelineId) => this.meta(tenantId, timelineId),
      state: (meta) => this.state(meta),
      bounded: (what) => this.bounded(what),
    });
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
    await this.gc.drain();
  }

  async meta(tenantId: string, timelineId: string): Promise<TimelineMeta> {
    const meta = await this.deps.store.get(tenantId, timelineId);
    if (!meta) throw new PageserverError(404, `timeline ${tenantId}/${timelineId} not found`);
    return meta;
  }

  /** Images, safekeeper positions and the resulting last_record_lsn of a timeline. */
  async state(meta: TimelineMeta): Promise<TimelineState> {
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
          return { kind: 'pgdata', pgdata: images.pgdata(image), release: this.gc.pin(id, image.lsn) };
        },
        this.bounded(`open image ${image.lsn} for a base backup`),
      ).catch(busy);
      if (source) {
        this.gc.collectLater(tenantId, timelineId);
        return { image, source };
      }
      // Collected between choosing and opening it: choose again (it is rebuilt if needed).
      if (attempt >= 3) throw new PageserverError(500, `image ${image.lsn} of ${id} keeps disappearing`);
    }
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
  bounded(what: string): { what: string; waitMs: number } {
    return { what, waitMs: this.deps.lockWaitMs ?? 3 * this.deps.materializeTimeoutMs };
  }
}
