/**
 * The drivers' public entry: what code outside the product (the dev stack, benchmarks) may use.
 * The dev storage services speak the safekeeper protocol and read S3 through these; lint
 * (eslint.config.mjs) keeps dev/ from reaching past this file into the drivers' internals.
 */
export * from './storage-backend/stock/safekeeper-protocol';
export { createS3Client } from './s3/client';
export { assertSafePrefix, deletePrefix, getObjectBytes, isNotFound, joinKey, listObjects, putJsonObject, unquoteEtag, type ListedObject } from './s3/objects';
