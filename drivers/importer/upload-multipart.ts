/**
 * Multipart uploads of large files: parts read once and sent in parallel (within the upload's
 * bound on requests), each with its own payload hash and journaled as it finishes. An earlier
 * attempt's upload of the same file continues with the parts it has (from the journal and from
 * its last heartbeat); if S3 no longer has it, the file starts over once, with a warning.
 */
import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import { CompleteMultipartUploadCommand, CreateMultipartUploadCommand, HeadObjectCommand, UploadPartCommand } from '@aws-sdk/client-s3';
import { unquoteEtag } from '../s3/objects';
import { hashOfFile, type LocalFile } from './upload-files';
import type { MultipartState } from './upload-progress';
import { isS3Response, withPayloadHash, type UploadContext } from './upload-s3';

const MiB = 1024 * 1024;
const MIN_PART_SIZE = 5 * MiB;
const MAX_PARTS = 10_000;
/** Fewer, larger parts: fewer requests per segment; memory stays concurrency x partSize. */
export const DEFAULT_PART_SIZE = 32 * MiB;

export interface MultipartResult {
  etag: string;
  /** S3 had completed an earlier attempt's upload of this file: nothing was sent. */
  completedEarlier?: boolean;
}

/**
 * The ETag S3 gives an object completed from these parts: the MD5 of the parts' binary MD5s,
 * then "-" and the part count. Undefined when a part's ETag is no MD5 (SSE-KMS, for one).
 */
export function multipartEtag(parts: [number, string][]): string | undefined {
  const sorted = [...parts].sort((a, b) => a[0] - b[0]);
  const hash = createHash('md5');
  for (const [, etag] of sorted) {
    const hex = unquoteEtag(etag);
    if (!/^[0-9a-f]{32}$/.test(hex)) return undefined;
    hash.update(Buffer.from(hex, 'hex'));
  }
  return `${hash.digest('hex')}-${sorted.length}`;
}

/** One file's multipart upload under way. */
interface Attempt {
  f: LocalFile;
  key: string;
  state: MultipartState;
  /** The earlier attempt's upload this one continues, if any. */
  earlier: MultipartState | undefined;
  partSize: number;
  /** The file's part numbers already sent. */
  done: Set<number>;
}

export class MultipartUploads {
  private readonly partSize: number;

  constructor(
    private readonly u: UploadContext,
    partSize: number | undefined,
    /** The unfinished uploads the previous attempt's last heartbeat listed, by key; each is used once. */
    private readonly fromHeartbeat: Map<string, MultipartState>,
  ) {
    this.partSize = Math.max(MIN_PART_SIZE, partSize ?? DEFAULT_PART_SIZE);
  }

  private partSizeFor(f: LocalFile): number {
    return Math.max(this.partSize, Math.ceil(f.size / MAX_PARTS));
  }

  /** The earlier attempt's multipart upload of this file (journal and last heartbeat together), if its parts can be reused. */
  earlierUpload(f: LocalFile, key: string): MultipartState | undefined {
    const filePartSize = this.partSizeFor(f);
    const fits = (m: { size: number; mtimeMs: number; partSize: number } | undefined) =>
      m !== undefined && m.size === f.size && m.mtimeMs === f.mtimeMs && m.partSize === filePartSize;
    const journaled = this.u.journal.multipart(key);
    const beat = this.fromHeartbeat.get(key);
    const candidates: MultipartState[] = [];
    if (fits(journaled)) candidates.push({ key, uploadId: journaled!.uploadId, size: f.size, mtimeMs: f.mtimeMs, partSize: filePartSize, parts: [...journaled!.parts] });
    if (beat && fits(beat) && Array.isArray(beat.parts)) {
      const same = candidates.find((c) => c.uploadId === beat.uploadId);
      if (same) {
        const known = new Map(same.parts);
        for (const [n, etag] of beat.parts) if (!known.has(n)) known.set(n, etag);
        same.parts = [...known];
      } else {
        candidates.push({ ...beat, parts: [...beat.parts] });
      }
    }
    return candidates.sort((a, b) => b.parts.length - a.parts.length)[0];
  }

  /**
   * Whether `etag`, of an object with this file's size, is what completing `upload` gives: an
   * attempt can die after S3 completed its upload and before the journal heard of it. Only an
   * upload with every part sent qualifies. S3's multipart ETag follows from the parts' ETags;
   * a server that gives whole-object MD5s as ETags (s3rver) is answered by the file's MD5.
   */
  async isCompletionOf(upload: MultipartState | undefined, f: LocalFile, etag: string): Promise<boolean> {
    if (!upload || upload.parts.length !== Math.ceil(f.size / upload.partSize)) return false;
    if (etag === multipartEtag(upload.parts)) return true;
    return /^[0-9a-f]{32}$/.test(etag) && etag === (await hashOfFile(f.abs, 'md5'));
  }

  async upload(f: LocalFile, key: string, reuse = true): Promise<MultipartResult> {
    const { progress, inFlight } = this.u.heartbeat;
    const earlier = reuse ? this.earlierUpload(f, key) : undefined;
    this.fromHeartbeat.delete(key);
    const a = await this.begin(f, key, earlier);
    inFlight.set(key, a.state);
    for (const n of a.done) progress.bytesDone += partBytes(a, n);
    // An earlier attempt's upload that fails to continue (S3 dropped it: expired by a lifecycle
    // rule, aborted, or its parts are not what was recorded) is started over once, from a fresh
    // multipart upload; the SDK has already retried anything transient.
    const continuingEarlier = () => earlier !== undefined && a.state.uploadId === earlier.uploadId && !this.u.signal.aborted;

    const partsFailure = await this.sendParts(a);
    if (partsFailure !== undefined) {
      // Only S3's answer can say the upload is gone; a local read error would fail the same way again.
      if (continuingEarlier() && isS3Response(partsFailure)) return this.startOver(a, partsFailure);
      throw partsFailure;
    }
    let etag: string;
    try {
      etag = await this.complete(a);
    } catch (err) {
      if (continuingEarlier()) return this.startOver(a, err);
      throw err;
    }
    this.forget(a);
    return { etag };
  }

  /** Continues the earlier upload, or creates (and journals) a new one. */
  private async begin(f: LocalFile, key: string, earlier: MultipartState | undefined): Promise<Attempt> {
    const { s3, bucket, signal, requests, journal, heartbeat } = this.u;
    const filePartSize = this.partSizeFor(f);
    let state: MultipartState;
    if (earlier) {
      state = { ...earlier, parts: [...earlier.parts] };
      heartbeat.progress.resumedParts += state.parts.length;
    } else {
      const created = await requests.send(() => s3.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: key }), { abortSignal: signal }));
      if (!created.UploadId) throw new Error(`CreateMultipartUpload for ${key} returned no UploadId`);
      state = { key, uploadId: created.UploadId, size: f.size, mtimeMs: f.mtimeMs, partSize: filePartSize, parts: [] };
      journal.recordMultipartStart({ key, uploadId: state.uploadId, size: f.size, mtimeMs: f.mtimeMs, partSize: filePartSize });
    }
    return { f, key, state, earlier, partSize: filePartSize, done: new Set(state.parts.map(([n]) => n)) };
  }

  /** Sends the missing parts, at most as many at once as there are free request slots; returns the first failure. */
  private async sendParts(a: Attempt): Promise<unknown> {
    const { s3, bucket, signal, requests, journal, heartbeat } = this.u;
    const { f, key, state } = a;
    const partCount = Math.ceil(f.size / a.partSize);
    let partsFailure: unknown;
    const handle = await open(f.abs, 'r');
    try {
      const pending: Promise<void>[] = [];
      let failure: unknown;
      for (let n = 1; n <= partCount && failure === undefined; n++) {
        if (a.done.has(n)) continue;
        await requests.acquire();
        if (signal.aborted || failure !== undefined) {
          requests.release();
          break;
        }
        const partNumber = n;
        pending.push(
          (async () => {
            try {
              const length = partBytes(a, partNumber);
              const buffer = Buffer.allocUnsafe(length);
              const { bytesRead } = await handle.read(buffer, 0, length, (partNumber - 1) * a.partSize);
              if (bytesRead !== length) throw new Error(`${f.abs} is shorter than it was; is the scratch Postgres still running?`);
              const partHash = createHash('sha256').update(buffer).digest('hex');
              const out = await s3.send(
                withPayloadHash(new UploadPartCommand({ Bucket: bucket, Key: key, UploadId: state.uploadId, PartNumber: partNumber, Body: buffer, ContentLength: length }), partHash),
                { abortSignal: signal },
              );
              if (!out.ETag) throw new Error(`UploadPart ${partNumber} of ${key} returned no ETag`);
              state.parts.push([partNumber, out.ETag]);
              journal.recordPart({ key, uploadId: state.uploadId, part: partNumber, etag: out.ETag });
              heartbeat.progress.bytesDone += length;
              heartbeat.beat();
            } catch (err) {
              failure ??= err;
            } finally {
              requests.release();
            }
          })(),
        );
      }
      await Promise.all(pending);
      if (signal.aborted) throw signal.reason;
      if (failure !== undefined) throw failure;
    } catch (err) {
      partsFailure = err;
    } finally {
      await handle.close();
    }
    return partsFailure;
  }

  private async complete(a: Attempt): Promise<string> {
    const { s3, bucket, signal, requests } = this.u;
    const parts = [...a.state.parts].sort((x, y) => x[0] - y[0]).map(([PartNumber, ETag]) => ({ PartNumber, ETag }));
    const out = await requests.send(() =>
      s3.send(new CompleteMultipartUploadCommand({ Bucket: bucket, Key: a.key, UploadId: a.state.uploadId, MultipartUpload: { Parts: parts } }), { abortSignal: signal }),
    );
    return unquoteEtag(out.ETag);
  }

  /** The upload is no longer in flight: its parts leave the progress (the file's size is counted when it is done). */
  private forget(a: Attempt): void {
    this.u.heartbeat.inFlight.delete(a.key);
    for (const [n] of a.state.parts) this.u.heartbeat.progress.bytesDone -= partBytes(a, n);
  }

  /** The earlier upload could not be continued: kept if S3 had in fact completed it, else the whole file goes again. */
  private async startOver(a: Attempt, err: unknown): Promise<MultipartResult> {
    const { s3, bucket, signal, requests, ctx, heartbeat } = this.u;
    const { f, key, state, earlier } = a;
    const head = await requests.send(() => s3.send(new HeadObjectCommand({ Bucket: bucket, Key: key }), { abortSignal: signal })).catch(() => undefined);
    const etag = unquoteEtag(head?.ETag);
    if (head?.ContentLength === f.size && (await this.isCompletionOf(state, f, etag))) {
      this.forget(a);
      return { etag, completedEarlier: true };
    }
    ctx.warn(`The earlier attempt's multipart upload of ${key} could not be continued; sending the whole file again`, {
      key,
      uploadId: state.uploadId,
      partsKept: earlier!.parts.length,
      error: (err as Error).message,
    });
    this.forget(a);
    heartbeat.progress.resumedParts -= earlier!.parts.length;
    heartbeat.progress.restartedFiles++;
    return this.upload(f, key, false);
  }
}

/** The size of part `n` of the file. */
function partBytes(a: Attempt, n: number): number {
  return Math.min(a.partSize, a.f.size - (n - 1) * a.partSize);
}
