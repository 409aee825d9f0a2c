import { maskSecrets } from '../../common/errors';

/**
 * JSON over HTTP to a storage service's management API (pageserver, safekeeper). The HTTP status
 * survives into errors, because callers act on it (201 created, 409 conflict, 429 busy, 404 gone).
 */

export type StorageService = 'pageserver' | 'safekeeper';

export class StorageHttpError extends Error {
  override name = 'StorageHttpError';
  /** Worth trying again: no answer at all, or the service said it is busy or broken. */
  readonly retryable: boolean;
  constructor(
    readonly service: StorageService,
    /** 0 when no HTTP answer came (refused, unreachable, timed out). */
    readonly status: number,
    /** The service's own message (`{"msg": ...}`), or what went wrong on the way. */
    readonly msg: string,
    readonly method: string,
    readonly path: string,
    options?: { cause?: unknown },
  ) {
    super(maskSecrets(`${service} ${method} ${path}: ${status ? `HTTP ${status}: ` : ''}${msg}`), options);
    this.retryable = status === 0 || status === 429 || status >= 500;
  }
}

export interface HttpRequestOptions {
  timeoutMs?: number;
  signal?: AbortSignal;
}

export const DEFAULT_HTTP_TIMEOUT_MS = 30_000;

export interface StorageHttpClient {
  request(method: string, path: string, body?: unknown, opts?: HttpRequestOptions): Promise<{ status: number; json: unknown }>;
}

function causeCode(err: unknown): string | undefined {
  const cause = (err as { cause?: { code?: unknown } } | undefined)?.cause;
  return typeof cause?.code === 'string' ? cause.code : undefined;
}

/** The message of an error answer: `{"msg"}` (Neon's services), `{"error"}`, or the start of the text. */
function errorMessage(text: string): string {
  try {
    const parsed = JSON.parse(text) as { msg?: unknown; error?: unknown };
    if (typeof parsed.msg === 'string') return parsed.msg;
    if (typeof parsed.error === 'string') return parsed.error;
  } catch {
    // not JSON: fall through to the raw text
  }
  const trimmed = text.trim();
  return trimmed.length > 500 ? `${trimmed.slice(0, 500)}…` : trimmed || '(empty body)';
}

/**
 * A client for one service at `baseUrl`, sending `Authorization: Bearer <token>` when a token is
 * given. `makeError` lets each service throw its own error class.
 */
export function createStorageHttpClient(
  service: StorageService,
  baseUrl: string,
  token: string | undefined,
  makeError: (status: number, msg: string, method: string, path: string, cause?: unknown) => StorageHttpError,
  defaultTimeoutMs = DEFAULT_HTTP_TIMEOUT_MS,
): StorageHttpClient {
  let base: URL;
  try {
    base = new URL(baseUrl);
  } catch {
    throw new RangeError(`${service} HTTP address is not a URL: ${JSON.stringify(maskSecrets(baseUrl))}`);
  }
  if (base.protocol !== 'http:' && base.protocol !== 'https:') {
    throw new RangeError(`${service} HTTP address must be http(s): ${JSON.stringify(maskSecrets(baseUrl))}`);
  }
  const root = base.href.replace(/\/+$/, '');
  return {
    async request(method, path, body, opts = {}) {
      const timeoutMs = opts.timeoutMs ?? defaultTimeoutMs;
      const timeout = AbortSignal.timeout(timeoutMs);
      const signal = opts.signal ? AbortSignal.any([opts.signal, timeout]) : timeout;
      const headers: Record<string, string> = { accept: 'application/json' };
      if (body !== undefined) headers['content-type'] = 'application/json';
      if (token) headers.authorization = `Bearer ${token}`;
      let response: Response;
      let text: string;
      try {
        response = await fetch(`${root}${path}`, {
          method,
          headers,
          ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
          signal,
        });
        text = await response.text();
      } catch (err) {
        if (opts.signal?.aborted) throw makeError(0, 'aborted', method, path, err);
        if (timeout.aborted) throw makeError(0, `no answer within ${timeoutMs} ms`, method, path, err);
        const code = causeCode(err);
        const what = code === 'ECONNREFUSED' ? 'connection refused' : code ? `request failed (${code})` : `request failed: ${err instanceof Error ? err.message : String(err)}`;
        throw makeError(0, what, method, path, err);
      }
      if (response.status < 200 || response.status > 299) throw makeError(response.status, errorMessage(text), method, path);
      if (text.trim() === '') return { status: response.status, json: undefined };
      try {
        return { status: response.status, json: JSON.parse(text) as unknown };
      } catch {
        throw makeError(response.status, `answer is not JSON: ${errorMessage(text)}`, method, path);
      }
    },
  };
}
