/**
 * Where the external API's signing keys come from.
 *
 * compute_ctl reads compute_ctl_config at start (from --config or the control plane) and keeps
 * that key set. Here the compute's config lives in its workflow, which may start empty and get
 * its config from /configure later, so:
 * - `--jwks-file`: a fixed key set read at start, as compute_ctl's --config; the workflow's keys
 *   are then ignored. Use it when the worker must refuse strangers before any spec arrives.
 * - otherwise the workflow's compute_ctl_config.jwks (apiKeys query), cached for a few seconds
 *   and re-read right after a /configure, so a control plane can rotate keys with a configure.
 * Once a non-empty key set has been seen, an empty one never switches authentication off again:
 * a configure with no keys keeps the previous ones. Only a compute that never had keys (the dev
 * default) runs without authentication. If the keys cannot be read and none are cached, requests
 * are refused (503), never let through.
 */
import { readFile } from 'node:fs/promises';
import { jwkSetSchema } from '../../model/compute-spec';
import { ApiKeySet } from './auth';
import { HttpError } from './http-kit';

export type JwkSet = { keys: Record<string, unknown>[] };

export interface ApiKeySource {
  /** The keys requests are checked against now; an empty set means authentication is off. */
  current(): Promise<ApiKeySet>;
  /** Forgets the cached keys (after a configure), so the next request reads them again. */
  invalidate(): void;
}

/** Validates a JWKS document, naming the key and field at fault. */
export function parseJwks(json: unknown, where: string): JwkSet {
  const parsed = jwkSetSchema.safeParse(json);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => `${i.path.map((p) => (typeof p === 'number' ? `[${p}]` : `.${String(p)}`)).join('').replace(/^\./, '') || '(root)'}: ${i.message}`);
    throw new Error(`invalid key set in ${where}: ${problems.join('; ')}`);
  }
  return parsed.data as JwkSet;
}

export async function readJwksFile(file: string): Promise<ApiKeySource> {
  let json: unknown;
  try {
    json = JSON.parse(await readFile(file, 'utf8'));
  } catch (err) {
    throw new Error(`cannot read the key set ${file}: ${(err as Error).message}`);
  }
  const keys = await ApiKeySet.from(parseJwks(json, file));
  return { current: () => Promise.resolve(keys), invalidate: () => undefined };
}

/** The workflow's key set, cached for `ttlMs`. */
export function workflowApiKeys(load: () => Promise<JwkSet>, ttlMs = 5000): ApiKeySource {
  let cached: { keys: ApiKeySet; at: number } | undefined;
  let lastNonEmpty: ApiKeySet | undefined;
  let loading: Promise<ApiKeySet> | undefined;

  const reload = async (): Promise<ApiKeySet> => {
    let keys = await ApiKeySet.from(parseJwks(await load(), 'the compute workflow'));
    if (keys.size > 0) lastNonEmpty = keys;
    else if (lastNonEmpty) keys = lastNonEmpty;
    cached = { keys, at: Date.now() };
    return keys;
  };

  return {
    async current() {
      if (cached && Date.now() - cached.at < ttlMs) return cached.keys;
      loading ??= reload().finally(() => (loading = undefined));
      try {
        return await loading;
      } catch (err) {
        if (cached) return cached.keys;
        throw new HttpError(503, `cannot check the authorization token: the compute's signing keys could not be read (${(err as Error).message})`);
      }
    },
    invalidate() {
      if (cached) cached.at = 0;
    },
  };
}
