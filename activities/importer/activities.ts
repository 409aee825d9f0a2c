import path from 'node:path';
import type { S3Client } from '@aws-sdk/client-s3';
import { ApplicationFailure, CancelledFailure } from '@temporalio/common';
import type { PgInstallation } from '../../common/pg-binaries';
import { assertSafePrefix, getObjectBytes, joinKey } from '../../drivers/s3/objects';
import { decryptSourceConnstring, InvalidImportSpecError, parseImportSpec } from '../../drivers/secrets/import-spec';
import { DecryptionError, KeyUnavailableError, type KeyProviders } from '../../drivers/secrets/key-provider';
import { stepContext } from '../../common/activity-context';
import { detectHostResources, type HostResources } from '../../drivers/importer/bulk-load-settings';
import { completedDump, dumpSource, restoreDump } from '../../drivers/importer/dump-restore';
import { nonRetryable, retryable } from '../../common/failures';
import {
  destroyScratch,
  ensureDatabase,
  ensureScratchRunning,
  initScratchDataDir,
  recreateDatabase,
  scratchPaths,
  stopScratch,
} from '../../drivers/importer/scratch-postgres';
import { cleanPrefix, PGDATA_DIR, SPEC_KEY, writeFastImportStatus, writePgdataDone, type FastImportStatus } from '../../drivers/importer/status';
import { uploadDataDirectory, type UploadResult } from '../../drivers/importer/upload';

/**
 * The importer's steps as Temporal activities, for the worker that runs beside the scratch
 * Postgres. Each is idempotent and may be retried or resumed at will:
 *
 *   initScratchPostgres -> dumpSource -> restoreDump -> stopScratchPostgres -> uploadPgdata
 *   -> writePgdataStatus, and writeFastImportStatus in every outcome.
 *
 * The source connection string is decrypted inside dumpSource and never leaves it: no activity
 * input, result, heartbeat or error carries it in clear text.
 */
export interface ImporterDeps {
  s3: S3Client;
  bucket: string;
  install: PgInstallation;
  keyProviders: KeyProviders;
  /** Defaults to this machine's memory and CPUs. */
  resources?: HostResources;
  /** Upload tuning; the defaults (10 requests in flight, 32 MiB parts) keep memory below about 400 MB. */
  upload?: { concurrency?: number; partSize?: number; multipartThreshold?: number; heartbeatIntervalMs?: number };
}

export interface WorkdirInput {
  /** Absolute path of this import's working directory on the importer machine. */
  workdir: string;
}

export interface ScratchInput extends WorkdirInput {
  /** The database the source is restored into. */
  database: string;
  /** Parallel jobs for pg_restore (and sizing of maintenance_work_mem); defaults to the CPU count. */
  jobs?: number;
}

export interface DumpInput extends WorkdirInput {
  /** The import's S3 prefix (holding spec.json). */
  prefix: string;
  jobs?: number;
}

export interface UploadInput extends WorkdirInput {
  prefix: string;
}

export interface PrefixInput {
  prefix: string;
}

export function checkWorkdir(workdir: string): string {
  if (!path.isAbsolute(workdir) || path.normalize(workdir) !== workdir || workdir === '/') {
    throw nonRetryable('InvalidInput', `The work directory must be a normalized absolute path other than /, got ${JSON.stringify(workdir)}`);
  }
  if (Buffer.byteLength(path.join(scratchPaths(workdir).socketDir, '.s.PGSQL.65535')) > 107) {
    throw nonRetryable('InvalidInput', `The work directory ${workdir} is too long: the scratch Postgres's unix socket path below it must fit in 107 bytes`);
  }
  return workdir;
}

export function checkPrefix(prefix: string): string {
  try {
    return assertSafePrefix(prefix, 'import prefix');
  } catch (err) {
    throw nonRetryable('InvalidInput', (err as Error).message);
  }
}

function checkDatabase(database: string): string {
  if (database.length === 0 || Buffer.byteLength(database) > 63 || database.includes('\0')) {
    throw nonRetryable('InvalidInput', `The target database name must be 1-63 bytes without NUL, got ${JSON.stringify(database)}`);
  }
  return database;
}

/**
 * Runs a step so that whatever escapes it is safe to record: Temporal failures pass through,
 * anything else becomes a retryable failure with its message masked.
 */
export async function guarded<T>(step: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof ApplicationFailure || err instanceof CancelledFailure) throw err;
    const e = err as Error;
    if (e?.name === 'AbortError') throw err;
    throw retryable(`${step}Failed`, `${step}: ${e?.message ?? String(err)}`);
  }
}

export function createImporterActivities(deps: ImporterDeps) {
  const resources = deps.resources ?? detectHostResources();
  const jobsOf = (jobs?: number) => Math.max(1, Math.floor(jobs ?? resources.cpus));

  async function readSourceConnstring(prefix: string): Promise<string> {
    const key = joinKey(prefix, SPEC_KEY);
    const bytes = await getObjectBytes(deps.s3, deps.bucket, key, 1024 * 1024);
    if (!bytes) throw nonRetryable('ImportSpecMissing', `No import spec at s3://${deps.bucket}/${key}`);
    try {
      return await decryptSourceConnstring(parseImportSpec(bytes.toString('utf8'), `s3://${deps.bucket}/${key}`), deps.keyProviders);
    } catch (err) {
      if (err instanceof InvalidImportSpecError) throw nonRetryable('InvalidImportSpec', err.message);
      if (err instanceof DecryptionError) throw nonRetryable('DecryptionFailed', err.message);
      if (err instanceof KeyUnavailableError) throw nonRetryable('KeyUnavailable', err.message);
      throw err;
    }
  }

  return {
    /** initdb (unless done before), start with the bulk-load settings, create the target database. */
    async initScratchPostgres(input: ScratchInput): Promise<{ port: number; socketDir: string; reusedDataDir: boolean; started: boolean; createdDatabase: boolean }> {
      const workdir = checkWorkdir(input.workdir);
      const database = checkDatabase(input.database);
      return guarded('initScratchPostgres', async () => {
        const ctx = stepContext();
        const { reused } = await initScratchDataDir(deps.install, workdir);
        const conn = await ensureScratchRunning({ install: deps.install, workdir, resources, restoreJobs: jobsOf(input.jobs), signal: ctx.signal });
        const createdDatabase = await ensureDatabase(conn, database);
        return { port: conn.port, socketDir: conn.socketDir, reusedDataDir: reused, started: conn.started, createdDatabase };
      });
    },

    /** pg_dump of the source named in spec.json into `<workdir>/dumpdir`; a completed dump is kept. */
    async dumpSource(input: DumpInput): Promise<{ skipped: boolean; tocSha256: string; bytes: number; files: number }> {
      const workdir = checkWorkdir(input.workdir);
      const prefix = checkPrefix(input.prefix);
      return guarded('dumpSource', async () => {
        const done = await completedDump(workdir);
        if (done) return { skipped: true, tocSha256: done.tocSha256, bytes: done.bytes, files: done.files };
        const sourceConnstring = await readSourceConnstring(prefix);
        return dumpSource({ install: deps.install, workdir, sourceConnstring, jobs: jobsOf(input.jobs), ctx: stepContext() });
      });
    },

    /** pg_restore into a freshly recreated target database; a completed restore of the same dump is kept. */
    async restoreDump(input: ScratchInput): Promise<{ skipped: boolean; tocSha256: string }> {
      const workdir = checkWorkdir(input.workdir);
      const database = checkDatabase(input.database);
      return guarded('restoreDump', async () => {
        const ctx = stepContext();
        const jobs = jobsOf(input.jobs);
        const conn = await ensureScratchRunning({ install: deps.install, workdir, resources, restoreJobs: jobs, signal: ctx.signal });
        return restoreDump({ install: deps.install, workdir, database, jobs, conn, recreateDatabase: () => recreateDatabase(conn, database), ctx });
      });
    },

    /** Fast shutdown with a shutdown checkpoint; returns the checkpoint LSN from pg_control. */
    async stopScratchPostgres(input: WorkdirInput): Promise<{ checkpointLsn: string; state: string }> {
      const workdir = checkWorkdir(input.workdir);
      return guarded('stopScratchPostgres', () => stopScratch({ install: deps.install, workdir, resources, restoreJobs: jobsOf() }));
    },

    /** Uploads `<workdir>/pgdata` to `<prefix>/pgdata/`, skipping what an earlier attempt already uploaded intact. */
    async uploadPgdata(input: UploadInput): Promise<UploadResult> {
      const workdir = checkWorkdir(input.workdir);
      const prefix = checkPrefix(input.prefix);
      return guarded('uploadPgdata', async () => {
        // Never upload a live data directory: stopping is idempotent and cheap when already done.
        await stopScratch({ install: deps.install, workdir, resources, restoreJobs: jobsOf() });
        return uploadDataDirectory({
          s3: deps.s3,
          bucket: deps.bucket,
          dataDir: scratchPaths(workdir).pgdata,
          keyPrefix: joinKey(prefix, PGDATA_DIR),
          ctx: stepContext(),
          journalFile: path.join(workdir, 'upload-journal.jsonl'),
          ...deps.upload,
        });
      });
    },

    /** The commit marker `status/pgdata` = {"done":true}; call only after uploadPgdata succeeded. */
    async writePgdataStatus(input: PrefixInput): Promise<void> {
      const prefix = checkPrefix(input.prefix);
      await guarded('writePgdataStatus', () => writePgdataDone(deps.s3, deps.bucket, prefix));
    },

    /** `status/fast_import`, written in every outcome; `error` (masked here) marks a failure. */
    async writeFastImportStatus(input: PrefixInput & { error?: string }): Promise<FastImportStatus> {
      const prefix = checkPrefix(input.prefix);
      return guarded('writeFastImportStatus', () => writeFastImportStatus(deps.s3, deps.bucket, prefix, input.error));
    },

    /** Deletes every object under the prefix (optionally keeping spec.json) before a fresh attempt. */
    async cleanImportPrefix(input: PrefixInput & { keepSpec?: boolean }): Promise<{ deleted: number }> {
      const prefix = checkPrefix(input.prefix);
      return guarded('cleanImportPrefix', () => cleanPrefix(deps.s3, deps.bucket, prefix, { keepSpec: input.keepSpec }));
    },

    /** Stops the scratch server if it runs and removes the working directory. */
    async destroyWorkdir(input: WorkdirInput): Promise<void> {
      const workdir = checkWorkdir(input.workdir);
      await guarded('destroyWorkdir', () => destroyScratch(deps.install, workdir));
    },
  };
}

export type ImporterActivities = ReturnType<typeof createImporterActivities>;
