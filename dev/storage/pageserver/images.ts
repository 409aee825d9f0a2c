/**
 * A timeline's images: immutable data directories holding the state at an LSN, each with its
 * precomputed base backup. An image's pg_wal ends exactly at its LSN (see dev/storage/README.md),
 * so any image is a valid starting point for replaying the timeline's later WAL.
 */
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { formatLsn, parseLsn } from '../../../model/lsn';
import { readControlFile, type ControlFile } from '../pg-control';
import { writeBasebackupTarGz } from './basebackup-tar';
import { exists, fsyncDir, fsyncTree, moveDir, randomSuffix, readJson, treeBytes, writeJsonAtomic } from './fs-util';
import { postgresCannotReach } from './postgres-run';
import { pruneWalDir, segmentNo, WalDirReader, WalSegmentWriter, walkWal, type WalGeometry } from './wal';

export type ImageSource = 'initdb' | 'replay' | 'branch' | 'import';

export interface ImageMeta {
  /** The WAL of this image ends here: it holds every record that ends at or before this LSN. */
  lsn: string;
  /** Start of the last record before `lsn` (the xl_prev of the next record). */
  prev_record_lsn: string;
  checkpoint_lsn: string;
  redo_lsn: string;
  /** pg_control state: 'shutDown' (initdb/import) or 'shutDownInRecovery' (replayed). */
  control_state: string;
  source: ImageSource;
  pg_version: number;
  /** Size of the precomputed gzip'd base backup; of the data directory when it is streamed instead. */
  basebackup_bytes: number;
  /** false: no precomputed base backup, it is packed from pgdata per request (large images). */
  precomputed_basebackup?: boolean;
  created_at: string;
}

/** Which images a timeline keeps once newer ones exist. */
export interface ImageRetention {
  /** The newest images kept besides the first (at least 1). */
  keepNewest: number;
  /** Images younger than this are kept whatever their rank: a base backup may be about to open one. */
  graceMs: number;
}

export class ImageError extends Error {
  override name = 'ImageError';
}

export const IMAGE_FILE = 'image.json';
export const PGDATA_DIR = 'pgdata';
export const TARBALL = 'basebackup.tar.gz';
/**
 * Images up to this size keep a precomputed base backup, so a compute's base backup is one file
 * read (a fresh timeline's is ~5 MiB). Bigger ones (imports, grown databases) are packed per
 * request: gzip of a whole database would otherwise hold up every import and every replay.
 */
export const PRECOMPUTE_LIMIT_BYTES = 256 * 1024 * 1024;

/** Whether an image has its base backup precomputed (images from before the limit always do). */
export function hasPrecomputedBasebackup(meta: ImageMeta): boolean {
  return meta.precomputed_basebackup !== false;
}

export function lsnDirName(lsn: bigint): string {
  return lsn.toString(16).toUpperCase().padStart(16, '0');
}

export function geometryOf(control: ControlFile): WalGeometry {
  return { segSize: control.xlogSegSize, pageSize: control.xlogBlcksz, maxAlign: control.maxAlign };
}

export class ImageStore {
  readonly dir: string;

  constructor(
    timelineDir: string,
    private readonly precomputeLimitBytes = PRECOMPUTE_LIMIT_BYTES,
  ) {
    this.dir = path.join(timelineDir, 'images');
  }

  imageDir(lsn: bigint): string {
    return path.join(this.dir, lsnDirName(lsn));
  }

  pgdata(meta: ImageMeta): string {
    return path.join(this.imageDir(parseLsn(meta.lsn)), PGDATA_DIR);
  }

  tarball(meta: ImageMeta): string {
    return path.join(this.imageDir(parseLsn(meta.lsn)), TARBALL);
  }

  /** All complete images, oldest first. Half-built ones live in .tmp-* directories and are ignored. */
  async list(): Promise<ImageMeta[]> {
    const names = await fsp.readdir(this.dir).catch(() => [] as string[]);
    const metas: ImageMeta[] = [];
    for (const name of names) {
      if (!/^[0-9A-F]{16}$/.test(name)) continue;
      metas.push(await readJson<ImageMeta>(path.join(this.dir, name, IMAGE_FILE)));
    }
    return metas.sort((a, b) => (parseLsn(a.lsn) < parseLsn(b.lsn) ? -1 : parseLsn(a.lsn) > parseLsn(b.lsn) ? 1 : 0));
  }

  async get(lsn: bigint): Promise<ImageMeta | undefined> {
    const file = path.join(this.imageDir(lsn), IMAGE_FILE);
    return (await exists(file)) ? readJson<ImageMeta>(file) : undefined;
  }

  /**
   * A fresh scratch directory for building an image: inside the images directory (same file
   * system, so the final rename is atomic) unless PostgreSQL will work in it and cannot reach
   * it there (root with a private --dir); then under the system temp directory, moved at the end.
   */
  async scratch(opts: { forPostgres: boolean }): Promise<string> {
    await fsp.mkdir(this.dir, { recursive: true });
    if (opts.forPostgres && postgresCannotReach(this.dir)) return fsp.mkdtemp(path.join(os.tmpdir(), 'dc-ps-scratch-'));
    const dir = path.join(this.dir, `.tmp-${randomSuffix()}`);
    await fsp.mkdir(dir, { mode: 0o755 });
    return dir;
  }

  /**
   * Deletes the images no state depends on, so a timeline's disk use stays bounded while computes
   * restart: every state from the root on stays reachable from the root image plus the
   * safekeepers' WAL. The root is the newest image at or below `rootLsn` (the GC cutoff; the
   * first image when absent or when none is that low); images below it are unreachable history
   * and go whatever their age. Kept: the root, the newest `keepNewest`, any younger than
   * `graceMs`, and any `inUse` (a base backup being packed from it, a leased LSN). Each goes by
   * one rename first, so a crash never leaves half an image listed. Returns what was deleted.
   */
  async prune(policy: ImageRetention, now = Date.now(), inUse: (image: ImageMeta) => boolean = () => false, rootLsn?: bigint): Promise<ImageMeta[]> {
    const all = await this.list();
    let root = 0;
    if (rootLsn !== undefined) all.forEach((image, i) => (parseLsn(image.lsn) <= rootLsn ? (root = i) : undefined));
    const below = all.slice(0, root).filter((image) => !inUse(image));
    const between = all
      .slice(root + 1, Math.max(root + 1, all.length - Math.max(1, policy.keepNewest)))
      .filter((image) => now - Date.parse(image.created_at) >= policy.graceMs && !inUse(image));
    const victims = [...below, ...between];
    for (const image of victims) {
      const doomed = path.join(this.dir, `.deleted-${randomSuffix()}`);
      await fsp.rename(this.imageDir(parseLsn(image.lsn)), doomed);
      await fsyncDir(this.dir);
      await fsp.rm(doomed, { recursive: true, force: true });
    }
    return victims;
  }

  /** Removes half-built images left by a crash. */
  async cleanScratch(): Promise<void> {
    for (const name of await fsp.readdir(this.dir).catch(() => [] as string[])) {
      if (name.startsWith('.tmp-') || name.startsWith('.deleted-')) await fsp.rm(path.join(this.dir, name), { recursive: true, force: true });
    }
  }

  /**
   * Turns `<scratch>/pgdata` into an image: cuts its WAL at its end, keeps only the segments from
   * the checkpoint's redo point, precomputes the base backup, fsyncs everything and renames it
   * into place. For a cleanly shut down cluster the end is found by walking its WAL from the
   * checkpoint record; a replayed one passes `replayed` (its end and last record).
   */
  async commit(
    scratch: string,
    source: ImageSource,
    replayed?: { lsn: bigint; prevRecordLsn: bigint },
  ): Promise<ImageMeta> {
    const pgdata = path.join(scratch, PGDATA_DIR);
    const control = readControlFile(pgdata);
    const g = geometryOf(control);
    let lsn: bigint;
    let prev: bigint;
    if (replayed) {
      if (control.stateName !== 'shutDownInRecovery') throw new ImageError(`replayed cluster is in state ${control.stateName}, expected shut down in recovery`);
      if (control.minRecoveryPoint !== replayed.lsn) {
        throw new ImageError(`replay ended at ${formatLsn(control.minRecoveryPoint)}, expected ${formatLsn(replayed.lsn)}`);
      }
      lsn = replayed.lsn;
      prev = replayed.prevRecordLsn;
    } else {
      if (control.stateName !== 'shutDown') throw new ImageError(`cluster is in state ${control.stateName}, not cleanly shut down`);
      const reader = new WalDirReader(path.join(pgdata, 'pg_wal'), g);
      try {
        const walk = await walkWal(reader, g, { start: control.checkPoint });
        if (walk.records === 0 || walk.lastRecordStart === undefined) {
          throw new ImageError(`cannot read the shutdown checkpoint record at ${formatLsn(control.checkPoint)}: ${walk.detail ?? walk.stop}`);
        }
        if (walk.stop !== 'end-of-wal') throw new ImageError(`WAL after the shutdown checkpoint is not clean: ${walk.detail ?? walk.stop}`);
        lsn = walk.end;
        prev = walk.lastRecordStart;
      } finally {
        await reader.close();
      }
    }
    const walDir = path.join(pgdata, 'pg_wal');
    if (!replayed) {
      // A replayed cluster's WAL was cut at its end before replay (and replay writes none);
      // initdb's or an imported one may carry recycled segments or bytes past the checkpoint.
      const writer = new WalSegmentWriter(walDir, g);
      await writer.truncateAt(lsn);
      await writer.close();
    }
    const lastSeg = lsn % BigInt(g.segSize) === 0n ? segmentNo(lsn, g) - 1n : segmentNo(lsn, g);
    await pruneWalDir(walDir, g, segmentNo(control.redo, g), lastSeg);
    for (const transient of ['recovery.signal', 'standby.signal', 'postmaster.opts', 'postmaster.pid']) {
      await fsp.rm(path.join(pgdata, transient), { force: true });
    }
    const dataBytes = await treeBytes(pgdata);
    const precomputed = dataBytes <= this.precomputeLimitBytes;
    const bytes = precomputed ? await writeBasebackupTarGz(pgdata, path.join(scratch, TARBALL)) : dataBytes;
    const meta: ImageMeta = {
      lsn: formatLsn(lsn),
      prev_record_lsn: formatLsn(prev),
      checkpoint_lsn: formatLsn(control.checkPoint),
      redo_lsn: formatLsn(control.redo),
      control_state: control.stateName,
      source,
      pg_version: 15,
      basebackup_bytes: bytes,
      ...(precomputed ? {} : { precomputed_basebackup: false }),
      created_at: new Date().toISOString(),
    };
    await writeJsonAtomic(path.join(scratch, IMAGE_FILE), meta);
    await fsyncTree(scratch);
    const final = this.imageDir(lsn);
    if (await exists(final)) {
      // Another path produced the same state first; images are immutable, keep that one.
      await fsp.rm(scratch, { recursive: true, force: true });
      return (await this.get(lsn))!;
    }
    await moveDir(scratch, final);
    await fsyncDir(this.dir);
    return meta;
  }
}
