import { decideSafekeepersSynced, quorumSize, type SafekeeperAnswer, type SyncDecision } from './quorum';
import { queryTimelineStatus, type SafekeeperLsns } from './timeline-status';

/**
 * The I/O half of the fast sync check: ask every safekeeper at once, stop as soon as a quorum has
 * answered (or can no longer answer), and apply the pure rule to what came back.
 */

export const DEFAULT_SYNC_CHECK_TIMEOUT_MS = 100;

export type AskSafekeeper = (address: string, opts: { timeoutMs: number; signal: AbortSignal }) => Promise<SafekeeperLsns | null>;

export interface CheckSafekeepersOptions {
  /** The spec's safekeeper_connstrings (`host:port`). */
  safekeepers: string[];
  tenantId: string;
  timelineId: string;
  token?: string;
  /** Per safekeeper; default 100 ms as in compute_ctl. */
  timeoutMs?: number;
  signal?: AbortSignal;
  /** How one safekeeper is asked; TIMELINE_STATUS over libpq unless replaced. */
  ask?: AskSafekeeper;
}

export type SyncCheckResult = SyncDecision & { answers: SafekeeperAnswer[]; elapsedMs: number };

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export async function checkSafekeepersSynced(opts: CheckSafekeepersOptions): Promise<SyncCheckResult> {
  const started = performance.now();
  const total = opts.safekeepers.length;
  const quorum = quorumSize(total);
  const timeoutMs = opts.timeoutMs ?? DEFAULT_SYNC_CHECK_TIMEOUT_MS;
  const ask: AskSafekeeper =
    opts.ask ??
    ((address, o) =>
      queryTimelineStatus(address, opts.tenantId, opts.timelineId, { timeoutMs: o.timeoutMs, signal: o.signal, ...(opts.token !== undefined ? { token: opts.token } : {}) }));

  // Stragglers are cancelled once the outcome is known, so no connection outlives the check.
  const stragglers = new AbortController();
  const onAbort = () => stragglers.abort();
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  const answers: SafekeeperAnswer[] = [];
  try {
    await new Promise<void>((resolve) => {
      let responded = 0;
      let failed = 0;
      const settle = () => {
        if (responded >= quorum || failed > total - quorum || answers.length === total) resolve();
      };
      for (const address of opts.safekeepers) {
        const timeout = AbortSignal.timeout(timeoutMs);
        const signal = AbortSignal.any([stragglers.signal, timeout]);
        // The deadline is enforced here too, whatever `ask` does with it.
        const deadline = new Promise<never>((_resolve, reject) => {
          signal.addEventListener('abort', () => reject(new Error(timeout.aborted ? `no answer within ${timeoutMs} ms` : 'cancelled')), { once: true });
        });
        deadline.catch(() => undefined);
        Promise.race([ask(address, { timeoutMs, signal }), deadline]).then(
          (lsns) => {
            if (stragglers.signal.aborted) return;
            responded++;
            answers.push(
              lsns === null ? { safekeeper: address, outcome: 'not-found' } : { safekeeper: address, outcome: 'status', commitLsn: lsns.commit_lsn, flushLsn: lsns.flush_lsn },
            );
            settle();
          },
          (err: unknown) => {
            if (stragglers.signal.aborted) return;
            failed++;
            answers.push({ safekeeper: address, outcome: 'error', error: errorText(err) });
            settle();
          },
        );
      }
      stragglers.signal.addEventListener('abort', () => resolve(), { once: true });
    });
  } finally {
    stragglers.abort();
    opts.signal?.removeEventListener('abort', onAbort);
  }
  if (opts.signal?.aborted) {
    return { synced: false, reason: 'check aborted', quorum, responded: answers.filter((a) => a.outcome !== 'error').length, answers, elapsedMs: performance.now() - started };
  }
  return { ...decideSafekeepersSynced(total, answers), answers, elapsedMs: performance.now() - started };
}
