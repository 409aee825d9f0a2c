import { spawn, type ChildProcess } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { maskSecrets } from '../../common/errors';
import { nonRetryable, retryable } from '../../common/failures';
import { pgBin, type PgInstallation } from '../../common/pg-binaries';
import { processStartTime } from '../../common/process-start-time';
import { COMMON_DUMP_RESTORE_OPTIONS, toolEnv } from './dump-restore';
import { describeEndpoint, querySide, type Endpoint } from './restore-endpoints';
import { listFileText, type TocEntry } from './restore-toc';
import { NL, rowBatches, sliceBatch } from './copy-row-batches';
import { killRecordedGroup } from './run-tool';

/**
 * A large table's data restored in batches, each committed in one destination transaction with a
 * row recording the batch's byte range, so a restore interrupted inside the table resumes after
 * the last committed batch: nothing copied twice, nothing truncated.
 *
 * pg_restore itself decodes the entry (`pg_restore -f - -L <the entry>` writes the SQL it would
 * run: its session settings, the TOC entry's COPY statement, then the entry's COPY data from the
 * dump file, whatever its compression), so the statements and data sent are pg_restore's. The
 * data is cut at row ends (a row of COPY's text format is one line; a line `\.` ends the data)
 * into batches of about `batchBytes`; each batch goes through psql (libpq, the same connection
 * handling as pg_restore's) as
 *
 *   <pg_restore's SET statements>; BEGIN; <COPY ... FROM stdin>; rows; \. ;
 *   INSERT INTO <progress table> (this batch's range); COMMIT;
 *
 * `lanes` batches at a time, in as many sessions. Offsets count bytes of the entry's COPY data;
 * the same dump yields the same bytes on every attempt, so a later attempt sends exactly the byte
 * ranges no committed batch covers.
 */

/** The schema the import owns in the destination for its progress table, dropped when the data is in. */
export const PROGRESS_SCHEMA = '_durable_compute_import';
const PROGRESS_TABLE = `"${PROGRESS_SCHEMA}".copied_batches`;

const PID_FILE = /^(?:pg_restore-item-\d+|psql-batch-\d+-\d+)\.pid$/;

/** Pid files of the processes a batched copy runs (killLeftoverRestores stops them). */
export function isRestorePidFile(name: string): boolean {
  return PID_FILE.test(name);
}

function literal(text: string): string {
  return `'${text.replaceAll("'", "''")}'`;
}

/** Creates the progress table if needed; false (with the reason) when the destination user may not create a schema. */
export async function ensureProgressTable(install: PgInstallation, dest: Endpoint, signal: AbortSignal): Promise<{ ok: true } | { ok: false; reason: string }> {
  try {
    await querySide(
      install,
      dest,
      `CREATE SCHEMA IF NOT EXISTS "${PROGRESS_SCHEMA}"; CREATE TABLE IF NOT EXISTS ${PROGRESS_TABLE} (toc_sha256 text NOT NULL, entry_id integer NOT NULL, start_offset bigint NOT NULL, end_offset bigint NOT NULL, PRIMARY KEY (toc_sha256, entry_id, start_offset))`,
      { signal },
    );
    return { ok: true };
  } catch (err) {
    const text = err instanceof Error ? err.message : String(err);
    if (/permission denied/i.test(text)) return { ok: false, reason: text };
    throw err;
  }
}

export async function dropProgressTable(install: PgInstallation, dest: Endpoint, signal: AbortSignal): Promise<void> {
  await querySide(install, dest, `DROP SCHEMA IF EXISTS "${PROGRESS_SCHEMA}" CASCADE`, { signal });
}

export type ByteRange = [start: number, end: number];

/** The byte ranges of `entryId`'s data that committed batches hold, sorted. */
export async function committedRanges(install: PgInstallation, dest: Endpoint, tocSha256: string, entryId: number, signal: AbortSignal): Promise<ByteRange[]> {
  const rows = await querySide(
    install,
    dest,
    `SELECT start_offset, end_offset FROM ${PROGRESS_TABLE} WHERE toc_sha256 = ${literal(tocSha256)} AND entry_id = ${Number(entryId)} ORDER BY start_offset`,
    { signal },
  );
  return rows.map(([s, e]) => [Number(s), Number(e)]);
}

/** The parts of [start, end) that no range of `covered` (sorted, disjoint) holds. */
export function uncoveredParts(start: number, end: number, covered: ByteRange[]): ByteRange[] {
  const parts: ByteRange[] = [];
  let at = start;
  for (const [s, e] of covered) {
    if (e <= at) continue;
    if (s >= end) break;
    if (s > at) parts.push([at, s]);
    at = Math.max(at, e);
    if (at >= end) break;
  }
  if (at < end) parts.push([at, end]);
  return parts;
}

/** Spawns `command` in a process group of its own, recorded in `pidFile` (as run-tool.ts does). */
function spawnRecorded(command: string, args: string[], env: Record<string, string>, pidFile: string, stdio: ['pipe' | 'ignore', 'pipe' | 'ignore', 'pipe']): ChildProcess {
  const child = spawn(command, args, { env, stdio, detached: true });
  child.once('spawn', () => {
    const startTime = child.pid ? processStartTime(child.pid) : undefined;
    if (child.pid && startTime) writeFileSync(pidFile, JSON.stringify({ pid: child.pid, startTime }));
  });
  return child;
}

function killGroup(child: ChildProcess): void {
  try {
    if (child.pid) process.kill(-child.pid, 'SIGKILL');
  } catch {
    /* already gone */
  }
}

function collectStderr(child: ChildProcess): () => string {
  let text = '';
  child.stderr!.on('data', (c: Buffer) => {
    text = (text + c.toString('utf8')).slice(-8000);
  });
  return () => maskSecrets(text.trim());
}

function exited(child: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code, signal) => resolve({ code, signal }));
  });
}

/** pg_restore's script for one entry: its session statements and COPY statement, then the COPY data. */
async function openEntryScript(opts: { install: PgInstallation; dumpDir: string; workdir: string; entry: TocEntry; listFile: string; pidFile: string }) {
  writeFileSync(opts.listFile, listFileText([opts.entry]), { mode: 0o600 });
  await killRecordedGroup(opts.pidFile);
  const child = spawnRecorded(pgBin(opts.install, 'pg_restore'), [...COMMON_DUMP_RESTORE_OPTIONS, '--use-list', opts.listFile, '--file', '-', opts.dumpDir], toolEnv(opts.workdir), opts.pidFile, ['ignore', 'pipe', 'pipe']);
  const stderr = collectStderr(child);
  const done = exited(child);
  const chunks = child.stdout![Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  let head = Buffer.alloc(0);
  let copyStatement: string | undefined;
  const settings: string[] = [];
  while (copyStatement === undefined) {
    const next = await chunks.next();
    if (next.done) break;
    head = Buffer.concat([head, next.value]);
    let nl: number;
    while (copyStatement === undefined && (nl = head.indexOf(NL)) !== -1) {
      const line = head.subarray(0, nl).toString('utf8');
      head = head.subarray(nl + 1);
      if (/^COPY .* FROM stdin;$/.test(line)) copyStatement = line;
      // Comments and psql meta-commands (\restrict) are not pg_restore's statements to the server.
      else if (line.trim() !== '' && !line.startsWith('--') && !line.startsWith('\\')) settings.push(line);
    }
  }
  if (copyStatement === undefined) {
    killGroup(child);
    const { code } = await done.catch(() => ({ code: null }));
    throw nonRetryable('RestoreFailed', `pg_restore wrote no COPY statement for dump entry ${opts.entry.id} (TABLE DATA ${maskSecrets(opts.entry.rest)}; exit code ${code}): ${stderr()}`);
  }
  const rest = head;
  async function* data(): AsyncGenerator<Buffer> {
    if (rest.length) yield rest;
    for (;;) {
      const next = await chunks.next();
      if (next.done) return;
      yield next.value;
    }
  }
  return {
    settings,
    copyStatement,
    data: data(),
    /** Waits for pg_restore to exit 0 (after its output was read to the end). */
    async finish(): Promise<void> {
      const { code, signal } = await done;
      rmSync(opts.pidFile, { force: true });
      if (code !== 0) throw retryable('RestoreInterrupted', `pg_restore reading dump entry ${opts.entry.id} failed (${code !== null ? `exit code ${code}` : `signal ${signal}`}): ${stderr()}`);
    },
    stop(): void {
      killGroup(child);
      rmSync(opts.pidFile, { force: true });
    },
  };
}

export interface BatchedCopyOptions {
  install: PgInstallation;
  dest: Endpoint;
  /** The destination connection string without its password, and the password (for PGPASSWORD). */
  conn: { withoutPassword: string; password?: string };
  dumpDir: string;
  workdir: string;
  tocSha256: string;
  entry: TocEntry;
  slot: number;
  lanes: number;
  batchBytes: number;
  signal: AbortSignal;
  /** After each batch committed (bytes of COPY data) or found committed by an earlier attempt. */
  onProgress?: (p: { bytesSent: number; bytesKept: number }) => void;
}

export interface BatchedCopyResult {
  batchesSent: number;
  bytesSent: number;
  /** Bytes an earlier attempt's committed batches held: not sent again. */
  bytesKept: number;
  /** The entry's COPY data size. */
  bytesTotal: number;
}

export async function copyTableInBatches(opts: BatchedCopyOptions): Promise<BatchedCopyResult> {
  const { entry } = opts;
  const covered = await committedRanges(opts.install, opts.dest, opts.tocSha256, entry.id, opts.signal);
  const script = await openEntryScript({
    install: opts.install,
    dumpDir: opts.dumpDir,
    workdir: opts.workdir,
    entry,
    listFile: path.join(opts.workdir, 'restore-lists', `batched-${entry.id}.list`),
    pidFile: path.join(opts.workdir, `pg_restore-item-${opts.slot}.pid`),
  });
  const prologue = `${script.settings.join('\n')}\nBEGIN;\n${script.copyStatement}\n`;
  const result: BatchedCopyResult = { batchesSent: 0, bytesSent: 0, bytesKept: 0, bytesTotal: 0 };
  const freeLanes = Array.from({ length: Math.max(1, opts.lanes) }, (_, i) => i);
  const running = new Set<Promise<void>>();
  let failure: unknown;

  const sendBatch = async (lane: number, start: number, end: number, rows: Buffer[]): Promise<void> => {
    const pidFile = path.join(opts.workdir, `psql-batch-${opts.slot}-${lane}.pid`);
    await killRecordedGroup(pidFile);
    const child = spawnRecorded(
      pgBin(opts.install, 'psql'),
      ['--no-psqlrc', '--quiet', '--set', 'ON_ERROR_STOP=1', '--dbname', opts.conn.withoutPassword],
      { ...toolEnv(opts.workdir, opts.conn.password) },
      pidFile,
      ['pipe', 'ignore', 'pipe'],
    );
    const stderr = collectStderr(child);
    const done = exited(child);
    const onAbort = () => killGroup(child);
    opts.signal.addEventListener('abort', onAbort, { once: true });
    try {
      // A write after psql died fails with EPIPE: its exit status says why.
      child.stdin!.on('error', () => undefined);
      child.stdin!.write(prologue);
      for (const c of rows) child.stdin!.write(c);
      child.stdin!.end(`\\.\nINSERT INTO ${PROGRESS_TABLE} VALUES (${literal(opts.tocSha256)}, ${Number(entry.id)}, ${start}, ${end});\nCOMMIT;\n`);
      const { code, signal } = await done;
      if (opts.signal.aborted) throw opts.signal.reason;
      if (code !== 0) {
        const text = `copying bytes ${start}-${end} of dump entry ${entry.id} (TABLE DATA ${maskSecrets(entry.rest)}) into the destination ${describeEndpoint(opts.dest)} failed (${code !== null ? `exit code ${code}` : `signal ${signal}`}): ${stderr()}`;
        if (/connection to server .* failed|could not connect|server closed the connection|terminating connection/i.test(text) || code === null) throw retryable('DestinationUnreachable', text);
        throw nonRetryable('RestoreFailed', text);
      }
    } finally {
      opts.signal.removeEventListener('abort', onAbort);
      rmSync(pidFile, { force: true });
    }
    result.batchesSent++;
    result.bytesSent += end - start;
    opts.onProgress?.({ bytesSent: result.bytesSent, bytesKept: result.bytesKept });
  };

  try {
    for await (const batch of rowBatches(script.data, opts.batchBytes)) {
      if (failure !== undefined || opts.signal.aborted) break;
      const end = batch.start + batch.length;
      result.bytesTotal = end;
      const parts = uncoveredParts(batch.start, end, covered);
      result.bytesKept += batch.length - parts.reduce((n, [s, e]) => n + e - s, 0);
      for (const [s, e] of parts) {
        while (freeLanes.length === 0) await Promise.race(running);
        if (failure !== undefined) break;
        const lane = freeLanes.pop()!;
        const job: Promise<void> = sendBatch(lane, s, e, sliceBatch(batch, s, e))
          .catch((err: unknown) => {
            failure ??= err;
          })
          .finally(() => {
            running.delete(job);
            freeLanes.push(lane);
          });
        running.add(job);
      }
    }
    await Promise.all(running);
    if (failure !== undefined) throw failure;
    if (opts.signal.aborted) throw opts.signal.reason;
    await script.finish();
  } catch (err) {
    script.stop();
    await Promise.all(running);
    throw err;
  }
  return result;
}
