import type { S3Client } from '@aws-sdk/client-s3';
import { z } from 'zod';
import { assertSafePrefix } from '../../../activities/s3/objects';
import { importPgdataFromS3, PgdataImportError, type ImportPgdataResult } from './import';

/**
 * Adapter for the dev pageserver's `import_pgdata` extension point: parses the request body's
 * `import_pgdata` ({idempotency_key, location: {AwsS3: {region, bucket, key}}}) and downloads
 * the validated data directory into `targetPgdata`.
 *
 * The bucket named by the request is untrusted: only the configured ones are read (the dev stack
 * has one S3 endpoint; the region is not used to pick it).
 */
const importPgdataSchema = z.object({
  idempotency_key: z.string().min(1).max(512).optional(),
  location: z.object({
    AwsS3: z.object({ region: z.string().max(64), bucket: z.string().min(1).max(63), key: z.string().min(1).max(512) }),
  }),
});

export function createImportPgdataHandler(deps: { s3: S3Client; allowedBuckets: string[]; maxTotalBytes?: number; log?: (line: string) => void }) {
  return async (request: { tenantId: string; timelineId: string; importPgdata: unknown; targetPgdata: string }): Promise<ImportPgdataResult> => {
    const parsed = importPgdataSchema.safeParse(request.importPgdata);
    if (!parsed.success) {
      throw new PgdataImportError(`import_pgdata is malformed: ${parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ')}`);
    }
    const { bucket, key } = parsed.data.location.AwsS3;
    if (!deps.allowedBuckets.includes(bucket)) throw new PgdataImportError(`import_pgdata names bucket ${JSON.stringify(bucket)}, which this pageserver does not read`);
    let prefix: string;
    try {
      prefix = assertSafePrefix(key.replace(/\/+$/, ''), 'import_pgdata location key');
    } catch (err) {
      throw new PgdataImportError((err as Error).message);
    }
    const result = await importPgdataFromS3({ s3: deps.s3, bucket, prefix, targetDir: request.targetPgdata, maxTotalBytes: deps.maxTotalBytes });
    deps.log?.(
      `imported pgdata for ${request.tenantId}/${request.timelineId} from s3://${bucket}/${prefix}: PostgreSQL ${result.pgVersion}, checkpoint ${result.checkpointLsn}, ${result.files} files, ${result.bytes} bytes`,
    );
    return result;
  };
}
