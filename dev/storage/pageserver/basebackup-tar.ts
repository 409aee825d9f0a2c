/**
 * Packs an image's data directory into the gzip'd tar a compute unpacks into its PGDATA. The
 * compute writes its own postgresql.conf and signal files, so those (and runtime-only files)
 * are left out, as pg_basebackup leaves out runtime directories' contents.
 */
import { createReadStream, createWriteStream, promises as fsp } from 'node:fs';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import tar from 'tar-stream';
import { readControlFile, walSegmentName } from '../pg-control';

/** Top-level files the compute must not inherit. */
const EXCLUDED_TOP_FILES = new Set([
  'postgresql.conf',
  'postmaster.pid',
  'postmaster.opts',
  'recovery.signal',
  'standby.signal',
  'backup_label',
  'tablespace_map',
  'current_logfiles',
  'materialize.log',
]);

const SMALL_FILE = 1024 * 1024;

/** Directories kept empty: their contents only mean something to a running server. */
const EMPTIED_DIRS = new Set(['pg_stat_tmp', 'pg_replslot', 'pg_dynshmem', 'pg_notify', 'pg_serial', 'pg_snapshots', 'pg_subtrans', 'log']);

function excluded(rel: string, isDir: boolean): boolean {
  const parts = rel.split('/');
  if (parts.length === 1 && !isDir && EXCLUDED_TOP_FILES.has(rel)) return true;
  if (parts.length > 1 && EMPTIED_DIRS.has(parts[0]!)) return true;
  // Relation cache init files are rebuilt at startup.
  if (!isDir && parts[parts.length - 1] === 'pg_internal.init') return true;
  if (!isDir && /^pgsql_tmp/.test(parts[parts.length - 1]!)) return true;
  return false;
}

/**
 * The WAL a compute never reads: the part of the redo segment between its first page (whose long
 * header Postgres checks) and the page holding the checkpoint's redo point. A compute starts from
 * the checkpoint and its WAL pusher streams from there on, as Neon's base backup carries no WAL
 * history; sent as zeros, it costs almost nothing to gzip, send or unpack (the compute's untar
 * leaves zero runs as holes).
 */
interface WalCut {
  rel: string;
  from: number;
  to: number;
}

function walCutOf(pgdata: string): WalCut | undefined {
  let control;
  try {
    control = readControlFile(pgdata);
  } catch {
    return undefined; // not a data directory we can read: send it as it is
  }
  const page = control.xlogBlcksz;
  const segSize = control.xlogSegSize;
  if (!(page > 0) || !(segSize > 0)) return undefined;
  const redoPageStart = Math.floor(Number(control.redo % BigInt(segSize)) / page) * page;
  if (redoPageStart <= page) return undefined;
  return { rel: `pg_wal/${walSegmentName(control.timelineId, control.redo, segSize)}`, from: page, to: redoPageStart };
}

async function addTree(pack: tar.Pack, root: string, rel: string, walCut?: WalCut): Promise<void> {
  const dir = rel === '' ? root : path.join(root, rel);
  const entries = (await fsp.readdir(dir, { withFileTypes: true })).sort((a, b) => a.name.localeCompare(b.name));
  for (const e of entries) {
    const childRel = rel === '' ? e.name : `${rel}/${e.name}`;
    const full = path.join(root, childRel);
    if (excluded(childRel, e.isDirectory())) continue;
    const st = await fsp.lstat(full);
    const common = { mode: st.mode & 0o7777, mtime: st.mtime, uid: 0, gid: 0 };
    if (st.isDirectory()) {
      await new Promise<void>((resolve, reject) =>
        pack.entry({ ...common, name: `${childRel}/`, type: 'directory' }, (err) => (err ? reject(err) : resolve())),
      );
      await addTree(pack, root, childRel, walCut);
    } else if (st.isSymbolicLink()) {
      const target = await fsp.readlink(full);
      await new Promise<void>((resolve, reject) =>
        pack.entry({ ...common, name: childRel, type: 'symlink', linkname: target }, (err) => (err ? reject(err) : resolve())),
      );
    } else if (st.isFile()) {
      if (walCut?.rel === childRel && st.size >= walCut.to) {
        const data = await fsp.readFile(full);
        if (data.length !== st.size) throw new Error(`${full} changed size while being archived`);
        data.fill(0, walCut.from, walCut.to);
        await new Promise<void>((resolve, reject) =>
          pack.entry({ ...common, name: childRel, type: 'file', size: data.length }, data, (err) => (err ? reject(err) : resolve())),
        );
      } else if (st.size <= SMALL_FILE) {
        // Most catalog files are a few pages: one read and one entry is far cheaper than a stream.
        const data = await fsp.readFile(full);
        if (data.length !== st.size) throw new Error(`${full} changed size while being archived`);
        await new Promise<void>((resolve, reject) =>
          pack.entry({ ...common, name: childRel, type: 'file', size: data.length }, data, (err) => (err ? reject(err) : resolve())),
        );
      } else {
        const sink = pack.entry({ ...common, name: childRel, type: 'file', size: st.size });
        await pipeline(createReadStream(full), sink);
      }
    }
  }
}

/** A streaming tar of the data directory (no gzip). */
export function dataDirTar(pgdata: string): tar.Pack {
  const pack = tar.pack();
  addTree(pack, pgdata, '', walCutOf(pgdata)).then(
    () => pack.finalize(),
    (err: Error) => pack.destroy(err),
  );
  return pack;
}

/**
 * Writes `<outFile>` = gzip(tar(pgdata)), fsync'd. Returns its size in bytes. Level 1: a data
 * directory compresses only ~12% worse than at level 6, in a third of the time.
 */
export async function writeBasebackupTarGz(pgdata: string, outFile: string, level = 1): Promise<number> {
  const out = createWriteStream(outFile, { mode: 0o644 });
  await pipeline(dataDirTar(pgdata), createGzip({ level }), out);
  const fh = await fsp.open(outFile, 'r');
  try {
    await fh.sync();
    return (await fh.stat()).size;
  } finally {
    await fh.close();
  }
}
