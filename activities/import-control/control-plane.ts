import { PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { beatingWhileRunning } from '../../common/activity-context';
import { maskSecrets } from '../../common/errors';
import { PageserverHttpError, type PageserverClient, type TimelineInfo } from '../../drivers/pageserver';
import { cleanPrefix, FAST_IMPORT_STATUS_KEY, PGDATA_STATUS_KEY, readJsonStatus, SPEC_KEY, writeFastImportStatus } from '../../drivers/importer/status';
import { assertSafePrefix, deletePrefix, joinKey } from '../../drivers/s3/objects';
import { createSafekeeperTimeline } from '../../drivers/safekeepers/timeline-create';
import { importSpecSchema } from '../../drivers/secrets/import-spec';
import { nonRetryable } from '../../common/failures';

/**
 * The control plane's side of a fast import: everything that needs S3 or the storage services
 * but none of the importer host's files. Every activity is idempotent; permanent errors are
 * non-retryable with a type the workflow acts on.
 */
export interface ImportControlDeps {
  s3: S3Client;
  bucket: string;
  /** Region named in the pageserver's import location. */
  region: string;
  /** Undefined when no pageserver is configured; the activities then fail with a clear error. */
  pageserver?: PageserverClient;
  safekeepersHttp: string[];
  storageToken?: string;
}

export type PageserverImportState =
  | { state: 'running' }
  | { state: 'done'; lastRecordLsn: string; pgVersion: number }
  | { state: 'failed'; error: string }
  | { state: 'missing' };

/** Failure types the workflow distinguishes. */
export const IMPORT_CONTROL_FAILURES = {
  /** The timeline exists with other parameters (another import, or no import): never ours to delete. */
  timelineConflict: 'TimelineConflict',
  /** The pageserver refused the request itself (bad bucket, bad body): retrying cannot help. */
  pageserverRejected: 'PageserverRejected',
  noPageserver: 'NoPageserverConfigured',
  invalidSpec: 'InvalidImportSpec',
  invalidInput: 'InvalidInput',
} as const;

function prefixOf(prefix: string): string {
  try {
    return assertSafePrefix(prefix, 'import prefix');
  } catch (err) {
    throw nonRetryable(IMPORT_CONTROL_FAILURES.invalidInput, (err as Error).message);
  }
}

/**
 * Whose the timeline is, by the pageserver's own record of the import that created it: `ours`
 * only when that record carries this import's idempotency key. A timeline without such a record
 * (bootstrapped, branched, another import, or a pageserver that does not say) is never ours.
 */
export function timelineOwnership(info: TimelineInfo, idempotencyKey: string): 'ours' | 'not-ours' {
  return info.import_pgdata?.idempotency_key === idempotencyKey ? 'ours' : 'not-ours';
}

/** A broken timeline's reason, or undefined for any other state. */
function brokenReason(info: TimelineInfo): string | undefined {
  const state = info.state;
  if (state && typeof state === 'object' && 'Broken' in state) return state.Broken.reason ?? 'broken without a reason';
  return undefined;
}

export function createImportControlActivities(deps: ImportControlDeps) {
  const pageserver = (): PageserverClient => {
    if (!deps.pageserver) {
      throw nonRetryable(IMPORT_CONTROL_FAILURES.noPageserver, 'No pageserver is configured (PAGESERVER_HTTP_URL, or a running dev stack)');
    }
    return deps.pageserver;
  };

  // Each call heartbeats while it runs, so a control-plane worker killed mid-call is noticed within
  // the heartbeat timeout (workflows/import/activity-proxies.ts), not the 2-minute start-to-close.
  return beatingWhileRunning({
    /**
     * Empties the import's prefix (objects of any earlier run of this import ID) and writes
     * spec.json. The spec holds the connection strings only as ciphertext; it is checked so a
     * plaintext one is never written by mistake.
     */
    async prepareImportPrefix(input: { prefix: string; spec: unknown }): Promise<{ deleted: number }> {
      const prefix = prefixOf(input.prefix);
      const parsed = importSpecSchema.safeParse(input.spec);
      if (!parsed.success) {
        throw nonRetryable(IMPORT_CONTROL_FAILURES.invalidSpec, `The import spec is invalid: ${parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ')}`);
      }
      const { deleted } = await deletePrefix(deps.s3, deps.bucket, prefix);
      await deps.s3.send(
        new PutObjectCommand({ Bucket: deps.bucket, Key: joinKey(prefix, SPEC_KEY), Body: JSON.stringify(parsed.data), ContentType: 'application/json' }),
      );
      return { deleted };
    },

    /** Removes pgdata/ and status/ (keeps spec.json): before another host uploads its own data directory. */
    async cleanImportData(input: { prefix: string }): Promise<{ deleted: number }> {
      return cleanPrefix(deps.s3, deps.bucket, prefixOf(input.prefix), { keepSpec: true });
    },

    /**
     * POST timeline with import_pgdata. 201: accepted; 409: the timeline exists otherwise, which
     * is a permanent conflict; 429: this import already runs (a repeated start), but only if the
     * pageserver's record says so: a 429 from anything else (throttling, a proxy) must not make
     * another timeline look like this import's.
     */
    async startPageserverImport(input: { tenantId: string; timelineId: string; prefix: string; idempotencyKey: string }): Promise<{ httpStatus: number; alreadyRunning: boolean }> {
      const prefix = prefixOf(input.prefix);
      try {
        const { status } = await pageserver().createTimeline(input.tenantId, {
          new_timeline_id: input.timelineId,
          import_pgdata: { idempotency_key: input.idempotencyKey, location: { AwsS3: { region: deps.region, bucket: deps.bucket, key: prefix } } },
        });
        return { httpStatus: status, alreadyRunning: false };
      } catch (err) {
        if (err instanceof PageserverHttpError) {
          if (err.status === 429) {
            let info: TimelineInfo | undefined;
            try {
              info = await pageserver().getTimeline(input.tenantId, input.timelineId);
            } catch (lookup) {
              if (!(lookup instanceof PageserverHttpError && lookup.status === 404)) throw lookup;
            }
            // Nothing there yet: the 429 was not about this import; try again later.
            if (!info) throw new Error(`The pageserver answered 429 (${err.msg}) but has no import of ${input.tenantId}/${input.timelineId}; retrying`);
            if (timelineOwnership(info, input.idempotencyKey) === 'ours') return { httpStatus: 429, alreadyRunning: true };
            throw nonRetryable(IMPORT_CONTROL_FAILURES.timelineConflict, `Timeline ${input.tenantId}/${input.timelineId} already exists and is not this import's (the pageserver answered 429: ${err.msg})`);
          }
          if (err.status === 409) {
            throw nonRetryable(IMPORT_CONTROL_FAILURES.timelineConflict, `Timeline ${input.tenantId}/${input.timelineId} already exists and is not this import's: ${err.msg}`);
          }
          if (err.status >= 400 && err.status < 500 && err.status !== 408) {
            throw nonRetryable(IMPORT_CONTROL_FAILURES.pageserverRejected, `The pageserver refused the import: ${err.message}`);
          }
        }
        if (err instanceof RangeError) throw nonRetryable(IMPORT_CONTROL_FAILURES.invalidInput, err.message);
        throw err;
      }
    },

    /** Where the pageserver's import is: running, done (the timeline is active), failed, or gone. */
    async getPageserverImport(input: { tenantId: string; timelineId: string }): Promise<PageserverImportState> {
      let info: TimelineInfo;
      try {
        info = await pageserver().getTimeline(input.tenantId, input.timelineId);
      } catch (err) {
        if (err instanceof PageserverHttpError && err.status === 404) return { state: 'missing' };
        throw err;
      }
      const broken = brokenReason(info);
      if (broken !== undefined) return { state: 'failed', error: maskSecrets(broken) };
      if (info.state === undefined || info.state === 'Active') return { state: 'done', lastRecordLsn: info.last_record_lsn, pgVersion: info.pg_version ?? 15 };
      return { state: 'running' };
    },

    /**
     * Registers the imported timeline on every safekeeper at the pageserver's LSN, as the storage
     * controller does when it activates an import, so a compute's first sync agrees at once.
     */
    async activateImportedTimeline(input: { tenantId: string; timelineId: string; lsn: string; pgVersion: number }): Promise<{ safekeepers: number }> {
      await Promise.all(
        deps.safekeepersHttp.map((http) =>
          createSafekeeperTimeline(
            http,
            { tenant_id: input.tenantId, timeline_id: input.timelineId, start_lsn: input.lsn, commit_lsn: input.lsn, pg_version: input.pgVersion },
            { token: deps.storageToken },
          ),
        ),
      );
      return { safekeepers: deps.safekeepersHttp.length };
    },

    /**
     * Deletes the timeline of a failed or cancelled import, only if this import created it: the
     * pageserver's record of the import must carry `idempotencyKey`. Any other timeline (one that
     * existed before, or another import's) is kept, whatever happened to the start request. One
     * that is already gone is fine. Without a key (a call scheduled by an older workflow) nothing
     * can be proven, so nothing is deleted.
     */
    async deleteImportTimeline(input: { tenantId: string; timelineId: string; idempotencyKey?: string }): Promise<{ deleted: boolean; kept?: string }> {
      const notFound = (err: unknown) => err instanceof PageserverHttpError && err.status === 404;
      if (input.idempotencyKey === undefined) return { deleted: false, kept: 'no idempotency key to prove the timeline is this import\'s' };
      let info: TimelineInfo;
      try {
        info = await pageserver().getTimeline(input.tenantId, input.timelineId);
      } catch (err) {
        if (notFound(err)) return { deleted: false };
        throw err;
      }
      if (timelineOwnership(info, input.idempotencyKey) !== 'ours') {
        return { deleted: false, kept: `timeline ${input.tenantId}/${input.timelineId} was not created by this import (the pageserver has no record of its idempotency key)` };
      }
      try {
        await pageserver().deleteTimeline(input.tenantId, input.timelineId);
        return { deleted: true };
      } catch (err) {
        if (notFound(err)) return { deleted: false };
        throw err;
      }
    },

    /** status/fast_import for an outcome the importer could not record itself (failure, cancellation). */
    async recordImportOutcome(input: { prefix: string; error?: string }): Promise<{ command: string; done: boolean; error?: string }> {
      return writeFastImportStatus(deps.s3, deps.bucket, prefixOf(input.prefix), input.error === undefined ? undefined : maskSecrets(input.error));
    },

    /** The status objects as they are in S3 (for `import status` and tests). */
    async readImportStatusObjects(input: { prefix: string }): Promise<{ pgdata: unknown; fastImport: unknown }> {
      const prefix = prefixOf(input.prefix);
      const [pgdata, fastImport] = await Promise.all([
        readJsonStatus(deps.s3, deps.bucket, prefix, PGDATA_STATUS_KEY),
        readJsonStatus(deps.s3, deps.bucket, prefix, FAST_IMPORT_STATUS_KEY),
      ]);
      return { pgdata: pgdata ?? null, fastImport: fastImport ?? null };
    },
  });
}

export type ImportControlActivities = ReturnType<typeof createImportControlActivities>;
