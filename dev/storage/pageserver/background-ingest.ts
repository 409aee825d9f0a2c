/**
 * Neon's pageserver ingests a timeline's WAL as the safekeepers receive it, so a compute that
 * starts again later gets its base backup at once. The dev pageserver replays WAL into a new
 * image instead, which takes seconds; doing it on request put those seconds on the next
 * compute's cold start. So once a primary compute has started on a timeline, the pageserver
 * watches the safekeepers, and when no compute is connected any more and the quorum flush LSN
 * holds still for one poll, it builds the image at that LSN in the background: the LSN the next
 * start will ask for.
 */
import { formatLsn, parseLsn } from '../../../model/lsn';
import type { TimelineState } from './service-types';
import type { TimelineMeta } from './timeline-store';

/** How long a timeline whose base backup was served waits for its compute to connect before the watch ends. */
const INGEST_GRACE_MS = 10 * 60 * 1000;

export interface BackgroundIngestDeps {
  /** Poll interval; 0 turns background ingest off, so every new LSN is replayed on request. */
  pollMs: number;
  safekeeperCount: number;
  timeline(tenantId: string, timelineId: string): Promise<TimelineMeta | undefined>;
  state(meta: TimelineMeta): Promise<TimelineState>;
  buildImage(meta: TimelineMeta, lsn: bigint): Promise<void>;
  log(line: string): void;
}

interface Watched {
  tenantId: string;
  timelineId: string;
  since: number;
  sawCompute: boolean;
  /** The quorum flush LSN seen at the last poll: an image is built once it holds still. */
  lastQuorum?: bigint;
}

export class BackgroundIngest {
  /** Timelines with a primary compute since their newest image. */
  private readonly watched = new Map<string, Watched>();
  private timer: NodeJS.Timeout | undefined;
  private round: Promise<void> = Promise.resolve();
  private closing = false;

  constructor(private readonly deps: BackgroundIngestDeps) {}

  watch(tenantId: string, timelineId: string): void {
    if (this.deps.pollMs <= 0 || this.closing || this.deps.safekeeperCount === 0) return;
    this.watched.set(`${tenantId}/${timelineId}`, { tenantId, timelineId, since: Date.now(), sawCompute: false });
    this.timer ??= setInterval(() => {
      // One round at a time; a slow replay simply delays the next poll.
      this.round = this.round.then(() => this.pollOnce());
    }, this.deps.pollMs).unref();
  }

  async close(): Promise<void> {
    this.closing = true;
    if (this.timer) clearInterval(this.timer);
    await this.round;
  }

  private async pollOnce(): Promise<void> {
    for (const [key, watched] of [...this.watched]) {
      if (this.closing) return;
      try {
        const meta = await this.deps.timeline(watched.tenantId, watched.timelineId);
        if (!meta) {
          this.watched.delete(key);
          continue;
        }
        const s = await this.deps.state(meta);
        if (s.flushes.some((f) => f.computeConnected)) {
          watched.sawCompute = true;
          watched.lastQuorum = undefined;
          continue;
        }
        const newest = parseLsn(s.images[s.images.length - 1]!.lsn);
        if (s.lastRecordLsn <= newest) {
          // Nothing new: done once the compute has come and gone (or never came within the grace).
          if (watched.sawCompute || Date.now() - watched.since > INGEST_GRACE_MS) this.watched.delete(key);
          continue;
        }
        if (watched.lastQuorum !== s.lastRecordLsn) {
          watched.lastQuorum = s.lastRecordLsn;
          continue;
        }
        const started = Date.now();
        await this.deps.buildImage(meta, s.lastRecordLsn);
        this.watched.delete(key);
        this.deps.log(`ingested ${key} up to ${formatLsn(s.lastRecordLsn)} in ${Date.now() - started} ms`);
      } catch (err) {
        // Left in the watch: the next round tries again; a base backup request would too.
        this.deps.log(`background ingest of ${key} failed: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
    if (this.watched.size === 0 && this.timer) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
  }
}
