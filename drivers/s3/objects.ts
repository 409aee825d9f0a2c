import {
  AbortMultipartUploadCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsCommand,
  PutObjectCommand,
  type S3Client,
} from '@aws-sdk/client-s3';

/** Small helpers over the S3 API shared by the importer and the dev storage. */

export interface ListedObject {
  key: string;
  size: number;
  /** Without its quotes; what GET, HEAD and conditional requests compare against. */
  etag: string;
}

export const unquoteEtag = (etag: string | undefined): string => (etag ?? '').replace(/^"|"$/g, '');

export function isNotFound(err: unknown): boolean {
  const e = err as { name?: string; $metadata?: { httpStatusCode?: number } };
  return e?.name === 'NoSuchKey' || e?.name === 'NotFound' || e?.$metadata?.httpStatusCode === 404;
}

/**
 * An S3 prefix the caller may hand us: relative, no empty or dot segments, no trailing slash.
 * Keys are built by joining with '/', so a bad prefix could otherwise reach outside its area.
 */
export function assertSafePrefix(prefix: string, what = 'S3 prefix'): string {
  if (
    prefix.length === 0 ||
    prefix.length > 512 ||
    prefix.startsWith('/') ||
    prefix.endsWith('/') ||
    prefix.split('/').some((seg) => seg === '' || seg === '.' || seg === '..') ||
    !/^[A-Za-z0-9!_.*'()/-]+$/.test(prefix)
  ) {
    throw new RangeError(`${what} ${JSON.stringify(prefix)} is not a safe relative S3 prefix (letters, digits and !_.*'()- between single slashes, no . or .. segments, no leading or trailing slash)`);
  }
  return prefix;
}

export function joinKey(prefix: string, ...parts: string[]): string {
  return [prefix, ...parts].join('/');
}

/**
 * Every object under `prefix` (which should end with '/' to mean a folder), page by page.
 *
 * ListObjects (v1) with the last key as marker, not v2: s3rver makes v2 continuation tokens with
 * DES, which OpenSSL 3 (Node 17+) refuses, so any truncated v2 listing fails with InternalError
 * there. v1 paginates the same on real S3.
 */
export async function* listObjects(s3: S3Client, bucket: string, prefix: string, signal?: AbortSignal): AsyncGenerator<ListedObject> {
  let marker: string | undefined;
  for (;;) {
    const page = await s3.send(new ListObjectsCommand({ Bucket: bucket, Prefix: prefix, Marker: marker }), { abortSignal: signal });
    const contents = page.Contents ?? [];
    for (const o of contents) {
      if (o.Key !== undefined) yield { key: o.Key, size: o.Size ?? 0, etag: unquoteEtag(o.ETag) };
    }
    const last = contents.at(-1)?.Key;
    if (!page.IsTruncated || last === undefined || last === marker) return;
    marker = page.NextMarker ?? last;
  }
}

/** An object's bytes, or undefined if it does not exist. Refuses objects above `maxBytes`. */
export async function getObjectBytes(s3: S3Client, bucket: string, key: string, maxBytes = 16 * 1024 * 1024): Promise<Buffer | undefined> {
  try {
    const out = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
    if (out.ContentLength !== undefined && out.ContentLength > maxBytes) {
      out.Body?.transformToWebStream().cancel().catch(() => undefined);
      throw new RangeError(`s3://${bucket}/${key} is ${out.ContentLength} bytes, more than the ${maxBytes} allowed`);
    }
    const bytes = Buffer.from(await out.Body!.transformToByteArray());
    if (bytes.length > maxBytes) throw new RangeError(`s3://${bucket}/${key} is more than the ${maxBytes} bytes allowed`);
    return bytes;
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw err;
  }
}

export async function putJsonObject(s3: S3Client, bucket: string, key: string, value: unknown): Promise<void> {
  await s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: JSON.stringify(value), ContentType: 'application/json' }));
}

/**
 * Deletes every object under `prefix/` and aborts unfinished multipart uploads there (where the
 * server supports listing them), so a retried attempt never mixes with an earlier one's objects.
 */
export async function deletePrefix(s3: S3Client, bucket: string, prefix: string): Promise<{ deleted: number }> {
  const folder = `${prefix}/`;
  let deleted = 0;
  // Collect first, delete after: deleting while paginating can skip keys on some servers.
  const keys: string[] = [];
  for await (const o of listObjects(s3, bucket, folder)) keys.push(o.key);
  for (let i = 0; i < keys.length; i += 1000) {
    const batch = keys.slice(i, i + 1000);
    const out = await s3.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: batch.map((Key) => ({ Key })), Quiet: true } }));
    const errors = out.Errors ?? [];
    if (errors.length > 0) {
      throw new Error(`Deleting under s3://${bucket}/${folder} failed for ${errors.length} objects, first ${errors[0]?.Key}: ${errors[0]?.Code} ${errors[0]?.Message}`);
    }
    deleted += batch.length;
  }
  try {
    let keyMarker: string | undefined;
    let uploadIdMarker: string | undefined;
    for (;;) {
      const page = await s3.send(new ListMultipartUploadsCommand({ Bucket: bucket, Prefix: folder, KeyMarker: keyMarker, UploadIdMarker: uploadIdMarker }));
      for (const u of page.Uploads ?? []) {
        if (u.Key && u.UploadId) await s3.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: u.Key, UploadId: u.UploadId }));
      }
      if (!page.IsTruncated) break;
      keyMarker = page.NextKeyMarker;
      uploadIdMarker = page.NextUploadIdMarker;
    }
  } catch (err) {
    // s3rver does not implement the listing; its unfinished parts are invisible and harmless.
    if ((err as Error).name !== 'NotImplemented') throw err;
  }
  return { deleted };
}
