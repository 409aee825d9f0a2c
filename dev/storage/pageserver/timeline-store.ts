/**
 * Where tenants and timelines live on disk: tenants/<tenant>/timelines/<timeline>/timeline.json
 * plus its images. A timeline directory appears only complete (built under .tmp-*, then renamed).
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { isNeonId } from '../../../model/ids';
import { exists, fsyncDir, randomSuffix, readJson, removeTree, writeJsonAtomic } from './fs-util';
import { ImageStore } from './images';

export type TimelineCreation =
  | { mode: 'bootstrap'; pg_version: number }
  | { mode: 'branch'; ancestor_timeline_id: string; ancestor_start_lsn: string | null }
  | { mode: 'import'; idempotency_key: string | null };

export interface TimelineMeta {
  tenant_id: string;
  timeline_id: string;
  pg_version: number;
  ancestor_timeline_id: string | null;
  ancestor_lsn: string | null;
  initdb_lsn: string;
  /** LSN of the timeline's first image: its own WAL starts here. */
  start_lsn: string;
  created_at: string;
  creation: TimelineCreation;
}

export const TIMELINE_FILE = 'timeline.json';

export class TimelineStore {
  readonly tenantsDir: string;

  /** @param precomputeLimitBytes images up to this size get a precomputed base backup (default PRECOMPUTE_LIMIT_BYTES). */
  constructor(
    root: string,
    private readonly precomputeLimitBytes?: number,
  ) {
    this.tenantsDir = path.join(root, 'tenants');
  }

  tenantDir(tenantId: string): string {
    return path.join(this.tenantsDir, tenantId);
  }

  timelinesDir(tenantId: string): string {
    return path.join(this.tenantDir(tenantId), 'timelines');
  }

  timelineDir(tenantId: string, timelineId: string): string {
    return path.join(this.timelinesDir(tenantId), timelineId);
  }

  images(tenantId: string, timelineId: string): ImageStore {
    return new ImageStore(this.timelineDir(tenantId, timelineId), this.precomputeLimitBytes);
  }

  async init(): Promise<void> {
    await fsp.mkdir(this.tenantsDir, { recursive: true, mode: 0o755 });
    // Leftovers of a crash mid-creation or mid-deletion.
    for (const tenant of await this.listTenants()) {
      for (const name of await fsp.readdir(this.timelinesDir(tenant)).catch(() => [] as string[])) {
        const p = path.join(this.timelinesDir(tenant), name);
        if (name.startsWith('.tmp-') || name.startsWith('.deleted-')) await fsp.rm(p, { recursive: true, force: true });
        else if (isNeonId(name)) await new ImageStore(p).cleanScratch();
      }
    }
  }

  async listTenants(): Promise<string[]> {
    return (await fsp.readdir(this.tenantsDir).catch(() => [] as string[])).filter(isNeonId).sort();
  }

  async tenantExists(tenantId: string): Promise<boolean> {
    return exists(this.tenantDir(tenantId));
  }

  async ensureTenant(tenantId: string): Promise<void> {
    if (await this.tenantExists(tenantId)) return;
    await fsp.mkdir(this.timelinesDir(tenantId), { recursive: true, mode: 0o755 });
    await fsyncDir(this.tenantDir(tenantId));
    await fsyncDir(this.tenantsDir);
  }

  async get(tenantId: string, timelineId: string): Promise<TimelineMeta | undefined> {
    const file = path.join(this.timelineDir(tenantId, timelineId), TIMELINE_FILE);
    return (await exists(file)) ? readJson<TimelineMeta>(file) : undefined;
  }

  async list(tenantId: string): Promise<TimelineMeta[]> {
    const out: TimelineMeta[] = [];
    for (const name of (await fsp.readdir(this.timelinesDir(tenantId)).catch(() => [] as string[])).sort()) {
      if (!isNeonId(name)) continue;
      const meta = await this.get(tenantId, name);
      if (meta) out.push(meta);
    }
    return out;
  }

  /**
   * Builds a timeline in a temporary directory with `build` (which fills in images and returns
   * the metadata), then writes timeline.json and renames the directory into place.
   */
  async create(tenantId: string, timelineId: string, build: (dir: string, images: ImageStore) => Promise<TimelineMeta>): Promise<TimelineMeta> {
    await this.ensureTenant(tenantId);
    const tmp = path.join(this.timelinesDir(tenantId), `.tmp-${timelineId}-${randomSuffix()}`);
    await fsp.mkdir(tmp, { mode: 0o755 });
    try {
      const meta = await build(tmp, new ImageStore(tmp, this.precomputeLimitBytes));
      await writeJsonAtomic(path.join(tmp, TIMELINE_FILE), meta);
      await fsp.rename(tmp, this.timelineDir(tenantId, timelineId));
      await fsyncDir(this.timelinesDir(tenantId));
      return meta;
    } catch (err) {
      await fsp.rm(tmp, { recursive: true, force: true });
      throw err;
    }
  }

  async delete(tenantId: string, timelineId: string): Promise<void> {
    await removeTree(this.timelineDir(tenantId, timelineId));
  }
}
