import { S3Client } from '@aws-sdk/client-s3';
import type { S3Config } from '../../common/config';

/**
 * One S3 client for every part of the project, built from the validated configuration.
 *
 * Custom endpoints (s3rver, MinIO) only answer path-style requests, and s3rver rejects the
 * flexible checksums newer SDKs send by default, so checksums are only computed or validated
 * where an operation requires them.
 */
export function createS3Client(config: S3Config, overrides: { maxAttempts?: number } = {}): S3Client {
  return new S3Client({
    region: config.region,
    endpoint: config.endpoint,
    forcePathStyle: config.forcePathStyle,
    credentials: config.credentials,
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    maxAttempts: overrides.maxAttempts ?? 5,
  });
}
