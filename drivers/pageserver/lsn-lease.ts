import { assertNeonId } from '../../model/ids';
import { formatLsn, parseLsn } from '../../model/lsn';
import { parseConninfo, pgClientConfig } from './conninfo';
import { DEFAULT_CONNECT_TIMEOUT_MS } from './copy-out';
import { StorageError } from './errors';
import { oneExchange } from './exchange';

/**
 * An LSN lease from a pageserver over libpq, as compute_ctl takes it for a Static compute: the page
 * service command `lease lsn <tenant_shard_id> <timeline_id> <lsn>` answers one row whose
 * `valid_until` is milliseconds since the Unix epoch, or NULL when the pageserver will not grant it
 * (the LSN is already garbage-collected). Until then the pageserver's GC keeps that LSN readable.
 */

export interface LeaseLsnOptions {
  connstring: string;
  /** `<tenant>` or `<tenant>-<shard number><shard count>` (hex). */
  tenantShardId: string;
  timelineId: string;
  lsn: string;
  /** storage_auth_token: the password for the pageserver. */
  token?: string;
  /** For the connection and the answer alike; default 10 s. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

const TENANT_SHARD_ID = /^([0-9a-f]{32})(?:-[0-9a-f]{4})?$/;

export function leaseLsnCommand(tenantShardId: string, timelineId: string, lsn: string): string {
  const m = TENANT_SHARD_ID.exec(tenantShardId);
  if (!m) throw new StorageError('bad-request', `invalid tenant_shard_id ${JSON.stringify(tenantShardId)}: expected <tenant_id> or <tenant_id>-<4 hex digits>`);
  assertNeonId(timelineId, 'timeline_id');
  return `lease lsn ${tenantShardId} ${timelineId} ${formatLsn(parseLsn(lsn))}`;
}

/** Takes or renews the lease; returns when it ends. A refused lease is a StorageError of kind `lease-refused`. */
export async function leaseLsn(opts: LeaseLsnOptions): Promise<Date> {
  const command = leaseLsnCommand(opts.tenantShardId, opts.timelineId, opts.lsn);
  const info = parseConninfo(opts.connstring);
  const what = `pageserver ${info.host}:${info.port}`;
  const timeoutMs = opts.timeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
  const config = pgClientConfig(info, { ...(opts.token !== undefined ? { password: opts.token } : {}), applicationName: 'compute_ctl', connectTimeoutMs: timeoutMs });
  return oneExchange(config, { what, timeoutMs, timeoutMessage: 'no answer to the LSN lease', ...(opts.signal ? { signal: opts.signal } : {}) }, async (client) => {
    const result = await client.query<{ valid_until: string | null }>(command);
    const value = result.rows[0]?.valid_until;
    if (value === null || value === undefined) {
      throw new StorageError(
        'lease-refused',
        `${what} did not grant a lease on LSN ${opts.lsn} of ${opts.tenantShardId}/${opts.timelineId}: it has garbage-collected that history (the LSN is below its GC cutoff)`,
      );
    }
    const ms = Number(value);
    if (!Number.isSafeInteger(ms)) throw new StorageError('server', `${what} answered the LSN lease with ${JSON.stringify(value)}, not milliseconds since the epoch`);
    return new Date(ms);
  });
}
