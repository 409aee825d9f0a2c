import { createHash } from 'node:crypto';
import { getMaxListeners, setMaxListeners } from 'node:events';
import { createReadStream } from 'node:fs';
import { lstat, open, readdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { Transform } from 'node:stream';
import {
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectsCommand,
  HeadObjectCommand,
  PutObjectCommand,
  UploadPartCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { listObjects, unquoteEtag } from '../../drivers/s3/objects';
import { every, type StepContext } from '../../common/activity-context';
import { UploadJournal } from './upload-journal';

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

export const SHA256_METADATA_KEY = 'sha256';
const MiB = 1024 * 1024;
const MIN_PART_SIZE = 5 * MiB;
const MAX_PARTS = 10_000;
/**
 * Files above this go up in parts, as `aws s3 sync` does: the parts of a large relation segment
 * (up to 1 GiB) travel in parallel, and an upload interrupted half way keeps the parts already
 * sent. Smaller files are one request each. (A stand-in like s3rver pays a second pass for a
 * multipart upload, when it concatenates the parts; real S3 does not.)
 */
export const DEFAULT_MULTIPART_THRESHOLD = 64 * MiB;
/** Fewer, larger parts: fewer requests per segment; memory stays concurrency x partSize. */
export const DEFAULT_PART_SIZE = 32 * MiB;
/** Files below this are sent from memory (and get their sha256 as metadata). */
const IN_MEMORY_LIMIT = 8 * MiB;
/** A streamed PUT cannot be replayed by the SDK's retries; it is retried here, from the start of the file. */
const STREAM_ATTEMPTS = 3;

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

interface LocalFile {
  rel: string;
  abs: string;
  size: number;
  mtimeMs: number;
}

interface RemoteObject {
  size: number;
  etag: string;
}

/** Regular files below `root`, sorted by relative path; symlinks are reported, not followed. */
export async function walkDataDirectory(root: string): Promise<{ files: LocalFile[]; symlinks: string[] }> {
  const files: LocalFile[] = [];
  const symlinks: string[] = [];
  const visit = async (dir: string, relDir: string) => {
    for (const entry of await readdir(dir, { withFileTypes: true })) {
      const abs = path.join(dir, entry.name);
      const rel = relDir ? `${relDir}/${entry.name}` : entry.name;
      if (entry.isSymbolicLink()) symlinks.push(rel);
      else if (entry.isDirectory()) await visit(abs, rel);
      else if (entry.isFile()) {
        const st = await lstat(abs);
        files.push({ rel, abs, size: st.size, mtimeMs: st.mtimeMs });
      }
    }
  };
  await visit(root, '');
  files.sort((a, b) => (a.rel < b.rel ? -1 : a.rel > b.rel ? 1 : 0));
  return { files, symlinks: symlinks.sort() };
}

/** Every object under `prefix` with its size and ETag. */
async function listWithEtags(s3: S3Client, bucket: string, prefix: string, signal: AbortSignal): Promise<Map<string, RemoteObject>> {
  const objects = new Map<string, RemoteObject>();
  for await (const o of listObjects(s3, bucket, prefix, signal)) objects.set(o.key, { size: o.size, etag: o.etag });
  return objects;
}

async function hashOfFile(file: string, algorithm: 'sha256' | 'md5'): Promise<string> {
  const hash = createHash(algorithm);
  for await (const chunk of createReadStream(file, { highWaterMark: MiB })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

function sha256OfFile(file: string): Promise<string> {
  return hashOfFile(file, 'sha256');
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

/**
 * Sends `command` with its payload hash already known: the signature uses it as is (the SDK
 * would otherwise hash the body again) and S3 refuses a body that does not match it.
 */
function withPayloadHash<C extends { middlewareStack: { add: (...args: never[]) => unknown } }>(command: C, sha256Hex: string): C {
  (command.middlewareStack as unknown as { add: (mw: unknown, opts: unknown) => void }).add(
    (next: (args: { request: { headers?: Record<string, string> } }) => Promise<unknown>) => (args: { request: { headers?: Record<string, string> } }) => {
      if (args.request.headers) args.request.headers['x-amz-content-sha256'] = sha256Hex;
      return next(args);
    },
    { step: 'build', name: 'precomputedPayloadHash' },
  );
  return command;
}

function previousProgress(v: unknown): UploadProgress | undefined {
  if (typeof v !== 'object' || v === null || (v as UploadProgress).phase !== 'upload') return undefined;
  const p = v as UploadProgress;
  return { ...p, inFlight: Array.isArray(p.inFlight) ? p.inFlight : [] };
}

/** An error S3 answered with (as the SDK raises it), as opposed to one from this side. */
function isS3Response(err: unknown): boolean {
  return typeof err === 'object' && err !== null && typeof (err as { $metadata?: unknown }).$metadata === 'object';
}

/** A counting semaphore: the bound on requests in flight. */
function semaphore(slots: number) {
  let free = slots;
  const waiting: (() => void)[] = [];
  return {
    async acquire(): Promise<void> {
      if (free > 0) {
        free--;
        return;
      }
      await new Promise<void>((resolve) => waiting.push(resolve));
    },
    release(): void {
      const next = waiting.shift();
      if (next) next();
      else free++;
    },
  };
}

function summary(p: UploadProgress): Omit<UploadProgress, 'inFlight'> {
  const { inFlight: _inFlight, ...rest } = p;
  return rest;
}

class FileChangedError extends Error {
  constructor(file: string) {
    super(`${file} changed while being uploaded; is the scratch Postgres still running?`);
  }
}

export async function uploadDataDirectory(opts: UploadOptions): Promise<UploadResult> {
  const concurrency = Math.max(1, opts.concurrency ?? 10);
  const partSize = Math.max(MIN_PART_SIZE, opts.partSize ?? DEFAULT_PART_SIZE);
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
  let verifiedByContent = 0;
  const inFlight = new Map<string, MultipartState>();
  const heartbeatIntervalMs = opts.heartbeatIntervalMs ?? 1_000;
  let lastHeartbeat = 0;
  const heartbeat = (force = false) => {
    const now = Date.now();
    if (!force && now - lastHeartbeat < heartbeatIntervalMs) return;
    lastHeartbeat = now;
    ctx.heartbeat({ ...progress, inFlight: [...inFlight.values()].map((m) => ({ ...m, parts: [...m.parts] })) });
  };
  const stopHeartbeat = every(5_000, () => heartbeat(true));
  const requests = semaphore(concurrency);
  const send = async <T>(fn: () => Promise<T>): Promise<T> => {
    await requests.acquire();
    try {
      if (signal.aborted) throw signal.reason;
      return await fn();
    } finally {
      requests.release();
    }
  };

  /** True if the object already under `key` is this file, intact. Reads the local file only when nothing cheaper can tell. */
  const alreadyThere = async (key: string, f: LocalFile): Promise<boolean> => {
    const object = remote.get(key);
    if (object?.size !== f.size) return false;
    const record = journal.file(key);
    const sameLocal = record !== undefined && record.size === f.size && record.mtimeMs === f.mtimeMs;
    if (sameLocal && record.etag !== '' && record.etag === object.etag) return true;
    if (await isCompletionOf(earlierUpload(f, key), f, object.etag)) {
      journal.recordFile({ key, size: f.size, mtimeMs: f.mtimeMs, etag: object.etag });
      return true;
    }
    let expected: string | undefined;
    try {
      const head = await send(() => opts.s3.send(new HeadObjectCommand({ Bucket: opts.bucket, Key: key }), { abortSignal: signal }));
      if (head.ContentLength !== f.size) return false;
      expected = head.Metadata?.[SHA256_METADATA_KEY];
    } catch (err) {
      if (signal.aborted) throw err;
      return false;
    }
    // Multipart objects carry no sha256 (it is known only once every part is read): sent again.
    if (!expected) return false;
    const local = sameLocal && record.sha256 ? record.sha256 : await sha256OfFile(f.abs);
    if (local !== expected) return false;
    verifiedByContent++;
    journal.recordFile({ key, size: f.size, mtimeMs: f.mtimeMs, etag: object.etag, sha256: local });
    return true;
  };

  const putFromMemory = async (f: LocalFile, key: string, content: Buffer): Promise<{ etag: string; sha256: string }> => {
    const sha256 = createHash('sha256').update(content).digest('hex');
    const out = await send(() =>
      opts.s3.send(
        withPayloadHash(new PutObjectCommand({ Bucket: opts.bucket, Key: key, Body: content, ContentLength: f.size, Metadata: { [SHA256_METADATA_KEY]: sha256 } }), sha256),
        { abortSignal: signal },
      ),
    );
    return { etag: unquoteEtag(out.ETag), sha256 };
  };

  /**
   * One PUT streaming the file, with its sha256 (taken first) as the payload hash: S3 refuses a
   * body that differs from what was hashed. The stream cannot be replayed, so retries start the
   * file over here.
   */
  const putStreamed = async (f: LocalFile, key: string): Promise<{ etag: string; sha256: string }> => {
    const sha256 = await sha256OfFile(f.abs);
    for (let attempt = 1; ; attempt++) {
      let sent = 0;
      const counter = new Transform({
        transform(chunk: Buffer, _enc, cb) {
          sent += chunk.length;
          progress.bytesDone += chunk.length;
          if (sent > f.size) cb(new FileChangedError(f.abs));
          else cb(null, chunk);
        },
      });
      const source = createReadStream(f.abs, { highWaterMark: MiB });
      source.on('error', (err) => counter.destroy(err));
      source.pipe(counter);
      try {
        const out = await send(() =>
          opts.s3.send(
            withPayloadHash(
              new PutObjectCommand({ Bucket: opts.bucket, Key: key, Body: counter, ContentLength: f.size, Metadata: { [SHA256_METADATA_KEY]: sha256 } }),
              sha256,
            ),
            { abortSignal: signal },
          ),
        );
        if (sent !== f.size) throw new FileChangedError(f.abs);
        progress.bytesDone -= sent;
        return { etag: unquoteEtag(out.ETag), sha256 };
      } catch (err) {
        progress.bytesDone -= sent;
        source.destroy();
        if (signal.aborted || attempt >= STREAM_ATTEMPTS || err instanceof FileChangedError) throw err;
      }
    }
  };

  const partSizeFor = (f: LocalFile) => Math.max(partSize, Math.ceil(f.size / MAX_PARTS));

  /** The earlier attempt's multipart upload of this file (journal and last heartbeat together), if its parts can be reused. */
  const earlierUpload = (f: LocalFile, key: string): MultipartState | undefined => {
    const filePartSize = partSizeFor(f);
    const fits = (m: { size: number; mtimeMs: number; partSize: number } | undefined) =>
      m !== undefined && m.size === f.size && m.mtimeMs === f.mtimeMs && m.partSize === filePartSize;
    const journaled = journal.multipart(key);
    const beat = fromHeartbeat.get(key);
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
  };

  /**
   * Whether `etag`, of an object with this file's size, is what completing `upload` gives: an
   * attempt can die after S3 completed its upload and before the journal heard of it. Only an
   * upload with every part sent qualifies. S3's multipart ETag follows from the parts' ETags;
   * a server that gives whole-object MD5s as ETags (s3rver) is answered by the file's MD5.
   */
  const isCompletionOf = async (upload: MultipartState | undefined, f: LocalFile, etag: string): Promise<boolean> => {
    if (!upload || upload.parts.length !== Math.ceil(f.size / upload.partSize)) return false;
    if (etag === multipartEtag(upload.parts)) return true;
    return /^[0-9a-f]{32}$/.test(etag) && etag === (await hashOfFile(f.abs, 'md5'));
  };

  const uploadMultipart = async (f: LocalFile, key: string, reuse = true): Promise<{ etag: string; completedEarlier?: boolean }> => {
    const filePartSize = partSizeFor(f);
    const earlier = reuse ? earlierUpload(f, key) : undefined;
    fromHeartbeat.delete(key);
    let state: MultipartState;
    if (earlier) {
      state = { ...earlier, parts: [...earlier.parts] };
      progress.resumedParts += state.parts.length;
    } else {
      const created = await send(() => opts.s3.send(new CreateMultipartUploadCommand({ Bucket: opts.bucket, Key: key }), { abortSignal: signal }));
      if (!created.UploadId) throw new Error(`CreateMultipartUpload for ${key} returned no UploadId`);
      state = { key, uploadId: created.UploadId, size: f.size, mtimeMs: f.mtimeMs, partSize: filePartSize, parts: [] };
      journal.recordMultipartStart({ key, uploadId: state.uploadId, size: f.size, mtimeMs: f.mtimeMs, partSize: filePartSize });
    }
    inFlight.set(key, state);
    const partCount = Math.ceil(f.size / filePartSize);
    const done = new Set(state.parts.map(([n]) => n));
    const partBytes = (n: number) => Math.min(filePartSize, f.size - (n - 1) * filePartSize);
    for (const n of done) progress.bytesDone += partBytes(n);
    const forget = () => {
      inFlight.delete(key);
      for (const [n] of state.parts) progress.bytesDone -= partBytes(n);
    };
    // An earlier attempt's upload that fails to continue (S3 dropped it: expired by a lifecycle
    // rule, aborted, or its parts are not what was recorded) is started over once, from a fresh
    // multipart upload; the SDK has already retried anything transient.
    const startOver = async (err: unknown): Promise<{ etag: string; completedEarlier?: boolean }> => {
      const head = await send(() => opts.s3.send(new HeadObjectCommand({ Bucket: opts.bucket, Key: key }), { abortSignal: signal })).catch(() => undefined);
      const etag = unquoteEtag(head?.ETag);
      if (head?.ContentLength === f.size && (await isCompletionOf(state, f, etag))) {
        forget();
        return { etag, completedEarlier: true };
      }
      ctx.warn(`The earlier attempt's multipart upload of ${key} could not be continued; sending the whole file again`, {
        key,
        uploadId: state.uploadId,
        partsKept: earlier!.parts.length,
        error: (err as Error).message,
      });
      forget();
      progress.resumedParts -= earlier!.parts.length;
      progress.restartedFiles++;
      return uploadMultipart(f, key, false);
    };
    const continuingEarlier = () => earlier !== undefined && state.uploadId === earlier.uploadId && !signal.aborted;

    let partsFailure: unknown;
    const handle = await open(f.abs, 'r');
    try {
      const pending: Promise<void>[] = [];
      let failure: unknown;
      for (let n = 1; n <= partCount && failure === undefined; n++) {
        if (done.has(n)) continue;
        await requests.acquire();
        if (signal.aborted || failure !== undefined) {
          requests.release();
          break;
        }
        const partNumber = n;
        pending.push(
          (async () => {
            try {
              const length = partBytes(partNumber);
              const buffer = Buffer.allocUnsafe(length);
              const { bytesRead } = await handle.read(buffer, 0, length, (partNumber - 1) * filePartSize);
              if (bytesRead !== length) throw new Error(`${f.abs} is shorter than it was; is the scratch Postgres still running?`);
              const partHash = createHash('sha256').update(buffer).digest('hex');
              const out = await opts.s3.send(
                withPayloadHash(
                  new UploadPartCommand({ Bucket: opts.bucket, Key: key, UploadId: state.uploadId, PartNumber: partNumber, Body: buffer, ContentLength: length }),
                  partHash,
                ),
                { abortSignal: signal },
              );
              if (!out.ETag) throw new Error(`UploadPart ${partNumber} of ${key} returned no ETag`);
              state.parts.push([partNumber, out.ETag]);
              journal.recordPart({ key, uploadId: state.uploadId, part: partNumber, etag: out.ETag });
              progress.bytesDone += length;
              heartbeat();
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
    if (partsFailure !== undefined) {
      // Only S3's answer can say the upload is gone; a local read error would fail the same way again.
      if (continuingEarlier() && isS3Response(partsFailure)) return startOver(partsFailure);
      throw partsFailure;
    }
    const parts = [...state.parts].sort((a, b) => a[0] - b[0]).map(([PartNumber, ETag]) => ({ PartNumber, ETag }));
    let etag: string;
    try {
      const out = await send(() =>
        opts.s3.send(new CompleteMultipartUploadCommand({ Bucket: opts.bucket, Key: key, UploadId: state.uploadId, MultipartUpload: { Parts: parts } }), {
          abortSignal: signal,
        }),
      );
      etag = unquoteEtag(out.ETag);
    } catch (err) {
      if (continuingEarlier()) return startOver(err);
      throw err;
    }
    forget();
    return { etag };
  };

  const uploadOne = async (f: LocalFile) => {
    const key = `${opts.keyPrefix}/${f.rel}`;
    if (await alreadyThere(key, f)) {
      progress.skippedFiles++;
      progress.skippedBytes += f.size;
    } else {
      let sent: { etag: string; sha256?: string; completedEarlier?: boolean };
      if (f.size < inMemoryLimit) {
        const content = await readFile(f.abs);
        if (content.length !== f.size) throw new FileChangedError(f.abs);
        sent = await putFromMemory(f, key, content);
      } else if (f.size < multipartThreshold) {
        sent = await putStreamed(f, key);
      } else {
        sent = await uploadMultipart(f, key);
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
    heartbeat();
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
    heartbeat(true);
    return {
      ...summary(progress),
      skippedSymlinks: symlinks,
      removedStaleObjects: stale.length,
      verifiedByContent,
      resumedFrom: previous ? summary(previous) : undefined,
    };
  } finally {
    stopHeartbeat();
    journal.close();
  }
}
