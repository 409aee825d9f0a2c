import { writeFileAtomicSync } from '../../common/atomic-write';
import { createHash } from 'node:crypto';
import { childEnv } from '../../common/child-env';
import { createReadStream, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import { maskSecrets } from '../../common/errors';
import { pgBin, type PgInstallation } from '../../common/pg-binaries';
import { every, type StepContext } from '../../common/activity-context';
import { formatKeyValueConninfo, splitPassword } from '../conninfo';
import { nonRetryable, retryable } from '../../common/failures';
import { classifyPgToolError } from './failures';
import { killRecordedGroup, runTool, ToolMissingError, type ToolResult } from './run-tool';
import type { ScratchConnection } from './scratch-postgres';

/**
 * pg_dump of the source into `<workdir>/dumpdir` and pg_restore of it into the scratch database,
 * with the options the reference uses. Completion of each is recorded in a marker file holding the
 * checksum of the dump's table of contents: a completed dump is never redone, an incomplete one is
 * removed and redone, and a restore that did not complete starts over in a recreated database.
 */

/** Options shared by pg_dump and pg_restore: one database, its objects owned by the importer. */
export const COMMON_DUMP_RESTORE_OPTIONS = [
  '--no-owner',
  '--no-privileges',
  '--no-publications',
  '--no-subscriptions',
  '--no-security-labels',
  '--no-tablespaces',
] as const;

export interface DumpPaths {
  dumpDir: string;
  dumpMarker: string;
  dumpPidFile: string;
  dumpLog: string;
  restoreMarker: string;
  restorePidFile: string;
  restoreLog: string;
}

export function dumpPaths(workdir: string): DumpPaths {
  return {
    dumpDir: path.join(workdir, 'dumpdir'),
    dumpMarker: path.join(workdir, 'dumpdir.done.json'),
    dumpPidFile: path.join(workdir, 'pg_dump.pid'),
    dumpLog: path.join(workdir, 'pg_dump.log'),
    restoreMarker: path.join(workdir, 'restore.done.json'),
    restorePidFile: path.join(workdir, 'pg_restore.pid'),
    restoreLog: path.join(workdir, 'pg_restore.log'),
  };
}

interface DumpMarker {
  tocSha256: string;
  bytes: number;
  files: number;
  finishedAt: string;
}

interface RestoreMarker {
  tocSha256: string;
  database: string;
  finishedAt: string;
}

async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

function directorySize(dir: string): { bytes: number; files: number } {
  let bytes = 0;
  let files = 0;
  try {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      if (entry.isFile()) {
        files++;
        bytes += statSync(path.join(dir, entry.name)).size;
      }
    }
  } catch {
    /* not there yet */
  }
  return { bytes, files };
}

function readJson<T>(file: string): T | undefined {
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as T;
  } catch {
    return undefined;
  }
}

function writeJsonAtomic(file: string, value: unknown): void {
  writeFileAtomicSync(file, JSON.stringify(value, null, 2));
}

/** The completed dump's marker if the dump directory still matches it. */
export async function completedDump(workdir: string): Promise<DumpMarker | undefined> {
  const p = dumpPaths(workdir);
  const marker = readJson<DumpMarker>(p.dumpMarker);
  const toc = path.join(p.dumpDir, 'toc.dat');
  if (!marker || !existsSync(toc)) return undefined;
  return (await sha256File(toc)) === marker.tocSha256 ? marker : undefined;
}

/** Environment for a client tool: nothing inherited that could redirect it (PGHOST, PGSERVICE...). */
export function toolEnv(workdir: string, password?: string): Record<string, string> {
  const extra: Record<string, string> = {
    LC_ALL: 'C',
    LC_MESSAGES: 'C',
    PGAPPNAME: 'durable-compute-fast-import',
    PGCONNECT_TIMEOUT: '30',
    // No password file lookups: the password comes from the spec or not at all.
    PGPASSFILE: path.join(workdir, 'no-passfile'),
  };
  if (password !== undefined) extra.PGPASSWORD = password;
  return childEnv({ extra });
}

function failureText(tool: string, result: ToolResult): string {
  const how = result.code !== null ? `exit code ${result.code}` : `signal ${result.signal}`;
  const shown = (result.errorLines.length > 0 ? result.errorLines : result.stderrTail).slice(-8).join('\n');
  return `${tool} failed (${how})${shown ? `:\n${shown}` : ''}`;
}

export async function dumpSource(opts: {
  install: PgInstallation;
  workdir: string;
  sourceConnstring: string;
  jobs: number;
  ctx: StepContext;
}): Promise<{ skipped: boolean; tocSha256: string; bytes: number; files: number }> {
  const p = dumpPaths(opts.workdir);
  const done = await completedDump(opts.workdir);
  if (done) return { skipped: true, tocSha256: done.tocSha256, bytes: done.bytes, files: done.files };

  mkdirSync(opts.workdir, { recursive: true, mode: 0o700 });
  // An earlier attempt's pg_dump may still be writing (its worker died): stop it before cleaning up.
  await killRecordedGroup(p.dumpPidFile);
  rmSync(p.dumpMarker, { force: true });
  rmSync(p.dumpDir, { recursive: true, force: true });
  let split;
  try {
    split = splitPassword(opts.sourceConnstring);
  } catch (err) {
    throw nonRetryable('InvalidConnectionString', `The source connection string cannot be parsed: ${(err as Error).message}`);
  }
  const stopHeartbeat = every(10_000, () => opts.ctx.heartbeat({ phase: 'dump', ...directorySize(p.dumpDir) }));
  let result: ToolResult;
  try {
    result = await runTool({
      command: pgBin(opts.install, 'pg_dump'),
      args: [
        '--format=directory',
        `--jobs=${Math.max(1, opts.jobs)}`,
        ...COMMON_DUMP_RESTORE_OPTIONS,
        '--no-sync',
        '--verbose',
        '--file', p.dumpDir,
        // The connection string without its password; the password travels in PGPASSWORD.
        '--dbname', split.withoutPassword,
      ],
      env: toolEnv(opts.workdir, split.password),
      pidFile: p.dumpPidFile,
      logFile: p.dumpLog,
      signal: opts.ctx.signal,
    });
  } catch (err) {
    if (err instanceof ToolMissingError) throw nonRetryable('MissingBinary', `pg_dump is missing: ${err.message}`);
    throw err;
  } finally {
    stopHeartbeat();
  }
  if (result.code !== 0) {
    const text = `${failureText('pg_dump', result)}\n(source: ${maskSecrets(opts.sourceConnstring)})`;
    const permanent = classifyPgToolError([...result.errorLines, ...result.stderrTail].join('\n'));
    throw permanent ? nonRetryable(permanent, text) : retryable('DumpFailed', text);
  }
  const tocSha256 = await sha256File(path.join(p.dumpDir, 'toc.dat'));
  const size = directorySize(p.dumpDir);
  writeJsonAtomic(p.dumpMarker, { tocSha256, ...size, finishedAt: new Date().toISOString() } satisfies DumpMarker);
  return { skipped: false, tocSha256, ...size };
}

export async function restoreDump(opts: {
  install: PgInstallation;
  workdir: string;
  database: string;
  jobs: number;
  conn: ScratchConnection;
  recreateDatabase: () => Promise<void>;
  ctx: StepContext;
}): Promise<{ skipped: boolean; tocSha256: string }> {
  const p = dumpPaths(opts.workdir);
  const dump = await completedDump(opts.workdir);
  if (!dump) throw nonRetryable('InvalidInput', `No completed dump in ${p.dumpDir}: run the dump step before the restore`);
  const previous = readJson<RestoreMarker>(p.restoreMarker);
  if (previous && previous.tocSha256 === dump.tocSha256 && previous.database === opts.database) {
    return { skipped: true, tocSha256: dump.tocSha256 };
  }
  rmSync(p.restoreMarker, { force: true });
  await killRecordedGroup(p.restorePidFile);
  // Never restore on top of a half-restored database: start from an empty one every time.
  await opts.recreateDatabase();
  const target = formatKeyValueConninfo([
    ['host', opts.conn.socketDir],
    ['port', String(opts.conn.port)],
    ['user', opts.conn.user],
    ['dbname', opts.database],
  ]);
  const stopHeartbeat = every(10_000, () => opts.ctx.heartbeat({ phase: 'restore' }));
  let result: ToolResult;
  try {
    result = await runTool({
      command: pgBin(opts.install, 'pg_restore'),
      args: [`--jobs=${Math.max(1, opts.jobs)}`, ...COMMON_DUMP_RESTORE_OPTIONS, '--verbose', '--dbname', target, p.dumpDir],
      env: toolEnv(opts.workdir),
      pidFile: p.restorePidFile,
      logFile: p.restoreLog,
      signal: opts.ctx.signal,
    });
  } catch (err) {
    if (err instanceof ToolMissingError) throw nonRetryable('MissingBinary', `pg_restore is missing: ${err.message}`);
    throw err;
  } finally {
    stopHeartbeat();
  }
  if (result.code !== 0) {
    const text = failureText('pg_restore', result);
    // pg_restore carries on past failed statements and exits 1: the dump does not fit the
    // scratch server (an extension it lacks, say), and a retry would fail the same way.
    const statementErrors = result.errorLines.some((l) => /could not execute query|errors ignored on restore/i.test(l));
    throw statementErrors ? nonRetryable('RestoreFailed', text) : retryable('RestoreInterrupted', text);
  }
  writeJsonAtomic(p.restoreMarker, { tocSha256: dump.tocSha256, database: opts.database, finishedAt: new Date().toISOString() } satisfies RestoreMarker);
  return { skipped: false, tocSha256: dump.tocSha256 };
}
