/** The timelines a dev safekeeper holds: `<dir>/<tenant_id>/<timeline_id>/`, loaded on first use. */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { assertNeonId } from '../../../model/ids';
import type { Lsn } from '../../../model/lsn';
import { Timeline } from './timeline';

export class TimelineRegistry {
  private readonly open = new Map<string, Promise<Timeline | null>>();
  private creating: Promise<unknown> = Promise.resolve();

  constructor(private readonly dir: string) {}

  private timelineDir(tenantId: string, timelineId: string): string {
    // IDs are validated hex, so they are safe path components.
    return path.join(this.dir, assertNeonId(tenantId, 'tenant_id'), assertNeonId(timelineId, 'timeline_id'));
  }

  /** The timeline, or null if this safekeeper has never heard of it. */
  async get(tenantId: string, timelineId: string): Promise<Timeline | null> {
    const key = `${tenantId}/${timelineId}`;
    let p = this.open.get(key);
    if (!p) {
      p = Timeline.load(this.timelineDir(tenantId, timelineId));
      this.open.set(key, p);
      // A failed load is retried on the next request rather than cached.
      p.catch(() => this.open.delete(key));
    }
    const t = await p;
    if (t === null) this.open.delete(key);
    return t;
  }

  /**
   * Returns the timeline, creating it if absent. `created` says whether this call created it.
   * Creation is serialized so two concurrent requests cannot both create the same timeline.
   */
  async getOrCreate(
    tenantId: string,
    timelineId: string,
    init: { startLsn?: Lsn; commitLsn?: Lsn; pgVersion?: number } = {},
  ): Promise<{ timeline: Timeline; created: boolean }> {
    const run = this.creating.then(async () => {
      const existing = await this.get(tenantId, timelineId);
      if (existing) return { timeline: existing, created: false };
      const t = await Timeline.create(this.timelineDir(tenantId, timelineId), { tenantId, timelineId }, init);
      this.open.set(`${tenantId}/${timelineId}`, Promise.resolve(t));
      return { timeline: t, created: true };
    });
    this.creating = run.catch(() => undefined);
    return run;
  }

  async delete(tenantId: string, timelineId: string): Promise<boolean> {
    const t = await this.get(tenantId, timelineId);
    const dir = this.timelineDir(tenantId, timelineId);
    if (t) await t.close();
    this.open.delete(`${tenantId}/${timelineId}`);
    const existed = t !== null;
    await fsp.rm(dir, { recursive: true, force: true });
    return existed;
  }

  async closeAll(): Promise<void> {
    for (const p of this.open.values()) {
      const t = await p.catch(() => null);
      await t?.close();
    }
    this.open.clear();
  }
}
