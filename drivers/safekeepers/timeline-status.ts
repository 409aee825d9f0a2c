import { z } from 'zod';
import { assertNeonId } from '../../model/ids';
import { isLsn } from '../../model/lsn';
import { pgClientConfig } from '../pageserver/conninfo';
import { StorageError } from '../pageserver/errors';
import { oneExchange } from '../pageserver/exchange';
import { createStorageHttpClient, StorageHttpError, type HttpRequestOptions } from '../pageserver/http';

/**
 * A safekeeper's view of one timeline, asked the way compute_ctl asks it: over libpq with
 * `TIMELINE_STATUS` (tenant and timeline in the connection options), or over the HTTP API.
 */

export interface SafekeeperLsns {
  commit_lsn: string;
  flush_lsn: string;
}

export interface StatusQueryOptions {
  /** Connect plus answer, in ms. compute_ctl allows 100 ms per safekeeper. */
  timeoutMs?: number;
  /** storage_auth_token, sent as the password. */
  token?: string;
  signal?: AbortSignal;
}

export const DEFAULT_STATUS_TIMEOUT_MS = 5_000;

/** `host:port` (IPv6 as `[::1]:5454`), as in the spec's safekeeper_connstrings. */
export function parseSafekeeperAddress(address: string): { host: string; port: number } {
  const m = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(address.trim());
  const port = m ? Number(m[2]) : NaN;
  if (!m || !(port >= 1 && port <= 65535)) throw new RangeError(`safekeeper address must be host:port, got ${JSON.stringify(address)}`);
  return { host: m[1]!.replace(/^\[(.*)\]$/, '$1'), port };
}

/**
 * TIMELINE_STATUS over libpq. Resolves with the LSNs, or null when the safekeeper does not know
 * the timeline (it answers with no rows); throws a StorageError otherwise.
 */
export async function queryTimelineStatus(address: string, tenantId: string, timelineId: string, opts: StatusQueryOptions = {}): Promise<SafekeeperLsns | null> {
  assertNeonId(tenantId, 'tenant_id');
  assertNeonId(timelineId, 'timeline_id');
  const { host, port } = parseSafekeeperAddress(address);
  const what = `safekeeper ${address}`;
  const timeoutMs = opts.timeoutMs ?? DEFAULT_STATUS_TIMEOUT_MS;
  const config = pgClientConfig(
    { host, port, user: 'no_user' },
    {
      ...(opts.token !== undefined ? { password: opts.token } : {}),
      applicationName: 'compute_ctl',
      // One `-c` per pair: safekeepers split options on whitespace and read every key=value.
      extraOptions: `-c tenant_id=${tenantId} -c timeline_id=${timelineId}`,
      connectTimeoutMs: timeoutMs,
    },
  );
  return oneExchange(config, { what, timeoutMs, timeoutMessage: 'no answer to TIMELINE_STATUS', ...(opts.signal ? { signal: opts.signal } : {}) }, async (client) => {
    const result = await client.query<Record<string, unknown>>('TIMELINE_STATUS');
    const row = result.rows[0];
    if (!row) return null;
    const commit = row.commit_lsn;
    const flush = row.flush_lsn;
    if (typeof commit !== 'string' || typeof flush !== 'string' || !isLsn(commit) || !isLsn(flush)) {
      throw new StorageError('server', `${what} answered TIMELINE_STATUS without valid commit_lsn/flush_lsn columns`);
    }
    return { commit_lsn: commit, flush_lsn: flush };
  });
}

export class SafekeeperHttpError extends StorageHttpError {
  override name = 'SafekeeperHttpError';
}

const lsnText = z.string().refine(isLsn, 'expected an LSN (X/Y)');

const timelineStatusSchema = z.looseObject({
  tenant_id: z.string(),
  timeline_id: z.string(),
  commit_lsn: lsnText,
  flush_lsn: lsnText,
  timeline_start_lsn: lsnText,
  backup_lsn: lsnText.optional(),
  remote_consistent_lsn: lsnText.optional(),
  peer_horizon_lsn: lsnText.optional(),
  local_start_lsn: lsnText.optional(),
});

export type TimelineStatus = z.infer<typeof timelineStatusSchema>;

/** GET /v1/tenant/<tenant>/timeline/<timeline> on the safekeeper's HTTP API; null on 404. */
export async function getTimelineStatus(
  httpBase: string,
  tenantId: string,
  timelineId: string,
  opts: HttpRequestOptions & { token?: string } = {},
): Promise<TimelineStatus | null> {
  const http = createStorageHttpClient(
    'safekeeper',
    httpBase,
    opts.token,
    (status, msg, method, path, cause) => new SafekeeperHttpError('safekeeper', status, msg, method, path, cause === undefined ? undefined : { cause }),
  );
  const path = `/v1/tenant/${assertNeonId(tenantId, 'tenant_id')}/timeline/${assertNeonId(timelineId, 'timeline_id')}`;
  try {
    const { json } = await http.request('GET', path, undefined, {
      ...(opts.timeoutMs !== undefined ? { timeoutMs: opts.timeoutMs } : {}),
      ...(opts.signal ? { signal: opts.signal } : {}),
    });
    const parsed = timelineStatusSchema.safeParse(json);
    if (!parsed.success) {
      const problem = parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ');
      throw new SafekeeperHttpError('safekeeper', 200, `unexpected TimelineStatus: ${problem}`, 'GET', path);
    }
    return parsed.data;
  } catch (err) {
    if (err instanceof SafekeeperHttpError && err.status === 404) return null;
    throw err;
  }
}
