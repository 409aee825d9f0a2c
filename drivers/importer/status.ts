import type { S3Client } from '@aws-sdk/client-s3';
import { maskSecrets } from '../../common/errors';
import { deletePrefix, getObjectBytes, joinKey, putJsonObject } from '../s3/objects';

/**
 * The objects that tell the rest of the system how an import went. The pageserver waits for
 * `status/pgdata` (the commit marker, written only after every file is uploaded); the control
 * plane reads `status/fast_import`, which is written in every outcome because the importer's
 * exit code is not a reliable signal.
 */
export const PGDATA_STATUS_KEY = 'status/pgdata';
export const FAST_IMPORT_STATUS_KEY = 'status/fast_import';
export const SPEC_KEY = 'spec.json';
export const PGDATA_DIR = 'pgdata';

export interface FastImportStatus {
  command: 'pgdata';
  done: boolean;
  error?: string;
}

export async function writePgdataDone(s3: S3Client, bucket: string, prefix: string): Promise<void> {
  await putJsonObject(s3, bucket, joinKey(prefix, PGDATA_STATUS_KEY), { done: true });
}

/** `error` undefined means success; an error message is masked before it is stored. */
export async function writeFastImportStatus(s3: S3Client, bucket: string, prefix: string, error?: string): Promise<FastImportStatus> {
  const status: FastImportStatus = error === undefined ? { command: 'pgdata', done: true } : { command: 'pgdata', done: false, error: maskSecrets(error) };
  await putJsonObject(s3, bucket, joinKey(prefix, FAST_IMPORT_STATUS_KEY), status);
  return status;
}

export async function readJsonStatus(s3: S3Client, bucket: string, prefix: string, key: string): Promise<unknown> {
  const bytes = await getObjectBytes(s3, bucket, joinKey(prefix, key), 64 * 1024);
  if (!bytes) return undefined;
  try {
    return JSON.parse(bytes.toString('utf8'));
  } catch {
    return undefined;
  }
}

/**
 * Removes everything under `prefix/`: for a retried import that reuses a prefix, so no object
 * of an earlier attempt is mixed into the new one. spec.json is kept when `keepSpec` is set.
 */
export async function cleanPrefix(s3: S3Client, bucket: string, prefix: string, opts: { keepSpec?: boolean } = {}): Promise<{ deleted: number }> {
  if (!opts.keepSpec) return deletePrefix(s3, bucket, prefix);
  let deleted = 0;
  for (const sub of [PGDATA_DIR, 'status']) deleted += (await deletePrefix(s3, bucket, joinKey(prefix, sub))).deleted;
  return { deleted };
}
