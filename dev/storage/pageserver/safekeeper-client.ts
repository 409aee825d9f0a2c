/**
 * The pageserver's view of the safekeepers: each one's flush_lsn for a timeline (HTTP status, 404 =
 * unknown timeline), the quorum flush LSN, and WAL byte ranges through the dev WAL route.
 */
import { formatLsn, isLsn, parseLsn } from '../../../model/lsn';

export interface SafekeeperFlush {
  url: string;
  flushLsn: bigint;
  /** Whether a compute's walproposer is connected to it (Neon's `walreceivers`). */
  computeConnected: boolean;
}

export class WalSourceError extends Error {
  override name = 'WalSourceError';
}

export class SafekeeperClient {
  constructor(
    private readonly urls: string[],
    private readonly authToken: string | undefined,
    private readonly log: (line: string) => void,
    private readonly timeoutMs = 2_000,
  ) {}

  get count(): number {
    return this.urls.length;
  }

  private headers(): Record<string, string> {
    return this.authToken ? { authorization: `Bearer ${this.authToken}` } : {};
  }

  /** flush_lsn of every safekeeper that knows the timeline; unreachable ones are logged and left out. */
  async flushLsns(tenantId: string, timelineId: string): Promise<SafekeeperFlush[]> {
    const answers = await Promise.all(
      this.urls.map(async (url): Promise<SafekeeperFlush | undefined> => {
        const target = `${url}/v1/tenant/${tenantId}/timeline/${timelineId}`;
        try {
          const res = await fetch(target, { headers: this.headers(), signal: AbortSignal.timeout(this.timeoutMs) });
          const text = await res.text();
          if (res.status === 404) return undefined;
          if (res.status !== 200) {
            this.log(`safekeeper ${url} answered ${res.status} for ${tenantId}/${timelineId}: ${text.slice(0, 200)}`);
            return undefined;
          }
          const status = JSON.parse(text) as { flush_lsn?: unknown; walreceivers?: unknown };
          const flush = status.flush_lsn;
          if (typeof flush !== 'string' || !isLsn(flush)) {
            this.log(`safekeeper ${url} sent no valid flush_lsn for ${tenantId}/${timelineId}`);
            return undefined;
          }
          return { url, flushLsn: parseLsn(flush), computeConnected: Array.isArray(status.walreceivers) && status.walreceivers.length > 0 };
        } catch (err) {
          this.log(`safekeeper ${url} unreachable: ${(err as Error).message}`);
          return undefined;
        }
      }),
    );
    return answers.filter((a): a is SafekeeperFlush => a !== undefined);
  }

  /** The (n/2+1)-th highest flush_lsn (n = configured safekeepers), or undefined without a quorum. */
  quorumFlush(flushes: SafekeeperFlush[]): bigint | undefined {
    const quorum = Math.floor(this.urls.length / 2) + 1;
    const sorted = flushes.map((f) => f.flushLsn).sort((a, b) => (a > b ? -1 : a < b ? 1 : 0));
    return sorted.length >= quorum ? sorted[quorum - 1] : undefined;
  }

  /**
   * Streams the WAL bytes [start, end) from the first safekeeper (of those given) that serves them
   * completely, handing each chunk with its LSN to `sink`.
   */
  async fetchWal(
    candidates: SafekeeperFlush[],
    tenantId: string,
    timelineId: string,
    start: bigint,
    end: bigint,
    sink: (lsn: bigint, chunk: Buffer) => Promise<void>,
  ): Promise<void> {
    const problems: string[] = [];
    for (const sk of candidates) {
      const url = `${sk.url}/v1/tenant/${tenantId}/timeline/${timelineId}/wal?start=${formatLsn(start)}&end=${formatLsn(end)}`;
      let at = start;
      try {
        const res = await fetch(url, { headers: this.headers(), signal: AbortSignal.timeout(120_000) });
        if (res.status !== 200 || !res.body) {
          problems.push(`${sk.url}: HTTP ${res.status} ${(await res.text()).slice(0, 200)}`);
          continue;
        }
        for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
          const buf = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
          if (at + BigInt(buf.length) > end) throw new WalSourceError(`sent more than the ${end - start} bytes asked for`);
          await sink(at, buf);
          at += BigInt(buf.length);
        }
        if (at !== end) throw new WalSourceError(`sent ${at - start} of ${end - start} bytes`);
        return;
      } catch (err) {
        // A partial answer was already written; the next candidate rewrites the whole range.
        problems.push(`${sk.url}: ${(err as Error).message}`);
      }
    }
    throw new WalSourceError(
      `no safekeeper could serve WAL ${formatLsn(start)}..${formatLsn(end)} of ${tenantId}/${timelineId}` +
        (problems.length > 0 ? ` (${problems.join('; ')})` : ' (no safekeeper has flushed that far)'),
    );
  }
}
