import type { S3Client } from '@aws-sdk/client-s3';
import { z } from 'zod';
import { assertSafePrefix, getObjectBytes } from '../../../drivers';
import { importPgdataFromS3, PgdataImportError, type ImportPgdataResult } from './import';

/**
 * Adapter for the dev pageserver's `import_pgdata` extension point: parses the request body's
 * `import_pgdata` ({idempotency_key, location: {AwsS3: {region, bucket, key}}}) and downloads
 * the validated data directory into `targetPgdata`.
 *
 * The bucket named by the request is untrusted: only the configured ones are read (the dev stack
 * has one S3 endpoint; the region is not used to pick it).
 *
 * Besides the download itself (calling the handler), the pageserver uses `validate` to refuse a
 * malformed request at once, and `isCommitted` to wait for the commit marker before starting.
 */
const importPgdataSchema = z.object({
  idempotency_key: z.string().min(1).max(512).optional(),
  location: z.object({
    AwsS3: z.object({ region: z.string().max(64), bucket: z.string().min(1).max(63), key: z.string().min(1).max(512) }),
  }),
});

export interface ImportPgdataRequest {
  tenantId: string;
  timelineId: string;
  importPgdata: unknown;
  targetPgdata: string;
  signal?: AbortSignal;
}

export type ImportPgdataHandlerFn = ((request: ImportPgdataRequest) => Promise<ImportPgdataResult>) & {
  /** Throws PgdataImportError naming the problem if the request cannot be served. */
  validate(importPgdata: unknown): { bucket: string; prefix: string };
  /** True once `<prefix>/status/pgdata` says `{"done":true}`: the upload is complete. */
  isCommitted(importPgdata: unknown): Promise<boolean>;
};

export function createImportPgdataHandler(deps: { s3: S3Client; allowedBuckets: string[]; maxTotalBytes?: number; log?: (line: string) => void }): ImportPgdataHandlerFn {
  const validate = (importPgdata: unknown): { bucket: string; prefix: string } => {
    const parsed = importPgdataSchema.safeParse(importPgdata);
    if (!parsed.success) {
      throw new PgdataImportError(`import_pgdata is malformed: ${parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ')}`);
    }
    const { bucket, key } = parsed.data.location.AwsS3;
    if (!deps.allowedBuckets.includes(bucket)) throw new PgdataImportError(`import_pgdata names bucket ${JSON.stringify(bucket)}, which this pageserver does not read`);
    try {
      return { bucket, prefix: assertSafePrefix(key.replace(/\/+$/, ''), 'import_pgdata location key') };
    } catch (err) {
      throw new PgdataImportError((err as Error).message);
    }
  };

  const handler = async (request: ImportPgdataRequest): Promise<ImportPgdataResult> => {
    const { bucket, prefix } = validate(request.importPgdata);
    const result = await importPgdataFromS3({ s3: deps.s3, bucket, prefix, targetDir: request.targetPgdata, maxTotalBytes: deps.maxTotalBytes, signal: request.signal });
    deps.log?.(
      `imported pgdata for ${request.tenantId}/${request.timelineId} from s3://${bucket}/${prefix}: PostgreSQL ${result.pgVersion}, checkpoint ${result.checkpointLsn}, ${result.files} files, ${result.bytes} bytes`,
    );
    return result;
  };

  const isCommitted = async (importPgdata: unknown): Promise<boolean> => {
    const { bucket, prefix } = validate(importPgdata);
    const bytes = await getObjectBytes(deps.s3, bucket, `${prefix}/status/pgdata`, 64 * 1024);
    if (!bytes) return false;
    try {
      return (JSON.parse(bytes.toString('utf8')) as { done?: unknown })?.done === true;
    } catch {
      // Not JSON (yet, or hostile): not committed; the import step reports it if it stays so.
      return false;
    }
  };

  return Object.assign(handler, { validate, isCommitted });
}
