import { getMaxListeners, setMaxListeners } from 'node:events';
import { readFile, stat } from 'node:fs/promises';
import { DeleteObjectsCommand, type S3Client } from '@aws-sdk/client-s3';
import type { StepContext } from '../../common/activity-context';
import { AlreadyThere } from './upload-already-there';
import { FileChangedError, walkDataDirectory, type LocalFile } from './upload-files';
import { UploadJournal } from './upload-journal';
import { MultipartUploads } from './upload-multipart';
import { initialProgress, previousProgress, summary, UploadHeartbeat, type UploadProgress } from './upload-progress';
import { listWithEtags, putFromMemory, putStreamed, RequestSlots, type UploadContext } from './upload-s3';

export { walkDataDirectory } from './upload-files';
export { DEFAULT_PART_SIZE, multipartEtag } from './upload-multipart';
export { initialProgress, type MultipartState, type UploadProgress } from './upload-progress';
export { SHA256_METADATA_KEY } from './upload-s3';

/**
 * Uploads a stopped Postgres data directory, one object per file, to `<keyPrefix>/<relative path>`.
 *
 * Every byte S3 receives is checked by it against a sha256 sent as the signed payload hash (the
 * SDK does not hash the body a second time), and every object carries its sha256 as metadata. A
 * small file is read into memory and hashed. A larger one is hashed from disk first, then
 * streamed in a single PUT: one more read of a file the page cache holds, instead of a body S3
 * could not check. A file at or above the multipart threshold goes up in parts, each read once
 * and sent with its own payload hash. What was sent is journaled (see upload-journal.ts): the
 * object's ETag per file, the finished parts per multipart upload.
 *
 * Resumable at two levels:
 * - Files: a restarted upload lists the prefix (sizes and ETags, no request per object) and
 *   skips each file whose object has its size and the ETag the journal recorded for it. Only an
 *   object of the same size that the journal cannot vouch for costs more: a HEAD, and a re-read
 *   of the local file to compare its sha256 with the object's metadata. Anything else is sent.
 * - Parts: multipart uploads continue with the parts they have (from the journal, and from the
 *   heartbeat details the previous attempt left), sending only the missing parts of a half-sent
 *   file. An attempt can die after S3 completed its upload and before the journal recorded the
 *   file: the object is recognised by its ETag and kept. If S3 no longer has the upload, that
 *   file starts over once, with a warning.
 *
 * Objects under the prefix that match no local file (left by an earlier, different data
 * directory) are deleted at the end, so the prefix mirrors the directory exactly.
 *
 * At most `concurrency` requests are in flight, whatever the mix. Memory stays below about
 * concurrency x (partSize + the in-memory limit): a request holds one part, one small file, or
 * a stream's buffer, and each of the `concurrency` file workers at most one small file.
 */

const MiB = 1024 * 1024;
/**
 * Files above this go up in parts, as `aws s3 sync` does: the parts of a large relation segment
 * (up to 1 GiB) travel in parallel, and an upload interrupted half way keeps the parts already
 * sent. Smaller files are one request each. (A stand-in like s3rver pays a second pass for a
 * multipart upload, when it concatenates the parts; real S3 does not.)
 */
export const DEFAULT_MULTIPART_THRESHOLD = 64 * MiB;
/** Files below this are sent from memory (and get their sha256 as metadata). */
const IN_MEMORY_LIMIT = 8 * MiB;

export interface UploadResult extends Omit<UploadProgress, 'inFlight'> {
  skippedSymlinks: string[];
  removedStaleObjects: number;
  /** Objects of the same size that the journal could not vouch for, compared by content. */
  verifiedByContent: number;
  /** Progress the previous attempt reported in its last heartbeat, if this one resumed it. */
  resumedFrom?: Omit<UploadProgress, 'inFlight'>;
}

export interface UploadOptions {
  s3: S3Client;
  bucket: string;
  dataDir: string;
  /** Objects are written to `<keyPrefix>/<relative path>`. */
  keyPrefix: string;
  ctx: StepContext;
  /** Requests in flight at once (PUTs of files and parts of large ones); Neon uses 10. */
  concurrency?: number;
  partSize?: number;
  /** Files at least this large go up as multipart uploads (their parts survive an interruption). */
  multipartThreshold?: number;
  /** Where the journal of what was sent lives (see upload-journal.ts); without one, a resume checks by content. */
  journalFile?: string;
  /**
   * Heartbeats at most this often (default 1 s). Each one is encoded (and encrypted) by the SDK
   * whatever Temporal's own throttling then sends, so one per file or part would cost the worker
   * seconds of CPU on a large upload; finished parts are in the journal at once anyway.
   */
  heartbeatIntervalMs?: number;
}

export async function uploadDataDirectory(opts: UploadOptions): Promise<UploadResult> {
  const concurrency = Math.max(1, opts.concurrency ?? 10);
  const multipartThreshold = Math.max(1, opts.multipartThreshold ?? DEFAULT_MULTIPART_THRESHOLD);
  const inMemoryLimit = Math.min(multipartThreshold, IN_MEMORY_LIMIT);
  const ctx = opts.ctx;
  const { signal } = ctx;
  // Every in-flight request listens on the one cancellation signal.
  setMaxListeners(Math.max(getMaxListeners(signal), concurrency * 2 + 10), signal);
  const previous = previousProgress(ctx.previousDetails);
  const fromHeartbeat = new Map((previous?.inFlight ?? []).map((m) => [m.key, m]));

  const { files, symlinks } = await walkDataDirectory(opts.dataDir);
  const remote = await listWithEtags(opts.s3, opts.bucket, `${opts.keyPrefix}/`, signal);
  const journal = UploadJournal.open(opts.journalFile);

  const progress = initialProgress(files.length, files.reduce((n, f) => n + f.size, 0));
  const heartbeat = new UploadHeartbeat(ctx, progress, opts.heartbeatIntervalMs ?? 1_000);
  const u: UploadContext = { s3: opts.s3, bucket: opts.bucket, signal, ctx, requests: new RequestSlots(concurrency, signal), journal, heartbeat };
  const multipart = new MultipartUploads(u, opts.partSize, fromHeartbeat);
  const alreadyThere = new AlreadyThere(u, remote, multipart);

  const uploadOne = async (f: LocalFile) => {
    const key = `${opts.keyPrefix}/${f.rel}`;
    if (await alreadyThere.check(key, f)) {
      progress.skippedFiles++;
      progress.skippedBytes += f.size;
    } else {
      let sent: { etag: string; sha256?: string; completedEarlier?: boolean };
      if (f.size < inMemoryLimit) {
        const content = await readFile(f.abs);
        if (content.length !== f.size) throw new FileChangedError(f.abs);
        sent = await putFromMemory(u, f, key, content);
      } else if (f.size < multipartThreshold) {
        sent = await putStreamed(u, f, key);
      } else {
        sent = await multipart.upload(f, key);
      }
      const after = await stat(f.abs);
      if (after.size !== f.size || after.mtimeMs !== f.mtimeMs) throw new FileChangedError(f.abs);
      const { completedEarlier, ...object } = sent;
      journal.recordFile({ key, size: f.size, mtimeMs: f.mtimeMs, ...object });
      if (completedEarlier) {
        progress.skippedFiles++;
        progress.skippedBytes += f.size;
      } else {
        progress.uploadedFiles++;
        progress.uploadedBytes += f.size;
      }
    }
    progress.filesDone++;
    progress.bytesDone += f.size;
    heartbeat.beat();
  };

  try {
    let next = 0;
    let failure: unknown;
    // File workers only prepare (read, check); the request semaphore bounds the sending.
    const worker = async () => {
      while (failure === undefined && !signal.aborted && next < files.length) {
        const f = files[next++]!;
        try {
          await uploadOne(f);
        } catch (err) {
          failure ??= err;
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(concurrency, Math.max(1, files.length)) }, worker));
    if (signal.aborted) throw signal.reason;
    if (failure !== undefined) throw failure;

    const wanted = new Set(files.map((f) => `${opts.keyPrefix}/${f.rel}`));
    const stale = [...remote.keys()].filter((k) => !wanted.has(k));
    for (let i = 0; i < stale.length; i += 1000) {
      const batch = stale.slice(i, i + 1000);
      await opts.s3.send(new DeleteObjectsCommand({ Bucket: opts.bucket, Delete: { Objects: batch.map((Key) => ({ Key })), Quiet: true } }), { abortSignal: signal });
    }
    heartbeat.beat(true);
    return {
      ...summary(progress),
      skippedSymlinks: symlinks,
      removedStaleObjects: stale.length,
      verifiedByContent: alreadyThere.verifiedByContent,
      resumedFrom: previous ? summary(previous) : undefined,
    };
  } finally {
    heartbeat.stop();
    journal.close();
  }
}
