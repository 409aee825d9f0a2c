/**
 * The dev pageserver's image garbage collection: Neon's `do_gc` GC cutoff, LSN leases that hold it
 * back, and the retention policy run after base backups. Images a base backup is being packed from
 * are pinned and never collected.
 */
import { formatLsn, parseLsn } from '../../../model/lsn';
import { cutoffOf, DEFAULT_GC_HORIZON_BYTES, DEFAULT_LSN_LEASE_LENGTH_MS, grantLease, nextCutoff, readGcState, tenantLeaseLengthMs, validLeaseLsns, writeGcState, writeTenantConfig } from './gc-state';
import type { ImageMeta, ImageRetention } from './images';
import type { KeyedMutex } from './keyed-mutex';
import { busy, DEFAULT_IMAGE_RETENTION, PageserverError, type ServiceDeps, type TimelineState } from './service-types';
import type { TimelineMeta } from './timeline-store';

/** What the GC shares with the service: its settings, its locks and its view of a timeline. */
export interface TimelineGcContext {
  deps: ServiceDeps;
  tenantLocks: KeyedMutex;
  timelineLocks: KeyedMutex;
  meta(tenantId: string, timelineId: string): Promise<TimelineMeta>;
  state(meta: TimelineMeta): Promise<TimelineState>;
  bounded(what: string): { what: string; waitMs: number };
}

export class TimelineGc {
  /** Images a base backup is being packed from, by `<tenant>/<timeline>@<lsn>`: never collected. */
  private readonly pins = new Map<string, number>();
  /** Collection running after base backups, one at a time; drain() waits for it. */
  private running: Promise<void> = Promise.resolve();

  constructor(private readonly ctx: TimelineGcContext) {}

  /** The images pinned now, as `<tenant>/<timeline>@<lsn>` (what a base backup is packed from). */
  pinnedImages(): string[] {
    return [...this.pins.keys()];
  }

  /** Waits for the collection in progress (the service's close()). */
  drain(): Promise<void> {
    return this.running;
  }

  /** Keeps an image from garbage collection until the returned function is called (once is enough). */
  pin(timelineKey: string, lsn: string): () => void {
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
    const meta = await this.ctx.meta(tenantId, timelineId);
    const started = Date.now();
    const images = this.ctx.deps.store.images(tenantId, timelineId);
    const total = (await images.list()).length;
    const { lastRecordLsn } = await this.ctx.state(meta);
    const dir = this.ctx.deps.store.timelineDir(tenantId, timelineId);
    const id = `${tenantId}/${timelineId}`;
    const cutoff = await this.ctx.timelineLocks.run(
      id,
      async () => {
        const gc = await readGcState(dir);
        const next = nextCutoff(gc, { startLsn: parseLsn(meta.start_lsn), lastRecordLsn, horizonBytes: horizonBytes ?? this.ctx.deps.gcHorizonBytes ?? DEFAULT_GC_HORIZON_BYTES, now: Date.now() });
        if (gc.gc_cutoff_lsn === null || parseLsn(gc.gc_cutoff_lsn) !== next) await writeGcState(dir, { ...gc, gc_cutoff_lsn: formatLsn(next) });
        return next;
      },
      this.ctx.bounded('move the GC cutoff'),
    ).catch(busy);
    const removed = await this.prune(tenantId, timelineId, { keepNewest: 1, graceMs: 0 });
    this.ctx.deps.log(`gc ${id}: cutoff ${formatLsn(cutoff)}`);
    return { layers_total: total, layers_removed: removed, elapsed: Date.now() - started, gc_cutoff_lsn: formatLsn(cutoff) };
  }

  /**
   * Neon's LSN lease: GC keeps the timeline readable at `lsn` until the returned time (the tenant's
   * `lsn_lease_length` from now, default 10 minutes; a renewal extends it). Refused with a 400
   * naming the cutoff when GC has already passed `lsn`.
   */
  async leaseLsn(tenantId: string, timelineId: string, lsn: bigint): Promise<{ validUntil: number }> {
    const meta = await this.ctx.meta(tenantId, timelineId);
    const lengthMs = await tenantLeaseLengthMs(this.ctx.deps.store.tenantDir(tenantId), this.ctx.deps.lsnLeaseLengthMs ?? DEFAULT_LSN_LEASE_LENGTH_MS);
    const dir = this.ctx.deps.store.timelineDir(tenantId, timelineId);
    const id = `${tenantId}/${timelineId}`;
    return this.ctx.timelineLocks.run(
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
      this.ctx.bounded(`lease LSN ${formatLsn(lsn)}`),
    ).catch(busy);
  }

  /** Neon's tenant config, of which the dev pageserver knows `lsn_lease_length` only. */
  async setTenantConfig(tenantId: string, config: { lsn_lease_length?: string }): Promise<void> {
    if (!(await this.ctx.deps.store.tenantExists(tenantId))) throw new PageserverError(404, `tenant ${tenantId} not found`);
    await this.ctx.tenantLocks.run(tenantId, () => writeTenantConfig(this.ctx.deps.store.tenantDir(tenantId), config));
  }

  /** Deletes images under both locks a branch or a replay takes, so neither loses its source. */
  async prune(tenantId: string, timelineId: string, policy: ImageRetention): Promise<number> {
    const images = this.ctx.deps.store.images(tenantId, timelineId);
    const id = `${tenantId}/${timelineId}`;
    const meta = await this.ctx.meta(tenantId, timelineId);
    const removed = await this.ctx.tenantLocks.run(tenantId, () =>
      this.ctx.timelineLocks.run(id, async () => {
        const gc = await readGcState(this.ctx.deps.store.timelineDir(tenantId, timelineId));
        const leased = new Set(validLeaseLsns(gc, Date.now()));
        const inUse = (image: ImageMeta) => this.pins.has(`${id}@${image.lsn}`) || leased.has(parseLsn(image.lsn));
        return images.prune(policy, Date.now(), inUse, cutoffOf(gc, parseLsn(meta.start_lsn)));
      }),
    );
    if (removed.length > 0) this.ctx.deps.log(`gc ${tenantId}/${timelineId}: removed images at ${removed.map((i) => i.lsn).join(', ')}`);
    return removed.length;
  }

  /** Runs the retention policy after a base backup is on its way, without holding it up. */
  collectLater(tenantId: string, timelineId: string): void {
    const policy = this.ctx.deps.imageRetention ?? DEFAULT_IMAGE_RETENTION;
    this.running = this.running
      .then(() => this.prune(tenantId, timelineId, policy))
      .then(
        () => undefined,
        (err: unknown) => this.ctx.deps.log(`gc ${tenantId}/${timelineId} failed: ${err instanceof Error ? err.message : String(err)}`),
      );
  }
}
