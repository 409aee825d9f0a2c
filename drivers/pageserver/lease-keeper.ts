import { setTimeout as sleep } from 'node:timers/promises';
import { log } from '../../common/logger';
import { leaseLsn, StorageError } from '.';
import type { StaticLease } from '../../model/static-lease';

/**
 * A Static compute's LSN lease, held while the compute runs: compute_ctl's lsn_lease task, run
 * inside the watch activity (so renewing costs no Temporal action). Leased on every pageserver of
 * every shard; the earliest `valid_until` counts. Renewed at max(valid - 60 s, valid / 2) from
 * each grant (about 9 minutes with Neon's 10-minute lease); a failed attempt is retried after
 * 500 ms, growing ×1.5 up to 60 s. A refused lease (the LSN already garbage-collected) is
 * permanent: it is logged and renewal stops, as in compute_ctl.
 */

/** One round of leases on every target; the earliest end. */
export async function leaseEverywhere(lease: StaticLease, signal?: AbortSignal): Promise<Date> {
  if (lease.targets.length === 0) throw new StorageError('bad-request', 'the spec names no pageserver reachable over libpq to lease the LSN from');
  const ends = await Promise.all(
    lease.targets.map((t) =>
      leaseLsn({ connstring: t.libpqUrl, tenantShardId: t.tenantShardId, timelineId: lease.timelineId, lsn: lease.lsn, ...(lease.token !== undefined ? { token: lease.token } : {}), ...(signal ? { signal } : {}) }),
    ),
  );
  return ends.reduce((a, b) => (b < a ? b : a));
}

/** How long to wait before renewing a lease that is valid for `validMs` more. */
export function renewAfterMs(validMs: number): number {
  return Math.max(0, Math.max(validMs - 60_000, validMs / 2));
}

const FIRST_RETRY_MS = 500;
const MAX_RETRY_MS = 60_000;

export interface LeaseKeeperReport {
  /** When the lease held last ends (ISO), if any was granted. */
  validUntil?: string;
  renewals: number;
  /** Why renewal stopped or last failed. */
  error?: string;
}

/**
 * Keeps the lease until `stop()` is called: leases at once, then renews on schedule. Never throws;
 * what happened is in the report.
 */
export function keepLease(lease: StaticLease, opts: { now?: () => number } = {}): { stop(): Promise<LeaseKeeperReport> } {
  const now = opts.now ?? Date.now;
  const stopping = new AbortController();
  const report: LeaseKeeperReport = { renewals: 0 };
  const loop = (async () => {
    let retryMs = FIRST_RETRY_MS;
    while (!stopping.signal.aborted) {
      let waitMs: number;
      try {
        const until = await leaseEverywhere(lease, stopping.signal);
        report.validUntil = until.toISOString();
        report.renewals++;
        report.error = undefined;
        retryMs = FIRST_RETRY_MS;
        waitMs = renewAfterMs(until.getTime() - now());
      } catch (err) {
        if (stopping.signal.aborted) return;
        report.error = (err as Error).message;
        if (err instanceof StorageError && err.kind === 'lease-refused') {
          log().warn({ err, lsn: lease.lsn }, 'LSN lease refused; not renewing it');
          return;
        }
        log().warn({ err, lsn: lease.lsn, retryMs }, 'LSN lease failed; retrying');
        waitMs = retryMs;
        retryMs = Math.min(MAX_RETRY_MS, retryMs * 1.5);
      }
      await sleep(waitMs, undefined, { signal: stopping.signal }).catch(() => undefined);
    }
  })();
  return {
    async stop() {
      stopping.abort();
      await loop;
      return report;
    },
  };
}
