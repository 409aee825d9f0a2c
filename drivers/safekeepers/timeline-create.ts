import { assertNeonId } from '../../model/ids';
import { isLsn } from '../../model/lsn';
import { maskSecrets } from '../../common/errors';

export interface SafekeeperTimelineCreate {
  tenant_id: string;
  timeline_id: string;
  /** Where the timeline's WAL starts: the pageserver's initdb_lsn, or the branch point. */
  start_lsn: string;
  commit_lsn?: string;
  pg_version?: number;
}

/**
 * Neon's `POST /v1/tenant/timeline` on one safekeeper: registers a timeline so a compute's WAL
 * can be accepted and sync can agree on its start. 201 created, 200 already there; anything else
 * throws with the safekeeper's message.
 */
export async function createSafekeeperTimeline(
  httpBase: string,
  request: SafekeeperTimelineCreate,
  opts: { token?: string; timeoutMs?: number } = {},
): Promise<{ status: number }> {
  assertNeonId(request.tenant_id, 'tenant_id');
  assertNeonId(request.timeline_id, 'timeline_id');
  if (!isLsn(request.start_lsn)) throw new RangeError(`start_lsn must be X/Y, got ${JSON.stringify(request.start_lsn)}`);
  const res = await fetch(new URL('/v1/tenant/timeline', httpBase), {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(opts.token ? { authorization: `Bearer ${opts.token}` } : {}) },
    body: JSON.stringify(request),
    signal: AbortSignal.timeout(opts.timeoutMs ?? 10_000),
  });
  const text = await res.text();
  if (res.status !== 200 && res.status !== 201) {
    let msg = text;
    try {
      msg = (JSON.parse(text) as { msg?: string }).msg ?? text;
    } catch {
      /* not JSON: keep the text */
    }
    throw new Error(`safekeeper ${httpBase} refused to create timeline ${request.tenant_id}/${request.timeline_id}: ${res.status} ${maskSecrets(msg)}`);
  }
  return { status: res.status };
}
