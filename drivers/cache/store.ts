/**
 * Cache states in object storage, one per endpoint, at
 * `<prefix>/<tenant_id>/<timeline_id>/<endpoint_id>/lfc_state` (PUT overwrites; absent is null).
 */
import { GetObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import type { Readable } from 'node:stream';
import { cacheStateKey, normalizeKeyPrefix } from '../../model/cache-state';
import { MAX_STORED_CACHE_STATE_BYTES } from './state-codec';
import { nonRetryable } from '../../common/failures';

export interface CacheStateStore {
  /** The object key, validating every ID (ApplicationFailure 'InvalidArgument' when one is bad). */
  key(tenantId: string, timelineId: string, endpointId: string): string;
  put(tenantId: string, timelineId: string, endpointId: string, blob: Uint8Array, opts?: { signal?: AbortSignal }): Promise<void>;
  /** The stored state, or null when there is none (first start, or nothing was ever offloaded). */
  get(tenantId: string, timelineId: string, endpointId: string, opts?: { signal?: AbortSignal }): Promise<Buffer | null>;
}

export interface CacheStateStoreOptions {
  s3: S3Client;
  bucket: string;
  /** Key prefix, e.g. "lfc" (may be empty). */
  prefix: string;
}

function isNotFound(err: unknown): boolean {
  const e = err as { name?: string; $metadata?: { httpStatusCode?: number } };
  return e.name === 'NoSuchKey' || e.name === 'NotFound' || e.$metadata?.httpStatusCode === 404;
}

async function readCapped(body: Readable, limit: number, key: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    const b = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as Uint8Array);
    size += b.length;
    if (size > limit) {
      body.destroy();
      throw nonRetryable('CorruptCacheState', `cache state ${key} is larger than the ${limit}-byte limit`);
    }
    chunks.push(b);
  }
  return Buffer.concat(chunks, size);
}

export function createCacheStateStore(options: CacheStateStoreOptions): CacheStateStore {
  const prefix = normalizeKeyPrefix(options.prefix);
  const key = (tenantId: string, timelineId: string, endpointId: string): string => {
    try {
      return cacheStateKey(prefix, tenantId, timelineId, endpointId);
    } catch (err) {
      throw nonRetryable('InvalidArgument', (err as Error).message);
    }
  };
  return {
    key,

    async put(tenantId, timelineId, endpointId, blob, opts = {}) {
      const k = key(tenantId, timelineId, endpointId);
      if (blob.length > MAX_STORED_CACHE_STATE_BYTES) throw nonRetryable('CacheStateTooLarge', `cache state of ${blob.length} bytes exceeds the ${MAX_STORED_CACHE_STATE_BYTES}-byte limit`);
      await options.s3.send(new PutObjectCommand({ Bucket: options.bucket, Key: k, Body: blob, ContentLength: blob.length, ContentType: 'application/octet-stream' }), {
        abortSignal: opts.signal,
      });
    },

    async get(tenantId, timelineId, endpointId, opts = {}) {
      const k = key(tenantId, timelineId, endpointId);
      let response;
      try {
        response = await options.s3.send(new GetObjectCommand({ Bucket: options.bucket, Key: k }), { abortSignal: opts.signal });
      } catch (err) {
        if (isNotFound(err)) return null;
        throw err;
      }
      if (response.ContentLength !== undefined && response.ContentLength > MAX_STORED_CACHE_STATE_BYTES) {
        (response.Body as Readable | undefined)?.destroy();
        throw nonRetryable('CorruptCacheState', `cache state ${k} is ${response.ContentLength} bytes, over the ${MAX_STORED_CACHE_STATE_BYTES}-byte limit`);
      }
      if (!response.Body) return Buffer.alloc(0);
      return readCapped(response.Body as Readable, MAX_STORED_CACHE_STATE_BYTES, k);
    },
  };
}
