import { S3Client } from '@aws-sdk/client-s3';
import type { S3Config } from '../../common/config';

/** Connecting: loopback and AWS alike answer within a second; ten leaves room for a loaded host. */
export const S3_CONNECT_TIMEOUT_MS_DEFAULT = 10_000;
/** No byte moving on a request's socket for this long: the request failed (and is retried). */
export const S3_REQUEST_TIMEOUT_MS_DEFAULT = 30_000;

/**
 * One S3 client for every part of the project, built from the validated configuration.
 *
 * Custom endpoints (s3rver, MinIO) only answer path-style requests, and s3rver rejects the
 * flexible checksums newer SDKs send by default, so checksums are only computed or validated
 * where an operation requires them.
 *
 * Timeouts: without them a request whose connection stalls (a dropped path, a hung endpoint)
 * waits forever, holding its activity until Temporal times it out, if ever. The request timeout
 * is the handler's socket idle timeout, not its total `requestTimeout`: a large part upload that
 * keeps moving must not be cut, and a stalled one fails with a TimeoutError the SDK retries.
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
    requestHandler: {
      connectionTimeout: config.connectTimeoutMs ?? S3_CONNECT_TIMEOUT_MS_DEFAULT,
      socketTimeout: config.requestTimeoutMs ?? S3_REQUEST_TIMEOUT_MS_DEFAULT,
    },
  });
}
