/**
 * Fast-import benchmark: a pgbench database copied into a throwaway Postgres and its data
 * directory uploaded to S3, three ways, plus the cost of an upload killed half way.
 *
 *   node --import tsx bench/import.ts
 *
 *   (a) pg_dump -Fd -j2 + pg_restore -j2 + `aws s3 sync`, by hand
 *   (b) pgcopydb clone (2 table jobs, 2 index jobs) + `aws s3 sync`
 *   (c) our importer activities end to end (init, dump, restore, stop, upload, status)
 *   (d) our upload SIGKILLed half way and resumed, against the uninterrupted upload of (c);
 *       and `aws s3 sync` killed half way and rerun, for comparison
 *
 * All three restore into the same kind of target: a fresh initdb started with the importer's
 * bulk-load settings, so the comparison is of the copy and upload tools, not of the tuning.
 * S3 is a private s3rver on loopback (run with --openssl-legacy-provider, which its ListObjectsV2
 * pagination needs on Node 20 and which `aws s3 sync` uses).
 *
 * BENCH_IMPORT_SCALE  pgbench scale factor (default 100, about 1.5 GB)
 * BENCH_IMPORT_JOBS   parallel jobs for every tool (default 2)
 * BENCH_IMPORT_OUT    results file (default bench/results/import.md)
 * BENCH_IMPORT_SKIP   comma-separated parts to leave out: pgdump,pgcopydb,resume (ours always runs)
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import pg from 'pg';
import { projectRoot, tsNodeArgs } from '../common/paths';
import { findPostgres, pgBin, type PgInstallation } from '../common/pg-binaries';
import { pgSpawnIdentity } from '../common/pg-identity';
import { createImporterActivities } from '../activities/importer/activities';
import type { StepContext } from '../activities/importer/activity-context';
import { detectHostResources, type HostResources } from '../activities/importer/bulk-load-settings';
import { COMMON_DUMP_RESTORE_OPTIONS } from '../activities/importer/dump-restore';
import { ensureDatabase, ensureScratchRunning, initScratchDataDir, scratchPaths, stopScratch, withScratchClient } from '../activities/importer/scratch-postgres';
import { uploadDataDirectory, type UploadProgress } from '../activities/importer/upload';
import { createS3Client } from '../activities/s3/client';
import { listObjects } from '../activities/s3/objects';
import { buildImportSpec } from '../activities/secrets/import-spec';
import { createLocalKeyProvider, generateLocalKey, parseLocalKey } from '../activities/secrets/local-aes';
import { canConnect, freePort } from '../dev/processes';
import { startThrowawayPostgres, type ThrowawayPostgres } from '../test/helpers/postgres';

const run = promisify(execFile);
const BUCKET = 'bench';
const DATABASE = 'bench';
const MiB = 1024 * 1024;

const scale = Number(process.env.BENCH_IMPORT_SCALE ?? 100);
const jobs = Number(process.env.BENCH_IMPORT_JOBS ?? 2);
const outFile = process.env.BENCH_IMPORT_OUT ?? path.join(projectRoot, 'bench', 'results', 'import.md');
const skip = new Set((process.env.BENCH_IMPORT_SKIP ?? '').split(',').filter(Boolean));

interface Step {
  name: string;
  seconds: number;
}

interface MethodResult {
  method: string;
  steps: Step[];
  totalSeconds: number;
  objects: number;
  bytes: number;
  note?: string;
}

function log(line: string): void {
  console.log(`[bench ${new Date().toISOString().slice(11, 19)}] ${line}`);
}

async function timed<T>(steps: Step[], name: string, fn: () => Promise<T>): Promise<T> {
  const start = performance.now();
  log(`${name}...`);
  const result = await fn();
  const seconds = (performance.now() - start) / 1000;
  steps.push({ name, seconds });
  log(`${name}: ${seconds.toFixed(1)} s`);
  return result;
}

/** Runs a command with an argument array; output is kept for the error message only. */
async function exec(command: string, args: string[], env: Record<string, string> = {}): Promise<string> {
  try {
    const { stdout } = await run(command, args, { env: { ...process.env, ...env }, maxBuffer: 256 * MiB });
    return stdout;
  } catch (err) {
    const e = err as { stderr?: string; stdout?: string; message: string };
    throw new Error(`${command} ${args.join(' ')} failed: ${e.message}\n${(e.stderr ?? '').slice(-4000)}`);
  }
}

async function startS3(root: string): Promise<{ endpoint: string; child: ChildProcess }> {
  const port = await freePort();
  const child = spawn(
    process.execPath,
    ['--openssl-legacy-provider', ...tsNodeArgs(), path.join(projectRoot, 'dev', 's3-server-main.ts'), '--port', String(port), '--dir', path.join(root, 's3'), '--bucket', BUCKET],
    { stdio: 'ignore' },
  );
  const deadline = Date.now() + 60_000;
  while (!(await canConnect('127.0.0.1', port))) {
    if (Date.now() > deadline || child.exitCode !== null) throw new Error('s3rver did not start');
    await sleep(200);
  }
  return { endpoint: `http://127.0.0.1:${port}`, child };
}

function awsEnv(): Record<string, string> {
  return {
    AWS_ACCESS_KEY_ID: 'S3RVER',
    AWS_SECRET_ACCESS_KEY: 'S3RVER',
    AWS_DEFAULT_REGION: 'us-east-1',
    // s3rver does not understand the newer default checksums.
    AWS_REQUEST_CHECKSUM_CALCULATION: 'WHEN_REQUIRED',
    AWS_RESPONSE_CHECKSUM_VALIDATION: 'WHEN_REQUIRED',
  };
}

function awsSyncArgs(pgdata: string, prefix: string, endpoint: string): string[] {
  return ['s3', 'sync', pgdata, `s3://${BUCKET}/${prefix}/pgdata`, '--endpoint-url', endpoint, '--no-progress', '--only-show-errors'];
}

async function prefixSize(s3: S3Client, prefix: string): Promise<{ objects: number; bytes: number }> {
  let objects = 0;
  let bytes = 0;
  for await (const o of listObjects(s3, BUCKET, `${prefix}/pgdata/`)) {
    objects++;
    bytes += o.size;
  }
  return { objects, bytes };
}

/** Rows and a cheap checksum of the pgbench tables, to check every copy is complete. */
async function pgbenchFingerprint(client: pg.Client): Promise<string> {
  const { rows } = await client.query<{ f: string }>(`
    SELECT (SELECT count(*) FROM pgbench_accounts) || '/' || (SELECT sum(abalance) + sum(aid) FROM pgbench_accounts)
      || '/' || (SELECT count(*) FROM pgbench_branches) || '/' || (SELECT count(*) FROM pgbench_tellers)
      || '/' || (SELECT count(*) FROM pg_indexes WHERE tablename LIKE 'pgbench_%') AS f`);
  return rows[0]!.f;
}

async function freshTarget(install: PgInstallation, workdir: string, resources: HostResources) {
  await initScratchDataDir(install, workdir);
  const conn = await ensureScratchRunning({ install, workdir, resources, restoreJobs: jobs });
  await ensureDatabase(conn, DATABASE);
  const url = `postgresql://${conn.user}@/${DATABASE}?host=${encodeURIComponent(conn.socketDir)}&port=${conn.port}`;
  return { conn, url };
}

async function methodPgDump(ctx: Bench): Promise<MethodResult> {
  const steps: Step[] = [];
  const workdir = path.join(ctx.root, 'a');
  const { conn, url } = await timed(steps, 'init target', () => freshTarget(ctx.install, workdir, ctx.resources));
  const dumpDir = path.join(workdir, 'dumpdir');
  await timed(steps, 'pg_dump -Fd', () =>
    exec(pgBin(ctx.install, 'pg_dump'), ['--format=directory', `--jobs=${jobs}`, ...COMMON_DUMP_RESTORE_OPTIONS, '--no-sync', '--file', dumpDir, '--dbname', ctx.source.url(DATABASE)]),
  );
  await timed(steps, 'pg_restore', () => exec(pgBin(ctx.install, 'pg_restore'), [`--jobs=${jobs}`, ...COMMON_DUMP_RESTORE_OPTIONS, '--dbname', url, dumpDir]));
  const fp = await withScratchClient(conn, DATABASE, pgbenchFingerprint);
  await timed(steps, 'stop', () => stopScratch({ install: ctx.install, workdir, resources: ctx.resources, restoreJobs: jobs }));
  await timed(steps, 'aws s3 sync', () => exec('aws', awsSyncArgs(scratchPaths(workdir).pgdata, 'a', ctx.endpoint), awsEnv()));
  const size = await prefixSize(ctx.s3, 'a');
  return finish('pg_dump + pg_restore + aws s3 sync', steps, size, fp, ctx);
}

async function methodPgcopydb(ctx: Bench): Promise<MethodResult> {
  const steps: Step[] = [];
  const workdir = path.join(ctx.root, 'b');
  const { conn, url } = await timed(steps, 'init target', () => freshTarget(ctx.install, workdir, ctx.resources));
  await timed(steps, 'pgcopydb clone', () =>
    exec('pgcopydb', [
      'clone',
      '--source', ctx.source.url(DATABASE),
      '--target', url,
      '--dir', path.join(workdir, 'pgcopydb'),
      '--table-jobs', String(jobs),
      '--index-jobs', String(jobs),
      '--no-owner',
      '--no-acl',
      '--skip-extensions',
    ]),
  );
  const fp = await withScratchClient(conn, DATABASE, pgbenchFingerprint);
  await timed(steps, 'stop', () => stopScratch({ install: ctx.install, workdir, resources: ctx.resources, restoreJobs: jobs }));
  await timed(steps, 'aws s3 sync', () => exec('aws', awsSyncArgs(scratchPaths(workdir).pgdata, 'b', ctx.endpoint), awsEnv()));
  const size = await prefixSize(ctx.s3, 'b');
  return finish('pgcopydb clone + aws s3 sync', steps, size, fp, ctx);
}

async function methodOurs(ctx: Bench): Promise<MethodResult & { uploadSeconds: number }> {
  const steps: Step[] = [];
  const workdir = path.join(ctx.root, 'c');
  const prefix = 'c';
  const keyProviders = { Local: createLocalKeyProvider({ bench: parseLocalKey(generateLocalKey()) }) };
  const spec = await buildImportSpec({ providers: keyProviders, kind: 'Local', keyId: 'bench', sourceConnstring: ctx.source.url(DATABASE) });
  await ctx.s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: `${prefix}/spec.json`, Body: JSON.stringify(spec) }));
  const a = createImporterActivities({ s3: ctx.s3, bucket: BUCKET, install: ctx.install, keyProviders, resources: ctx.resources });
  const init = await timed(steps, 'initScratchPostgres', () => a.initScratchPostgres({ workdir, database: DATABASE, jobs }));
  await timed(steps, 'dumpSource', () => a.dumpSource({ workdir, prefix, jobs }));
  await timed(steps, 'restoreDump', () => a.restoreDump({ workdir, database: DATABASE, jobs }));
  const fp = await withScratchClient({ socketDir: init.socketDir, port: init.port, user: 'cloud_admin' }, DATABASE, pgbenchFingerprint);
  await timed(steps, 'stopScratchPostgres', () => a.stopScratchPostgres({ workdir }));
  await timed(steps, 'uploadPgdata', () => a.uploadPgdata({ workdir, prefix }));
  await timed(steps, 'status objects', async () => {
    await a.writePgdataStatus({ prefix });
    await a.writeFastImportStatus({ prefix });
  });
  const size = await prefixSize(ctx.s3, prefix);
  const uploadSeconds = steps.find((s) => s.name === 'uploadPgdata')!.seconds;
  return { ...finish('our activities (dump, restore, upload)', steps, size, fp, ctx), uploadSeconds };
}

function finish(method: string, steps: Step[], size: { objects: number; bytes: number }, fingerprint: string, ctx: Bench): MethodResult {
  const ok = fingerprint === ctx.sourceFingerprint;
  if (!ok) log(`WARNING: ${method} copied ${fingerprint}, source has ${ctx.sourceFingerprint}`);
  return { method, steps, totalSeconds: steps.reduce((n, s) => n + s.seconds, 0), ...size, note: ok ? 'rows and checksum match' : `MISMATCH: ${fingerprint}` };
}

/** Child mode: our upload, printing each progress heartbeat as a JSON line, until killed. */
async function uploadChild(): Promise<void> {
  const [dataDir, keyPrefix, endpoint] = process.argv.slice(3);
  const s3 = createS3Client({ endpoint, region: 'us-east-1', bucket: BUCKET, forcePathStyle: true, credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } });
  const ctx: StepContext = { heartbeat: (d) => console.log(JSON.stringify(d)), signal: new AbortController().signal, previousDetails: undefined, attempt: 1 };
  await uploadDataDirectory({ s3, bucket: BUCKET, dataDir: dataDir!, keyPrefix: keyPrefix!, ctx });
  console.log(JSON.stringify({ finished: true }));
}

interface ResumeResult {
  tool: string;
  uninterruptedSeconds: number;
  killedAfterSeconds: number;
  resumeSeconds: number;
  atKill: string;
  resentNote: string;
}

/** Our upload in a child process, SIGKILLed after half the uninterrupted time, then resumed from its last heartbeat. */
async function resumeOurs(ctx: Bench, uninterruptedSeconds: number): Promise<ResumeResult> {
  const dataDir = scratchPaths(path.join(ctx.root, 'c')).pgdata;
  const keyPrefix = 'd-ours/pgdata';
  const start = performance.now();
  const child = spawn(process.execPath, [...tsNodeArgs(), fileURLToPath(import.meta.url), '--upload-child', dataDir, keyPrefix, ctx.endpoint], { stdio: ['ignore', 'pipe', 'inherit'] });
  let last: UploadProgress | undefined;
  let finished = false;
  let buffered = '';
  child.stdout!.on('data', (d: Buffer) => {
    buffered += d.toString();
    const lines = buffered.split('\n');
    buffered = lines.pop() ?? '';
    for (const line of lines) {
      const msg = JSON.parse(line) as UploadProgress & { finished?: boolean };
      if (msg.finished) finished = true;
      else last = msg;
    }
  });
  const exited = new Promise((resolve) => child.once('exit', resolve));
  await Promise.race([sleep((uninterruptedSeconds * 1000) / 2), exited]);
  if (finished || child.exitCode !== null) throw new Error('our upload finished before it could be killed');
  child.kill('SIGKILL');
  await exited;
  const killedAfterSeconds = (performance.now() - start) / 1000;
  log(`our upload SIGKILLed after ${killedAfterSeconds.toFixed(1)} s at ${last?.filesDone}/${last?.filesTotal} files, ${((last?.bytesDone ?? 0) / MiB).toFixed(0)} MiB`);
  const resumeStart = performance.now();
  const resumed = await uploadDataDirectory({
    s3: ctx.s3,
    bucket: BUCKET,
    dataDir,
    keyPrefix,
    ctx: { heartbeat: () => {}, signal: new AbortController().signal, previousDetails: last, attempt: 2 },
  });
  const resumeSeconds = (performance.now() - resumeStart) / 1000;
  log(`our upload resumed in ${resumeSeconds.toFixed(1)} s: ${resumed.uploadedFiles} files sent (${resumed.resumedParts} parts reused), ${resumed.skippedFiles} skipped`);
  return {
    tool: 'our uploadPgdata',
    uninterruptedSeconds,
    killedAfterSeconds,
    resumeSeconds,
    atKill: `${last?.filesDone}/${last?.filesTotal} files, ${((last?.bytesDone ?? 0) / MiB).toFixed(0)}/${((last?.bytesTotal ?? 0) / MiB).toFixed(0)} MiB`,
    resentNote: `resume skipped ${resumed.skippedFiles} files after checking size + sha256, continued ${last?.inFlight.length ?? 0} multipart uploads (${resumed.resumedParts} parts reused), sent ${resumed.uploadedFiles} files`,
  };
}

/** `aws s3 sync` SIGKILLed after half its uninterrupted time, then run again. */
async function resumeAws(ctx: Bench): Promise<ResumeResult> {
  const dataDir = scratchPaths(path.join(ctx.root, 'c')).pgdata;
  const uninterruptedStart = performance.now();
  await exec('aws', awsSyncArgs(dataDir, 'd-aws-full', ctx.endpoint), awsEnv());
  const uninterruptedSeconds = (performance.now() - uninterruptedStart) / 1000;
  const total = await prefixSize(ctx.s3, 'd-aws-full');

  const start = performance.now();
  const child = spawn('aws', awsSyncArgs(dataDir, 'd-aws', ctx.endpoint), { env: { ...process.env, ...awsEnv() }, stdio: ['ignore', 'ignore', 'inherit'] });
  const exited = new Promise((resolve) => child.once('exit', resolve));
  await Promise.race([sleep((uninterruptedSeconds * 1000) / 2), exited]);
  if (child.exitCode !== null) throw new Error('aws s3 sync finished before it could be killed');
  child.kill('SIGKILL');
  await exited;
  const killedAfterSeconds = (performance.now() - start) / 1000;
  const atKill = await prefixSize(ctx.s3, 'd-aws');
  const resumeStart = performance.now();
  const out = await exec('aws', ['s3', 'sync', dataDir, `s3://${BUCKET}/d-aws/pgdata`, '--endpoint-url', ctx.endpoint, '--no-progress'], awsEnv());
  const resumeSeconds = (performance.now() - resumeStart) / 1000;
  const resent = out.split('\n').filter((l) => l.startsWith('upload:')).length;
  log(`aws s3 sync rerun in ${resumeSeconds.toFixed(1)} s, ${resent} files sent`);
  return {
    tool: 'aws s3 sync',
    uninterruptedSeconds,
    killedAfterSeconds,
    resumeSeconds,
    atKill: `${atKill.objects}/${total.objects} files, ${(atKill.bytes / MiB).toFixed(0)}/${(total.bytes / MiB).toFixed(0)} MiB in the bucket`,
    resentNote: `rerun sent ${resent} files whole (a half-sent multipart file starts over), skipping those with the same size and an older-or-equal mtime (no content check)`,
  };
}

interface Bench {
  root: string;
  install: PgInstallation;
  resources: HostResources;
  source: ThrowawayPostgres;
  sourceFingerprint: string;
  s3: S3Client;
  endpoint: string;
}

function fmt(seconds: number): string {
  return seconds >= 100 ? seconds.toFixed(0) : seconds.toFixed(1);
}

function report(ctx: Bench, setupSeconds: number, sourceBytes: number, methods: MethodResult[], resumes: ResumeResult[]): string {
  const host = detectHostResources();
  const lines = [
    '# Fast import benchmark',
    '',
    `Run ${new Date().toISOString()} with \`node --import tsx bench/import.ts\` (BENCH_IMPORT_SCALE=${scale}, BENCH_IMPORT_JOBS=${jobs}).`,
    '',
    `Host: ${host.cpus} CPUs, ${(host.totalMemoryBytes / 1024 ** 3).toFixed(1)} GiB (shared with other work while this ran). PostgreSQL ${ctx.install.version}; s3rver on loopback, same disk.`,
    `Source: pgbench scale ${scale} (${(sourceBytes / MiB).toFixed(0)} MiB database, built in ${fmt(setupSeconds)} s). Targets: fresh initdb with the importer's bulk-load settings `,
    `(shared_buffers 10% and maintenance_work_mem 70% of ${(ctx.resources.totalMemoryBytes / 1024 ** 3).toFixed(0)} GiB, fsync/full_page_writes/synchronous_commit off, wal_level minimal).`,
    '',
    '## End to end',
    '',
    '| method | total (s) | steps (s) | objects | uploaded MiB | check |',
    '|---|---:|---|---:|---:|---|',
    ...methods.map(
      (m) => `| ${m.method} | ${fmt(m.totalSeconds)} | ${m.steps.map((s) => `${s.name} ${fmt(s.seconds)}`).join('; ')} | ${m.objects} | ${(m.bytes / MiB).toFixed(0)} | ${m.note ?? ''} |`,
    ),
    '',
    '## Upload killed half way (SIGKILL) and resumed',
    '',
    '| tool | uninterrupted (s) | killed after (s) | resume (s) | killed + resume (s) | at kill | what the resume sent |',
    '|---|---:|---:|---:|---:|---|---|',
    ...resumes.map(
      (r) =>
        `| ${r.tool} | ${fmt(r.uninterruptedSeconds)} | ${fmt(r.killedAfterSeconds)} | ${fmt(r.resumeSeconds)} | ${fmt(r.killedAfterSeconds + r.resumeSeconds)} | ${r.atKill} | ${r.resentNote} |`,
    ),
    '',
    'Notes:',
    '- Our upload is one object per file (files of 8 MiB and more as multipart uploads of 8 MiB parts), at most 10 requests in',
    '  flight; each object carries the sha256 of its content in its metadata, which is what a resumed upload checks before',
    '  skipping a file, and unfinished multipart uploads are continued from the part list in the last heartbeat.',
    '- The kills happen after half of the tool\'s own uninterrupted upload time.',
    '- Timings on this shared 2-CPU machine vary by tens of percent between runs (other test suites ran at the same time).',
    "- `aws s3 sync` decides by size and modification time only; it cannot tell a stale object of an earlier data directory from",
    '  the current one when both happen to match.',
    '- s3rver stores every object as files on the same disk, so the upload figures measure this machine more than S3.',
    '',
  ];
  return lines.join('\n');
}

async function main(): Promise<void> {
  const install = findPostgres({ pgBinDir: process.env.PG_BIN_DIR });
  const detected = detectHostResources();
  // A shared machine: size the targets for at most 8 GiB whatever the host has.
  const resources: HostResources = { cpus: detected.cpus, totalMemoryBytes: Math.min(detected.totalMemoryBytes, 8 * 1024 ** 3) };
  const root = mkdtempSync(path.join(os.tmpdir(), 'dc-bench-import-'));
  const { chownForPostgres } = await import('../common/pg-identity');
  chownForPostgres(root, false);
  const s3server = await startS3(root);
  const s3 = createS3Client({ endpoint: s3server.endpoint, region: 'us-east-1', bucket: BUCKET, forcePathStyle: true, credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } });
  let source: ThrowawayPostgres | undefined;
  try {
    source = await startThrowawayPostgres({ shared_buffers: "'512MB'", max_wal_size: "'4GB'", checkpoint_timeout: "'30min'" });
    await source.query(`CREATE DATABASE ${DATABASE}`);
    const setupStart = performance.now();
    log(`pgbench -i -s ${scale}...`);
    await exec(pgBin(install, 'pgbench'), ['-i', '-q', '-s', String(scale), '-h', '127.0.0.1', '-p', String(source.port), '-U', 'postgres', DATABASE]);
    const setupSeconds = (performance.now() - setupStart) / 1000;
    const client = new pg.Client({ connectionString: source.url(DATABASE) });
    await client.connect();
    const sourceFingerprint = await pgbenchFingerprint(client);
    const sourceBytes = Number((await client.query<{ n: string }>('SELECT pg_database_size(current_database()) AS n')).rows[0]!.n);
    await client.end();
    log(`source ready: ${(sourceBytes / MiB).toFixed(0)} MiB, fingerprint ${sourceFingerprint}`);
    const ctx: Bench = { root, install, resources, source, sourceFingerprint, s3, endpoint: s3server.endpoint };

    const methods: MethodResult[] = [];
    const resumes: ResumeResult[] = [];
    const cleanup = async (dir: string) => {
      await stopScratch({ install, workdir: path.join(root, dir), resources, restoreJobs: jobs }).catch(() => undefined);
      rmSync(path.join(root, dir, 'dumpdir'), { recursive: true, force: true });
      rmSync(path.join(root, dir, 'pgcopydb'), { recursive: true, force: true });
    };
    if (!skip.has('pgdump')) {
      methods.push(await methodPgDump(ctx));
      await cleanup('a');
    }
    if (!skip.has('pgcopydb')) {
      methods.push(await methodPgcopydb(ctx));
      await cleanup('b');
    }
    const ours = await methodOurs(ctx);
    methods.push(ours);
    if (!skip.has('resume')) {
      resumes.push(await resumeOurs(ctx, ours.uploadSeconds));
      resumes.push(await resumeAws(ctx));
    }
    mkdirSync(path.dirname(outFile), { recursive: true });
    writeFileSync(outFile, report(ctx, setupSeconds, sourceBytes, methods, resumes));
    log(`results written to ${outFile}`);
  } finally {
    for (const dir of ['a', 'b', 'c']) {
      const pgdata = scratchPaths(path.join(root, dir)).pgdata;
      await run(pgBin(install, 'pg_ctl'), ['stop', '-D', pgdata, '-m', 'immediate', '-w'], pgSpawnIdentity()).catch(() => undefined);
    }
    await source?.stop();
    s3.destroy();
    s3server.child.kill('SIGTERM');
    await new Promise((resolve) => (s3server.child.exitCode !== null ? resolve(undefined) : s3server.child.once('exit', resolve)));
    rmSync(root, { recursive: true, force: true });
  }
}

if (process.argv[2] === '--upload-child') {
  await uploadChild();
} else {
  await main();
}
