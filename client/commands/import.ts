import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import cliProgress from 'cli-progress';
import type { Command } from 'commander';
import { maskSecrets, UserFacingError } from '../../common/errors';
import { ImportClient, type ImportStatusView } from '../import-client';
import { startImportCallbackServer } from '../import-callback-server';
import { s3PrefixProblem } from '../../model/import-status';
import { cliConfig, openClient } from '../context';
import { printJson, printText } from '../output';
import { log } from '../../common/logger';

/**
 * A connection string (`side`: source or destination) from a file or stdin (`-`), so it stays
 * out of shell history and process listings; a literal URL on the command line is accepted but
 * discouraged.
 */
export function readConnstring(side: 'source' | 'destination', literal: string | undefined, file: string | undefined): string {
  if (literal !== undefined && file !== undefined) throw new UserFacingError(`give either --${side} or --${side}-file, not both`);
  let text: string;
  if (file !== undefined || literal === '-') {
    const from = file ?? '-';
    try {
      text = readFileSync(from === '-' ? 0 : from, 'utf8');
    } catch (err) {
      throw new UserFacingError(`cannot read the ${side} connection string from ${from === '-' ? 'stdin' : from}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
  } else if (literal !== undefined) {
    process.stderr.write(`durable-compute: note: a connection string on the command line may end up in your shell history; prefer --${side}-file FILE or --${side} - (stdin)\n`);
    text = literal;
  } else {
    throw new UserFacingError(`the ${side} is required: --${side}-file FILE, --${side} - (stdin), or --${side} URL`);
  }
  const line = text.trim();
  if (!line) throw new UserFacingError(`the ${side} connection string is empty`);
  if (line.includes('\n')) throw new UserFacingError(`the ${side} must be a single connection string (one line)`);
  return line;
}

/** The source connection string (see readConnstring). */
export function readSource(opts: { source?: string; sourceFile?: string }): string {
  return readConnstring('source', opts.source, opts.sourceFile);
}

async function withImportClient<T>(fn: (c: ImportClient) => Promise<T>): Promise<T> {
  const config = cliConfig();
  const { client, close } = await openClient(config);
  try {
    return await fn(new ImportClient(client, config.temporal.controlPlaneTaskQueue, config.imports));
  } finally {
    await close();
  }
}

function mib(bytes: number | null | undefined): string {
  return bytes === null || bytes === undefined ? '-' : `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

export function formatImportStatus(s: ImportStatusView): string {
  const p = s.progress;
  const dumpRestore = s.mode === 'dump-restore';
  const lines = [
    `import:    ${s.import_id}${dumpRestore ? ' (dump-restore)' : ''}`,
    `phase:     ${s.phase}${s.workflow_status !== 'RUNNING' ? ` (workflow ${s.workflow_status.toLowerCase()})` : ''}`,
    dumpRestore ? `into:      ${s.destination ?? '-'}` : `timeline:  ${s.tenant_id}/${s.timeline_id}`,
    `database:  ${s.database}`,
    `host:      ${s.host ?? '-'}${s.local_run > 1 ? ` (local run ${s.local_run})` : ''}`,
    `progress:  ${
      p
        ? `${mib(p.bytesDone)}${p.bytesTotal !== null ? ` of ${mib(p.bytesTotal)}` : ''}${p.filesTotal !== null ? `, ${p.filesDone ?? 0}/${p.filesTotal} files` : ''}` +
          `${p.tablesTotal !== undefined ? `, ${p.tablesDone ?? 0}/${p.tablesTotal} tables` : ''}${p.section && p.section !== 'done' ? ` (${p.section})` : ''}`
        : '-'
    }`,
  ];
  if (s.s3_prefix) lines.push(`s3 prefix: ${s.s3_prefix}`);
  if (s.running_step) lines.push(`step:      ${s.running_step.name} (attempt ${s.running_step.attempt})`);
  for (const c of s.host_changes) lines.push(`moved:     host ${c.from} lost, local steps restarted on ${c.to ?? '(waiting for a host)'}: ${c.reason}`);
  if (s.upload) lines.push(`upload:    ${s.upload.uploaded_files} files sent, ${s.upload.skipped_files} already there (of ${s.upload.files_total})`);
  if (s.restore) {
    const r = s.restore;
    lines.push(`restore:   ${r.tables_done}/${r.tables_total} tables (${mib(r.bytes_done)} of ${mib(r.bytes_total)}), ${r.entries_done}/${r.entries_total} entries`);
    if (r.tables_kept || r.tables_redone) lines.push(`resumed:   ${r.tables_kept} tables kept from an interrupted attempt, ${r.tables_redone} truncated and redone (${mib(r.bytes_redone)})`);
  }
  if (s.start_lsn) lines.push(`start LSN: ${s.start_lsn}`);
  if (s.error) lines.push(`error:     ${s.error}`);
  return `${maskSecrets(lines.join('\n'))}\n`;
}

/** A progress bar on a terminal (bytes of the running step, and tables for dump-restore), one line per phase change otherwise. */
function progressReporter(json: boolean): { update: (s: ImportStatusView) => void; stop: () => void } {
  if (json) return { update: () => {}, stop: () => {} };
  if (!process.stderr.isTTY) {
    let last = '';
    return {
      update: (s) => {
        if (s.phase !== last) process.stderr.write(`${new Date().toISOString()} ${s.phase}${s.host ? ` on ${s.host}` : ''}\n`);
        last = s.phase;
      },
      stop: () => {},
    };
  }
  // {value} and {total} are the bar's own tokens (raw numbers): the bytes go in payload fields of their own.
  const bar = new cliProgress.SingleBar(
    { format: '{phase} |{bar}| {percentage}% {doneBytes} / {totalBytes}{tables}', hideCursor: true, stream: process.stderr, clearOnComplete: false },
    cliProgress.Presets.shades_classic,
  );
  let started = false;
  return {
    update: (s) => {
      const total = s.progress?.bytesTotal ?? 0;
      const done = s.progress?.bytesDone ?? 0;
      const p = s.progress;
      const tables = p?.tablesTotal !== undefined ? `, ${p.tablesDone ?? 0}/${p.tablesTotal} tables${p.section && p.section !== 'done' ? ` (${p.section})` : ''}` : '';
      const payload = { phase: s.phase.padEnd(17), doneBytes: mib(done), totalBytes: total ? mib(total) : '?', tables };
      // Without a total (the dump only knows what it wrote so far) the bar stays empty; the bytes still show.
      const value = total ? Math.min(done, total) : 0;
      if (!started) {
        bar.start(Math.max(1, total), value, payload);
        started = true;
      } else {
        bar.setTotal(Math.max(1, total));
        bar.update(value, payload);
      }
    },
    stop: () => {
      if (started) bar.stop();
    },
  };
}

function parseJobs(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > 256) throw new UserFacingError(`--jobs must be an integer 1-256, got ${value}`);
  return n;
}

export function registerImportCommands(program: Command): void {
  const imp = program.command('import').description('fast import of a large database into a new timeline (durable: resumes where it stopped)');

  imp
    .command('start')
    .description(
      'start an import. --mode pgdata (default): dump the source into a scratch Postgres on an importer, upload its data directory and build a new timeline. ' +
        '--mode dump-restore: dump the source and restore it into a running destination database, resuming table by table',
    )
    .requiredOption('--import-id <id>', 'the import ID (its workflow is import-<id>)')
    .option('--mode <mode>', 'pgdata or dump-restore (fast_import\'s two commands)', 'pgdata')
    .option('--source <url>', "source connection string, or '-' to read it from stdin (keeps it out of shell history)")
    .option('--source-file <file>', 'file holding the source connection string')
    .option('--destination <url>', "dump-restore: destination connection string, or '-' for stdin")
    .option('--destination-file <file>', 'dump-restore: file holding the destination connection string')
    .option('--clean', 'dump-restore: drop and replace relations the destination already has under the same names (refused otherwise)')
    .option('--tenant <id>', 'pgdata: tenant ID (32 hex characters)')
    .option('--timeline <id>', 'pgdata: the new timeline ID (32 hex characters)')
    .option('--database <name>', "pgdata: target database (default: the source's, or neondb for postgres)")
    .option('--s3-prefix <prefix>', "where spec.json and status/ (and pgdata/) live in the bucket, as fast_import's --s3-prefix (default imports/<id>); the import owns and empties it")
    .option('--jobs <n>', 'parallel jobs for pg_dump and pg_restore (default: the importer host CPUs)')
    .option('--wait', 'wait for the end: exit 0 when done, non-zero with the reason when failed')
    .option('--json', 'print the status as JSON')
    .action(
      async (opts: {
        importId: string;
        mode: string;
        source?: string;
        sourceFile?: string;
        destination?: string;
        destinationFile?: string;
        clean?: boolean;
        tenant?: string;
        timeline?: string;
        database?: string;
        s3Prefix?: string;
        jobs?: string;
        wait?: boolean;
        json?: boolean;
      }) => {
        if (opts.mode !== 'pgdata' && opts.mode !== 'dump-restore') throw new UserFacingError(`--mode must be pgdata or dump-restore, got ${opts.mode}`);
        if (opts.s3Prefix !== undefined) {
          const problem = s3PrefixProblem(opts.s3Prefix);
          if (problem) throw new UserFacingError(`invalid --s3-prefix ${JSON.stringify(opts.s3Prefix)}: ${problem}`);
        }
        const jobs = parseJobs(opts.jobs);
        let start: (c: ImportClient) => Promise<unknown>;
        if (opts.mode === 'dump-restore') {
          for (const flag of ['tenant', 'timeline', 'database'] as const) if (opts[flag] !== undefined) throw new UserFacingError(`--${flag} is for --mode pgdata; dump-restore restores into the --destination database`);
          const sourceConnstring = readSource(opts);
          const destinationConnstring = readConnstring('destination', opts.destination, opts.destinationFile);
          start = (c) => c.startDumpRestore({ importId: opts.importId, sourceConnstring, destinationConnstring, jobs, clean: Boolean(opts.clean), s3Prefix: opts.s3Prefix });
        } else {
          if (opts.destination !== undefined || opts.destinationFile !== undefined || opts.clean) throw new UserFacingError('--destination, --destination-file and --clean are for --mode dump-restore');
          if (opts.tenant === undefined || opts.timeline === undefined) throw new UserFacingError('--mode pgdata needs --tenant and --timeline (the new timeline the import builds)');
          const sourceConnstring = readSource(opts);
          const { tenant, timeline } = opts;
          start = (c) => c.start({ importId: opts.importId, sourceConnstring, tenantId: tenant, timelineId: timeline, database: opts.database, jobs, s3Prefix: opts.s3Prefix });
        }
        await withImportClient(async (c) => {
          await start(c);
          let status: ImportStatusView;
          if (opts.wait) {
            const reporter = progressReporter(Boolean(opts.json));
            try {
              status = await c.wait(opts.importId, { onUpdate: reporter.update });
            } finally {
              reporter.stop();
            }
          } else {
            status = await c.status(opts.importId);
          }
          if (opts.json) printJson(status);
          else printText(formatImportStatus(status));
        });
      },
    );

  imp
    .command('status')
    .description('phase, host, bytes (and tables, for dump-restore) done and total of an import; a progress bar on a terminal')
    .requiredOption('--import-id <id>', 'the import ID')
    .option('--watch', 'keep the progress bar moving until the import ends')
    .option('--json', 'print JSON')
    .action(async (opts: { importId: string; watch?: boolean; json?: boolean }) => {
      await withImportClient(async (c) => {
        // Without a terminal and without --watch, the text below is all: no extra line on stderr.
        const reporter = progressReporter(Boolean(opts.json) || (!opts.watch && !process.stderr.isTTY));
        let status: ImportStatusView;
        try {
          status = await c.status(opts.importId);
          reporter.update(status);
          while (opts.watch && status.workflow_status === 'RUNNING') {
            await sleep(1000);
            status = await c.status(opts.importId);
            reporter.update(status);
          }
        } finally {
          reporter.stop();
        }
        if (opts.json) printJson(status);
        else printText(formatImportStatus(status));
      });
    });

  imp
    .command('callback-server')
    .description("the control plane's PUT /import_complete endpoint: turns the storage's completion callback into a signal to the import")
    .option('--listen <host:port>', 'address to listen on (point the pageserver --import-complete-url here)', '127.0.0.1:7688')
    .action(async (opts: { listen: string }) => {
      const m = /^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(opts.listen);
      if (!m || Number(m[2]) > 65535) throw new UserFacingError(`--listen must be host:port, got ${opts.listen}`);
      const config = cliConfig();
      const { client, close } = await openClient(config);
      const server = await startImportCallbackServer(client, {
        host: m[1]!,
        port: Number(m[2]),
        // The pageserver calls with the storage token; nobody else may.
        token: config.storage.authToken,
        log: (line) => log().info(line),
      });
      log().info(`import callback server ready on ${server.url}/import_complete`);
      await new Promise<void>((resolve) => {
        process.once('SIGINT', resolve);
        process.once('SIGTERM', resolve);
      });
      await server.close();
      await close();
    });

  imp
    .command('cancel')
    .description('cancel an import: its timeline is deleted and status/fast_import records the cancellation')
    .requiredOption('--import-id <id>', 'the import ID')
    .option('--json', 'print JSON')
    .action(async (opts: { importId: string; json?: boolean }) => {
      await withImportClient(async (c) => {
        const status = await c.cancel(opts.importId);
        if (opts.json) printJson(status);
        else printText(formatImportStatus(status));
      });
    });
}
