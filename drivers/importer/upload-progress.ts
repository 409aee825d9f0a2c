/**
 * An upload's progress and its heartbeats: the counts the import status shows, plus the
 * unfinished multipart uploads, so the next attempt can continue them.
 */
import { every, type StepContext } from '../../common/activity-context';

/** An unfinished multipart upload, as recorded in the heartbeat details. */
export interface MultipartState {
  key: string;
  uploadId: string;
  size: number;
  /** The local file's mtime: parts are only reused for the same file. */
  mtimeMs: number;
  partSize: number;
  /** Finished parts: [part number, ETag]. */
  parts: [number, string][];
}

export interface UploadProgress {
  phase: 'upload';
  filesTotal: number;
  bytesTotal: number;
  filesDone: number;
  /** Bytes of finished files plus what is already sent of files still in flight. */
  bytesDone: number;
  uploadedFiles: number;
  uploadedBytes: number;
  skippedFiles: number;
  skippedBytes: number;
  /** Parts reused from the previous attempt's unfinished multipart uploads. */
  resumedParts: number;
  /** Half-sent files whose earlier multipart upload S3 no longer had, sent again whole from a new one. */
  restartedFiles: number;
  inFlight: MultipartState[];
}

/** An upload's progress before anything was sent. */
export function initialProgress(filesTotal: number, bytesTotal: number): UploadProgress {
  return {
    phase: 'upload',
    filesTotal,
    bytesTotal,
    filesDone: 0,
    bytesDone: 0,
    uploadedFiles: 0,
    uploadedBytes: 0,
    skippedFiles: 0,
    skippedBytes: 0,
    resumedParts: 0,
    restartedFiles: 0,
    inFlight: [],
  };
}

export function summary(p: UploadProgress): Omit<UploadProgress, 'inFlight'> {
  const { inFlight: _inFlight, ...rest } = p;
  return rest;
}

/** The progress the previous attempt's last heartbeat carried, if it was an upload's. */
export function previousProgress(v: unknown): UploadProgress | undefined {
  if (typeof v !== 'object' || v === null || (v as UploadProgress).phase !== 'upload') return undefined;
  const p = v as UploadProgress;
  return { ...p, inFlight: Array.isArray(p.inFlight) ? p.inFlight : [] };
}

/**
 * Heartbeats at most every `intervalMs` when asked (each one is encoded and encrypted by the SDK,
 * so one per file or part would cost seconds of CPU on a large upload), and every 5 s regardless
 * until stopped, so a long request does not look like a dead worker.
 */
export class UploadHeartbeat {
  /** Multipart uploads under way, by key. */
  readonly inFlight = new Map<string, MultipartState>();
  private last = 0;
  private readonly stopTimer: () => void;

  constructor(
    private readonly ctx: StepContext,
    readonly progress: UploadProgress,
    private readonly intervalMs: number,
  ) {
    this.stopTimer = every(5_000, () => this.beat(true));
  }

  beat(force = false): void {
    const now = Date.now();
    if (!force && now - this.last < this.intervalMs) return;
    this.last = now;
    this.ctx.heartbeat({ ...this.progress, inFlight: [...this.inFlight.values()].map((m) => ({ ...m, parts: [...m.parts] })) });
  }

  stop(): void {
    this.stopTimer();
  }
}
