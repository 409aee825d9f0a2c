/**
 * Produces the image holding a timeline's state at LSN L: copy the newest image below L, add the
 * safekeepers' WAL [image LSN, L) to its pg_wal, check the records, and let stock PostgreSQL
 * replay them in archive recovery up to the last complete record, shutting down right there (no
 * WAL of its own). See dev/storage/README.md for why the result's WAL ends exactly at L.
 */
import { childEnv } from '../../../common/child-env';
import { execFile } from 'node:child_process';
import { mkdtempSync, promises as fsp, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { formatLsn, parseLsn } from '../../../model/lsn';
import type { PgInstallation } from '../../../common/pg-binaries';
import { chownForPostgres } from '../../../common/pg-identity';
import { readControlFile } from '../pg-control';
import { geometryOf, PGDATA_DIR, type ImageMeta, type ImageStore } from './images';
import { runPostgresToExit } from './postgres-run';
import type { SafekeeperClient, SafekeeperFlush } from './safekeeper-client';
import { WalDirReader, WalSegmentWriter, walkWal } from './wal';

const execFileAsync = promisify(execFile);

export class MaterializeError extends Error {
  override name = 'MaterializeError';
}

export interface MaterializeContext {
  install: PgInstallation;
  safekeepers: SafekeeperClient;
  tenantId: string;
  timelineId: string;
  images: ImageStore;
  /** Safekeepers that know the timeline, with their flush LSNs. */
  flushes: SafekeeperFlush[];
  timeoutMs: number;
  log: (line: string) => void;
}

function quote(value: string): string {
  return `'${value.replaceAll("'", "''")}'`;
}

function replayConfig(socketDir: string, targetRecord: bigint, control: ReturnType<typeof readControlFile>): string {
  const settings: Record<string, string> = {
    listen_addresses: quote(''),
    unix_socket_directories: quote(socketDir),
    port: '5432',
    // No hot standby: nothing connects, and the primary's connection limits need not be matched.
    hot_standby: 'off',
    // Archive recovery requires a restore command; WAL comes from pg_wal only.
    restore_command: quote('false'),
    recovery_target_lsn: quote(formatLsn(targetRecord)),
    recovery_target_inclusive: 'on',
    recovery_target_action: quote('shutdown'),
    recovery_target_timeline: quote('current'),
    max_prepared_transactions: String(Math.max(control.maxPreparedXacts, 0)),
    max_locks_per_transaction: String(Math.max(control.maxLocksPerXact, 64)),
    shared_buffers: quote('32MB'),
    fsync: 'on',
    logging_collector: 'off',
    archive_mode: 'off',
  };
  return Object.entries(settings)
    .map(([k, v]) => `${k} = ${v}\n`)
    .join('');
}

/**
 * The image at `lsn` (or at the end of the last complete record before it), creating it if
 * needed. Callers serialize calls per timeline.
 */
export async function materializeAt(ctx: MaterializeContext, lsn: bigint): Promise<ImageMeta> {
  const all = await ctx.images.list();
  const exact = all.find((i) => parseLsn(i.lsn) === lsn);
  if (exact) return exact;
  const base = all.filter((i) => parseLsn(i.lsn) < lsn).pop();
  if (!base) throw new MaterializeError(`no image of ${ctx.tenantId}/${ctx.timelineId} at or before ${formatLsn(lsn)}`);
  const baseLsn = parseLsn(base.lsn);
  const sources = ctx.flushes.filter((f) => f.flushLsn >= lsn).sort((a, b) => (a.flushLsn > b.flushLsn ? -1 : 1));
  if (sources.length === 0) {
    throw new MaterializeError(`no safekeeper has WAL of ${ctx.tenantId}/${ctx.timelineId} up to ${formatLsn(lsn)}`);
  }

  const started = Date.now();
  const scratch = await ctx.images.scratch({ forPostgres: true });
  const socketDir = mkdtempSync(path.join(os.tmpdir(), 'dc-ps-'));
  try {
    const pgdata = path.join(scratch, PGDATA_DIR);
    const phase: Record<string, number> = {};
    let mark = Date.now();
    const lap = (name: string) => {
      phase[name] = Date.now() - mark;
      mark = Date.now();
    };
    // GNU cp is several times faster than fs.cp on a data directory's ~1000 files.
    await execFileAsync('cp', ['-a', '--reflink=auto', '--', ctx.images.pgdata(base), pgdata], { timeout: 10 * 60 * 1000, env: childEnv() });
    const control = readControlFile(pgdata);
    const g = geometryOf(control);
    const walDir = path.join(pgdata, 'pg_wal');
    lap('copy');

    const writer = new WalSegmentWriter(walDir, g);
    try {
      await ctx.safekeepers.fetchWal(sources, ctx.tenantId, ctx.timelineId, baseLsn, lsn, (at, chunk) => writer.write(at, chunk));
      await writer.truncateAt(lsn);
    } finally {
      await writer.close(false);
    }

    lap('fetch');
    const reader = new WalDirReader(walDir, g);
    const walk = await walkWal(reader, g, { start: baseLsn, limit: lsn, expectedPrev: parseLsn(base.prev_record_lsn) }).finally(() => reader.close());
    if (walk.stop === 'invalid' || walk.stop === 'end-of-wal') {
      throw new MaterializeError(
        `WAL of ${ctx.tenantId}/${ctx.timelineId} from the safekeepers is not usable between ${formatLsn(baseLsn)} and ${formatLsn(lsn)}: ${walk.detail}`,
      );
    }
    if (walk.records === 0 || walk.lastRecordStart === undefined) return base; // no complete record in between: same state
    const end = walk.end;
    const already = await ctx.images.get(end);
    if (already) return already;
    if (end < lsn) {
      // A record cut off at L belongs to no state at L: keep the image's WAL ending where its state ends.
      const cutter = new WalSegmentWriter(walDir, g);
      await cutter.truncateAt(end);
      await cutter.close(false);
    }

    lap('check');
    await fsp.writeFile(path.join(pgdata, 'postgresql.conf'), replayConfig(socketDir, walk.lastRecordStart, control), { mode: 0o600 });
    await fsp.writeFile(path.join(pgdata, 'recovery.signal'), '', { mode: 0o600 });
    await fsp.rm(path.join(pgdata, 'standby.signal'), { force: true });
    chownForPostgres(scratch);
    chownForPostgres(socketDir);
    await runPostgresToExit(ctx.install, pgdata, path.join(scratch, 'materialize.log'), ctx.timeoutMs);
    lap('replay');
    await fsp.rm(path.join(pgdata, 'postgresql.conf'), { force: true });
    const image = await ctx.images.commit(scratch, 'replay', { lsn: end, prevRecordLsn: walk.lastRecordStart });
    lap('commit');
    const phases = Object.entries(phase)
      .map(([k, v]) => `${k} ${v}`)
      .join(', ');
    ctx.log(
      `materialized ${ctx.tenantId}/${ctx.timelineId} at ${image.lsn} from image ${base.lsn} (${walk.records} records, ${Number(lsn - baseLsn)} bytes of WAL) in ${Date.now() - started} ms (${phases})`,
    );
    return image;
  } finally {
    await fsp.rm(scratch, { recursive: true, force: true });
    rmSync(socketDir, { recursive: true, force: true });
  }
}
