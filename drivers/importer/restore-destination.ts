import { execFile } from 'node:child_process';
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { maskSecrets } from '../../common/errors';
import { pgBin, type PgInstallation } from '../../common/pg-binaries';
import type { DumpRestoreSummary } from '../../model/import-status';
import { every, type StepContext } from '../../common/activity-context';
import { splitPassword } from '../conninfo';
import { COMMON_DUMP_RESTORE_OPTIONS, completedDump, dumpPaths, toolEnv } from './dump-restore';
import { nonRetryable, retryable } from '../../common/failures';
import { describeEndpoint, quoteIdent, querySide, userRelations, type Endpoint } from './restore-endpoints';
import { RestoreJournal } from './restore-journal';
import { dataFileSizes, isIndependentPostData, isTableData, listFileText, parseTocList, RESTORE_SECTIONS, type RestoreSection, type TocEntry } from './restore-toc';
import { killRecordedGroup, runTool, ToolMissingError } from './run-tool';
import { committedRanges, copyTableInBatches, dropProgressTable, ensureProgressTable, isRestorePidFile } from './restore-table-batches';

/**
 * The resumable restore of a dump-restore import: the dump in `<workdir>/dumpdir` goes into the
 * destination database section by section, through pg_restore and `-L` lists, each list in one
 * transaction (`--single-transaction`), so every entry is either wholly in the destination or not
 * at all:
 *
 * - pre-data (tables, types, functions...): one list, one transaction;
 * - data: one list per table (`jobs` at a time, largest first), then the other data entries
 *   (sequence values) one by one; a table whose dump file is `splitTablesLargerThan` bytes or
 *   more goes in batches instead, each committed with its byte range in a progress table of the
 *   destination (restore-table-batches.ts), `jobs` batches at a time;
 * - post-data: indexes and table constraints `jobs` at a time, then the rest (foreign keys,
 *   triggers...) one by one in the dump's order.
 *
 * The journal (restore-journal.ts) and the heartbeat details record what started and what is
 * done. A later attempt skips what is done; a table whose copy was in flight is truncated and
 * copied again (its transaction may have committed just before the kill), unless it went in
 * batches and some committed: then only the batches not committed are sent; any other entry in
 * flight is run again, and "already exists" then means the earlier attempt committed it.
 */

export interface RestoreHeartbeat {
  phase: 'restore-destination';
  tocSha256: string;
  section: RestoreSection;
  done: number[];
  started: number[];
  tablesDone: number;
  tablesTotal: number;
  bytesDone: number;
  bytesTotal: number;
}

export function restorePaths(workdir: string) {
  return {
    journal: path.join(workdir, 'restore-journal.jsonl'),
    lists: path.join(workdir, 'restore-lists'),
    log: path.join(workdir, 'pg_restore.log'),
    itemPidFile: (slot: number) => path.join(workdir, `pg_restore-item-${slot}.pid`),
  };
}

/** Stops every pg_restore an earlier attempt (whose worker died) may have left running or frozen. */
export async function killLeftoverRestores(workdir: string): Promise<void> {
  let names: string[] = [];
  try {
    names = readdirSync(workdir);
  } catch {
    return;
  }
  for (const name of names) if (isRestorePidFile(name)) await killRecordedGroup(path.join(workdir, name));
}

async function listSection(install: PgInstallation, dumpDir: string, section: RestoreSection, workdir: string): Promise<TocEntry[]> {
  const text = await new Promise<string>((resolve, reject) => {
    execFile(pgBin(install, 'pg_restore'), ['--list', `--section=${section}`, dumpDir], { env: toolEnv(workdir), maxBuffer: 512 * 1024 * 1024, encoding: 'utf8' }, (err, out, errText) =>
      err ? reject(nonRetryable('RestoreFailed', `pg_restore --list of ${dumpDir} failed: ${errText || err.message}`)) : resolve(out),
    );
  });
  return parseTocList(text, section);
}

/** Runs `fn` on every item, at most `n` at a time; the first failure stops taking new items and is thrown once the running ones end. */
async function inParallel<T>(items: T[], n: number, fn: (item: T, slot: number) => Promise<void>): Promise<void> {
  let next = 0;
  let failure: unknown;
  const lane = async (slot: number) => {
    while (failure === undefined && next < items.length) {
      const item = items[next++]!;
      try {
        await fn(item, slot);
      } catch (err) {
        failure ??= err;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(n, items.length)) }, (_, slot) => lane(slot)));
  if (failure !== undefined) throw failure;
}

export interface RestoreIntoDestinationOptions {
  install: PgInstallation;
  workdir: string;
  /** The destination's connection string in clear text (memory only). */
  destination: string;
  jobs: number;
  /** Drop the dump's objects in the destination before creating them (pg_restore --clean --if-exists). */
  clean: boolean;
  /** Tables whose dump data file has this many bytes or more are copied in resumable batches. */
  splitTablesLargerThan?: number;
  /** COPY data bytes per batch of such a table. */
  batchBytes?: number;
  ctx: StepContext;
}

/** pgbench scale 100's accounts file is 27 MiB: tables a tenth of that size already gain from batches. */
export const DEFAULT_SPLIT_TABLES_LARGER_THAN = 4 * 1024 * 1024;
export const DEFAULT_BATCH_BYTES = 32 * 1024 * 1024;

export async function restoreIntoDestination(opts: RestoreIntoDestinationOptions): Promise<DumpRestoreSummary> {
  const { install, workdir, ctx } = opts;
  const dump = await completedDump(workdir);
  const dumpDir = dumpPaths(workdir).dumpDir;
  if (!dump) throw nonRetryable('InvalidInput', `No completed dump in ${dumpDir}: run the dump step before the restore`);
  const p = restorePaths(workdir);
  mkdirSync(p.lists, { recursive: true, mode: 0o700 });
  const dest: Endpoint = { side: 'destination', connstring: opts.destination, workdir };
  let split;
  try {
    split = splitPassword(opts.destination);
  } catch (err) {
    throw nonRetryable('InvalidConnectionString', `The destination connection string cannot be parsed: ${(err as Error).message}`);
  }

  await killLeftoverRestores(workdir);
  const sections = new Map<RestoreSection, TocEntry[]>();
  for (const s of RESTORE_SECTIONS) sections.set(s, await listSection(install, dumpDir, s, workdir));
  const all = [...sections.values()].flat();
  const sizes = dataFileSizes(dumpDir);
  const tables = sections.get('data')!.filter(isTableData);
  const sizeOf = (e: TocEntry) => sizes.get(e.id) ?? 0;

  const journal = RestoreJournal.open(p.journal, dump.tocSha256);
  journal.merge(ctx.previousDetails as Record<string, unknown> | undefined);
  const doneBefore = new Set(journal.done);
  const inFlightBefore = new Set([...journal.started].filter((id) => !journal.done.has(id)));
  const attempt = ctx.attempt;
  let section: RestoreSection = 'pre-data';
  let tablesRedone = 0;
  let bytesRedone = 0;
  let tablesResumed = 0;
  let batchBytesKept = 0;
  let batchBytesSent = 0;
  const inTable = new Map<number, { bytesSent: number; bytesKept: number }>();

  const tablesDone = () => tables.filter((t) => journal.done.has(t.id));
  const progress = (): RestoreHeartbeat => {
    const done = tablesDone();
    return {
      phase: 'restore-destination',
      tocSha256: dump.tocSha256,
      section,
      done: [...journal.done],
      started: [...journal.started],
      tablesDone: done.length,
      tablesTotal: tables.length,
      bytesDone: done.reduce((n, t) => n + sizeOf(t), 0),
      bytesTotal: tables.reduce((n, t) => n + sizeOf(t), 0),
      ...(inTable.size ? { batched: Object.fromEntries(inTable) } : {}),
    };
  };
  const heartbeat = () => ctx.heartbeat(progress());
  const stopHeartbeat = every(5_000, heartbeat);
  heartbeat();

  /** One pg_restore of `entries` in one transaction; 'already-there' when an earlier attempt had committed them. */
  const restoreList = async (name: string, entries: TocEntry[], slot: number, extra: string[] = []): Promise<'restored' | 'already-there'> => {
    const listFile = path.join(p.lists, `${name}.list`);
    writeFileSync(listFile, listFileText(entries), { mode: 0o600 });
    let result;
    try {
      result = await runTool({
        command: pgBin(install, 'pg_restore'),
        args: ['--single-transaction', ...extra, ...COMMON_DUMP_RESTORE_OPTIONS, '--use-list', listFile, '--dbname', split.withoutPassword, dumpDir],
        env: toolEnv(workdir, split.password),
        pidFile: p.itemPidFile(slot),
        logFile: p.log,
        signal: ctx.signal,
      });
    } catch (err) {
      if (err instanceof ToolMissingError) throw nonRetryable('MissingBinary', `pg_restore is missing: ${err.message}`);
      throw err;
    }
    if (result.code === 0) return 'restored';
    const lines = [...result.errorLines, ...result.stderrTail];
    const text = `pg_restore of ${name} into the destination ${describeEndpoint(dest)} failed (${result.code !== null ? `exit code ${result.code}` : `signal ${result.signal}`}):\n${[...new Set(lines)].slice(-8).join('\n')}`;
    // Only an entry an earlier attempt was running may already be there: that attempt committed it.
    if (entries.every((e) => inFlightBefore.has(e.id)) && lines.some((l) => /already exists/.test(l))) return 'already-there';
    if (lines.some((l) => /connection to server .* failed|could not connect|server closed the connection/i.test(l))) throw retryable('DestinationUnreachable', text);
    if (lines.some((l) => /could not execute query|errors ignored on restore/i.test(l))) throw nonRetryable('RestoreFailed', text);
    throw retryable('RestoreInterrupted', text);
  };
  const restoreEntries = async (name: string, entries: TocEntry[], slot: number, extra: string[] = []) => {
    const todo = entries.filter((e) => !journal.done.has(e.id));
    if (todo.length === 0) return;
    journal.recordStart(todo.map((e) => e.id), attempt);
    await restoreList(name, todo, slot, extra);
    journal.recordDone(todo.map((e) => e.id), attempt);
    heartbeat();
  };
  const restoreInBatches = async (table: TocEntry, slot: number) => {
    journal.recordStart([table.id], attempt);
    const r = await copyTableInBatches({
      install,
      dest,
      conn: split,
      dumpDir,
      workdir,
      tocSha256: dump.tocSha256,
      entry: table,
      slot,
      lanes: opts.jobs,
      batchBytes: opts.batchBytes ?? DEFAULT_BATCH_BYTES,
      signal: ctx.signal,
      onProgress: (p) => inTable.set(table.id, p),
    });
    inTable.delete(table.id);
    batchBytesKept += r.bytesKept;
    batchBytesSent += r.bytesSent;
    journal.recordDone([table.id], attempt);
    heartbeat();
  };

  // The destination's tables by name, to truncate a table whose copy was cut short.
  let targets: { schema: string; name: string }[] | undefined;
  const targetOf = async (e: TocEntry): Promise<string> => {
    targets ??= await userRelations(install, dest, { signal: ctx.signal });
    const match = targets
      .filter((t) => e.rest.startsWith(`${t.schema} ${t.name} `))
      .sort((a, b) => b.schema.length + b.name.length - (a.schema.length + a.name.length))[0];
    if (!match) throw nonRetryable('RestoreFailed', `The table of dump entry ${e.id} (TABLE DATA ${maskSecrets(e.rest)}) is not in the destination`);
    return `${quoteIdent(match.schema)}.${quoteIdent(match.name)}`;
  };

  try {
    section = 'pre-data';
    await restoreEntries('pre-data', sections.get('pre-data')!, 0, opts.clean ? ['--clean', '--if-exists'] : []);

    section = 'data';
    heartbeat();
    const pendingTables = tables.filter((t) => !journal.done.has(t.id)).sort((a, b) => sizeOf(b) - sizeOf(a));
    const threshold = opts.splitTablesLargerThan ?? DEFAULT_SPLIT_TABLES_LARGER_THAN;
    let batched = new Set(pendingTables.filter((t) => sizeOf(t) >= threshold).map((t) => t.id));
    if (batched.size > 0) {
      const made = await ensureProgressTable(install, dest, ctx.signal);
      if (!made.ok) {
        ctx.warn('the destination user may not create the progress schema: large tables are copied whole, and an interrupted one again from its start', { reason: made.reason });
        batched = new Set();
      }
    }
    await inParallel(pendingTables, opts.jobs, async (table, slot) => {
      if (batched.has(table.id)) {
        if (inFlightBefore.has(table.id)) {
          if ((await committedRanges(install, dest, dump.tocSha256, table.id, ctx.signal)).length > 0) {
            tablesResumed++;
          } else {
            // No batch committed: whatever is in the table is not ours to keep (an earlier whole copy cut short).
            await querySide(install, dest, `TRUNCATE ONLY ${await targetOf(table)}`, { signal: ctx.signal });
          }
        }
        await restoreInBatches(table, slot);
        return;
      }
      if (inFlightBefore.has(table.id)) {
        // Its copy may have committed in part of a moment before the kill, or not at all: start it empty.
        await querySide(install, dest, `TRUNCATE ONLY ${await targetOf(table)}`, { signal: ctx.signal });
        tablesRedone++;
        bytesRedone += sizeOf(table);
        ctx.warn('restoring a table again: an earlier attempt was copying it', { entry: table.id, bytes: sizeOf(table) });
      }
      await restoreEntries(`data-${table.id}`, [table], slot);
    });
    for (const other of sections.get('data')!.filter((e) => !isTableData(e))) await restoreEntries(`data-${other.id}`, [other], 0);
    // Every table's data is in and journaled: the progress rows are not needed any more.
    await dropProgressTable(install, dest, ctx.signal);

    section = 'post-data';
    heartbeat();
    const post = sections.get('post-data')!;
    await inParallel(post.filter(isIndependentPostData), opts.jobs, (e, slot) => restoreEntries(`post-${e.id}`, [e], slot));
    for (const e of post.filter((x) => !isIndependentPostData(x))) await restoreEntries(`post-${e.id}`, [e], 0);
  } finally {
    stopHeartbeat();
    journal.close();
  }

  const done = tablesDone();
  return {
    tables_total: tables.length,
    tables_done: done.length,
    bytes_total: tables.reduce((n, t) => n + sizeOf(t), 0),
    bytes_done: done.reduce((n, t) => n + sizeOf(t), 0),
    entries_total: all.length,
    entries_done: all.filter((e) => journal.done.has(e.id)).length,
    tables_kept: tables.filter((t) => doneBefore.has(t.id)).length,
    tables_redone: tablesRedone,
    bytes_redone: bytesRedone,
    tables_resumed: tablesResumed,
    batch_bytes_kept: batchBytesKept,
    batch_bytes_sent: batchBytesSent,
    attempts: attempt,
  };
}
