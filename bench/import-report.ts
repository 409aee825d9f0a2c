/** The fast-import benchmark's results table (bench/results/import.md). */
import { detectHostResources } from '../drivers/importer/bulk-load-settings';
import { canDropCaches } from './os-cache';
import { type Bench, jobs, type MethodResult, MiB, scale } from './import-common';
import type { PageserverPhases, WorkflowRun } from './import-workflow-run';

export function fmt(seconds: number): string {
  return seconds >= 100 ? seconds.toFixed(0) : seconds.toFixed(1);
}

export function stepSeconds(r: WorkflowRun, name: string): number {
  return r.result.steps.find((s) => s.name === name)?.seconds ?? 0;
}

export function report(
  ctx: Bench,
  setupSeconds: number,
  sourceBytes: number,
  methods: MethodResult[],
  runs: WorkflowRun[],
  reference: { seconds: number; phases?: PageserverPhases } | undefined,
): string {
  const host = detectHostResources();
  const [plain, killed] = runs;
  const lines = [
    '# Fast import benchmark',
    '',
    `Run ${new Date().toISOString()} with \`node --import tsx bench/import.ts\` (BENCH_IMPORT_SCALE=${scale}, BENCH_IMPORT_JOBS=${jobs}).`,
    '',
    `Host: ${host.cpus} CPUs, ${(host.totalMemoryBytes / 1024 ** 3).toFixed(1)} GiB. PostgreSQL ${ctx.install.version}.`,
    canDropCaches()
      ? 'Before each method (and each workflow run) every dirty page is written back and the page cache emptied, so no run pays for the writeback of another or reads what another cached.'
      : 'The page cache could not be emptied between methods (not root): later methods may pay for the writeback of earlier ones.',
    'Everything on loopback: a private dev stack (Temporal dev server, control-plane worker, s3rver, 3 dev safekeepers, dev pageserver,',
    "import_complete endpoint, and the stack's own importer, idle here), one importer worker process of the bench's (on a queue of its own),",
    'the source Postgres; same disk for all of them.',
    `Source: pgbench scale ${scale} (${(sourceBytes / MiB).toFixed(0)} MiB database, built in ${fmt(setupSeconds)} s). Targets: fresh initdb with the importer's bulk-load settings`,
    `(shared_buffers 10% and maintenance_work_mem 70% of ${(ctx.resources.totalMemoryBytes / 1024 ** 3).toFixed(0)} GiB, fsync/full_page_writes/synchronous_commit off, wal_level minimal).`,
    '',
    '## End to end',
    '',
    '| method | total (s) | steps (s) | objects | uploaded MiB | check | load average (start → end) |',
    '|---|---:|---|---:|---:|---|---|',
    ...methods.map(
      (m) =>
        `| ${m.method} | ${fmt(m.totalSeconds)} | ${m.steps.map((s) => `${s.name} ${fmt(s.seconds)}`).join('; ')} | ${m.objects} | ${(m.bytes / MiB).toFixed(0)} | ${m.note ?? ''} | ${m.load ?? '-'} |`,
    ),
    '',
  ];
  const pgdump = methods.find((m) => m.method.startsWith('pg_dump'));
  if (plain && pgdump) {
    lines.push(
      `Against (a): the workflow to the commit marker ${(plain.toMarkerSeconds / pgdump.totalSeconds).toFixed(2)}x, end to end (with the pageserver's import) ${(plain.result.totalSeconds / pgdump.totalSeconds).toFixed(2)}x.`,
      '',
    );
  }
  if (pgdump && reference) {
    const withImport = pgdump.totalSeconds + reference.seconds;
    const ps = reference.phases;
    lines.push(
      `(a) followed by the dev pageserver's import of what (a) uploaded (requested, then the commit marker written, until the timeline`,
      `is active${ps ? `: marker seen after ${fmt(ps.markerSeenAfterSeconds)} s, download ${fmt(ps.downloadSeconds)} s, first image ${fmt(ps.imageSeconds)} s` : ''}): ${fmt(pgdump.totalSeconds)} + ${fmt(reference.seconds)} = ${fmt(withImport)} s,`,
      `${(withImport / pgdump.totalSeconds).toFixed(2)}x of (a). This is (a)'s tools doing everything the workflow does end to end${plain ? `; the workflow took ${(plain.result.totalSeconds / withImport).toFixed(2)}x of it` : ''}.`,
      '',
    );
  }
  for (const r of runs) {
    const ps = r.pageserver;
    if (!ps) continue;
    const pageserverStep = stepSeconds(r, 'pageserverImport');
    lines.push(
      `Phases of "${r.result.method}": to the commit marker ${fmt(r.toMarkerSeconds)} s; the pageserver saw the marker after ${fmt(ps.markerSeenAfterSeconds)} s,`,
      `downloaded the data directory in ${fmt(ps.downloadSeconds)} s and built the first image (WAL cut, fsync; a base backup tar.gz only up to 256 MiB) in ${fmt(ps.imageSeconds)} s;`,
      `the workflow's pageserverImport step (${fmt(pageserverStep)} s) ended ${fmt(Math.max(0, pageserverStep - ps.markerSeenAfterSeconds - ps.downloadSeconds - ps.imageSeconds))} s after that (the completion callback signals it).`,
      '',
    );
  }
  if (plain) {
    lines.push(
      `The workflow's total runs from \`import start\` to an active timeline, so it includes what (a) and (b) leave out: writing spec.json,`,
      `the pageserver's import (waiting for the commit marker, validating and downloading the data directory, building the timeline's`,
      `first image and base backup) and registering the timeline on the safekeepers. Its importer part, from \`import start\` until the`,
      `commit marker was written, took ${fmt(plain.toMarkerSeconds)} s; the pageserver import ${fmt(stepSeconds(plain, 'pageserverImport'))} s. The check of the`,
      'workflow row is made through a compute started on the new timeline.',
      '',
    );
  }
  if (plain && killed) {
    const up = (r: WorkflowRun) => r.status.upload!;
    lines.push(
      '## Importer killed half way through the upload (SIGKILL) vs not killed',
      '',
      '| run | total (s) | to commit marker (s) | uploadPgdata step (s) | at kill | what the resumed upload sent |',
      '|---|---:|---:|---:|---|---|',
      `| not killed | ${fmt(plain.result.totalSeconds)} | ${fmt(plain.toMarkerSeconds)} | ${fmt(stepSeconds(plain, 'uploadPgdata'))} | - | ${up(plain).uploaded_files} files, ${(up(plain).uploaded_bytes / MiB).toFixed(0)} MiB |`,
      `| killed after ${fmt(killed.kill!.afterSeconds)} s (half the upload time of the other run into its upload), restarted at once (${fmt(killed.kill!.restartSeconds)} s) | ${fmt(killed.result.totalSeconds)} | ${fmt(killed.toMarkerSeconds)} | ${fmt(stepSeconds(killed, 'uploadPgdata'))} | ${killed.kill!.atKill} | skipped ${up(killed).skipped_files} files (${(up(killed).skipped_bytes / MiB).toFixed(0)} MiB) already uploaded intact, sent ${up(killed).uploaded_files} files (${(up(killed).uploaded_bytes / MiB).toFixed(0)} MiB${up(killed).resumed_parts ? `, of which ${up(killed).resumed_parts} parts were kept from the killed attempt's unfinished multipart uploads` : ''}${up(killed).restarted_files ? `; ${up(killed).restarted_files} half-sent file(s) sent again whole, as S3 no longer had their earlier upload` : ''}) |`,
      '',
      `Killed vs not killed: ${(killed.result.totalSeconds / plain.result.totalSeconds).toFixed(2)}x end to end, ${(killed.toMarkerSeconds / plain.toMarkerSeconds).toFixed(2)}x to the commit marker.`,
      '',
      `- The killed run's uploadPgdata step spans both attempts. The restarted worker (same host, same disk) hands the dead one's attempt`,
      `  back before it polls, so the retry does not wait for the ${10} s heartbeat timeout: the resumed attempt started ${killed.kill!.resumedAfterSeconds === undefined ? '?' : fmt(killed.kill!.resumedAfterSeconds)} s after the kill.`,
      '  Nothing before the upload ran again: its history has',
      `  ${['initScratchPostgres', 'dumpSource', 'restoreDump', 'uploadPgdata'].map((t) => `${killed.completions[t] ?? 0} completed ${t}`).join(', ')}.`,
      `- Neon's importer would start over from an empty directory: dump, restore and the whole upload again.`,
      '',
    );
  }
  lines.push(
    'Notes:',
    '- The upload is one object per file: files above 64 MiB (relation segments) in 32 MiB multipart parts, as `aws s3 sync` also',
    '  uses multipart, smaller ones in one request (those of 8 to 64 MiB hashed first, so S3 can check every body); at most 10',
    '  requests in flight. What was sent is journaled',
    '  next to the data directory (each object\'s ETag, each finished part): a resumed upload skips an object of the right size and',
    '  recorded ETag without reading the file again, keeps the finished parts of a half-sent segment, and checks any other object of',
    '  the right size by content (its sha256 metadata).',
    '- The pageserver keeps no precomputed base backup for an image above 256 MiB (it packs one per request), so its import ends',
    '  once the data directory is downloaded, checked and fsync\'d.',
    '- Timings on this shared 2-CPU machine vary by tens of percent between runs (other test suites ran at the same time).',
    '- s3rver stores every object as files on the same disk, so the upload figures measure this machine more than S3.',
    '',
  );
  return lines.join('\n');
}
