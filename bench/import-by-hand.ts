/** The fast-import benchmark's hand-run pipelines, (a) pg_dump + pg_restore and (b) pgcopydb, each followed by `aws s3 sync`. */
import path from 'node:path';
import { pgBin, type PgInstallation } from '../common/pg-binaries';
import type { HostResources } from '../drivers/importer/bulk-load-settings';
import { COMMON_DUMP_RESTORE_OPTIONS } from '../drivers/importer/dump-restore';
import { ensureDatabase, ensureScratchRunning, initScratchDataDir, scratchPaths, stopScratch, withScratchClient } from '../drivers/importer/scratch-postgres';
import { devS3Credentials } from '../dev/stack';
import { type Bench, DATABASE, exec, finish, jobs, type MethodResult, pgbenchFingerprint, prefixSize, type Step, timed } from './import-common';

export function awsEnv(): Record<string, string> {
  const creds = devS3Credentials();
  return {
    AWS_ACCESS_KEY_ID: creds.accessKeyId,
    AWS_SECRET_ACCESS_KEY: creds.secretAccessKey,
    AWS_DEFAULT_REGION: 'us-east-1',
    // s3rver does not understand the newer default checksums.
    AWS_REQUEST_CHECKSUM_CALCULATION: 'WHEN_REQUIRED',
    AWS_RESPONSE_CHECKSUM_VALIDATION: 'WHEN_REQUIRED',
  };
}

export function awsSync(ctx: Bench, pgdata: string, prefix: string): Promise<string> {
  return exec('aws', ['s3', 'sync', pgdata, `s3://${ctx.bucket}/${prefix}/pgdata`, '--endpoint-url', ctx.endpoints.s3.endpoint, '--no-progress', '--only-show-errors'], awsEnv());
}

export async function freshTarget(install: PgInstallation, workdir: string, resources: HostResources) {
  await initScratchDataDir(install, workdir);
  const conn = await ensureScratchRunning({ install, workdir, resources, restoreJobs: jobs });
  await ensureDatabase(conn, DATABASE);
  const url = `postgresql://${conn.user}@/${DATABASE}?host=${encodeURIComponent(conn.socketDir)}&port=${conn.port}`;
  return { conn, url };
}

export async function methodPgDump(ctx: Bench): Promise<MethodResult> {
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
  await timed(steps, 'aws s3 sync', () => awsSync(ctx, scratchPaths(workdir).pgdata, 'bench/a'));
  return finish('pg_dump + pg_restore + aws s3 sync', steps, await prefixSize(ctx, 'bench/a'), fp, ctx);
}

export async function methodPgcopydb(ctx: Bench): Promise<MethodResult> {
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
  await timed(steps, 'aws s3 sync', () => awsSync(ctx, scratchPaths(workdir).pgdata, 'bench/b'));
  return finish('pgcopydb clone + aws s3 sync', steps, await prefixSize(ctx, 'bench/b'), fp, ctx);
}
