/**
 * Cache states in Neon's endpoint storage (or the dev stand-in), as compute_ctl reaches it:
 * `http://{endpoint_storage_addr}/{tenant}/{timeline}/{endpoint}/lfc_state` with the spec's
 * endpoint_storage_token as a bearer token. The compute holds no bucket credentials on this path.
 *
 * The token is a secret: no message here carries it, or the Authorization header.
 */
import { maskSecrets } from '../../common/errors';
import { cacheStateKey } from '../../model/cache-state';
import { MAX_STORED_CACHE_STATE_BYTES } from './state-codec';
import type { CacheStateStore } from './store';
import { nonRetryable } from '../../common/failures';

export interface EndpointStorageStoreOptions {
  /** host:port, the spec's endpoint_storage_addr. */
  addr: string;
  /** The spec's endpoint_storage_token (an EdDSA JWT scoped to this endpoint). */
  token: string;
  /** Per request (default 60 s): a stuck storage fails the attempt and it is retried. */
  requestTimeoutMs?: number;
}

export const ENDPOINT_STORAGE_REFUSED = 'EndpointStorageRefused';

async function readCapped(res: Response, limit: number, what: string): Promise<Buffer> {
  const declared = Number(res.headers.get('content-length'));
  if (Number.isFinite(declared) && declared > limit) {
    await res.body?.cancel();
    throw nonRetryable('CorruptCacheState', `${what} is ${declared} bytes, over the ${limit}-byte limit`);
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of res.body ?? []) {
    size += chunk.length;
    if (size > limit) throw nonRetryable('CorruptCacheState', `${what} is larger than the ${limit}-byte limit`);
    chunks.push(Buffer.from(chunk));
  }
  return Buffer.concat(chunks, size);
}

export function createEndpointStorageStore(options: EndpointStorageStoreOptions): CacheStateStore {
  const timeoutMs = options.requestTimeoutMs ?? 60_000;
  const key = (tenantId: string, timelineId: string, endpointId: string): string => {
    try {
      return cacheStateKey('', tenantId, timelineId, endpointId);
    } catch (err) {
      throw nonRetryable('InvalidArgument', (err as Error).message);
    }
  };

  async function call(method: 'GET' | 'PUT', k: string, body: Uint8Array | undefined, signal: AbortSignal | undefined): Promise<Response> {
    const what = `${method} http://${options.addr}/${k}`;
    const signals = [AbortSignal.timeout(timeoutMs), ...(signal ? [signal] : [])];
    let res: Response;
    try {
      res = await fetch(`http://${options.addr}/${k}`, {
        method,
        headers: { authorization: `Bearer ${options.token}`, ...(body ? { 'content-type': 'application/octet-stream' } : {}) },
        body,
        signal: AbortSignal.any(signals),
      });
    } catch (err) {
      if (signal?.aborted) throw err;
      const cause = (err as { cause?: { message?: string } }).cause?.message;
      // Retryable: the storage may be restarting.
      throw new Error(maskSecrets(`endpoint storage ${what} failed: ${(err as Error).message}${cause ? ` (${cause})` : ''}`));
    }
    if (res.status === 200 || (method === 'GET' && res.status === 404)) return res;
    const detail = maskSecrets((await res.text().catch(() => '')).slice(0, 200)).trim();
    const message = `endpoint storage answered ${res.status} to ${what}${detail ? `: ${detail}` : ''}`;
    // A refused token or path will be refused again; a server error may pass.
    if (res.status >= 400 && res.status < 500 && res.status !== 408 && res.status !== 429) throw nonRetryable(ENDPOINT_STORAGE_REFUSED, message);
    throw new Error(message);
  }

  return {
    key,

    async put(tenantId, timelineId, endpointId, blob, opts = {}) {
      const k = key(tenantId, timelineId, endpointId);
      if (blob.length > MAX_STORED_CACHE_STATE_BYTES) throw nonRetryable('CacheStateTooLarge', `cache state of ${blob.length} bytes exceeds the ${MAX_STORED_CACHE_STATE_BYTES}-byte limit`);
      const res = await call('PUT', k, blob, opts.signal);
      await res.arrayBuffer();
    },

    async get(tenantId, timelineId, endpointId, opts = {}) {
      const k = key(tenantId, timelineId, endpointId);
      const res = await call('GET', k, undefined, opts.signal);
      if (res.status === 404) {
        await res.arrayBuffer();
        return null;
      }
      return readCapped(res, MAX_STORED_CACHE_STATE_BYTES, `cache state ${k}`);
    },
  };
}
