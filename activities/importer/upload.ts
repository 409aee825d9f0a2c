import { createHash } from 'node:crypto';
import { getMaxListeners, setMaxListeners } from 'node:events';
import { createReadStream, existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { lstat, open, readdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import {
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectsCommand,
  HeadObjectCommand,
  PutObjectCommand,
  UploadPartCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { listObjects } from '../s3/objects';
import { every, type StepContext } from './activity-context';

/**
 * Uploads a stopped Postgres data directory, one object per file, to `<keyPrefix>/<relative path>`.
 *
 * Resumable at two levels:
 * - Files: every object carries the sha256 of its content in its metadata, so a restarted upload
 *   lists what is there and skips each file whose object has the same size and checksum; only
 *   missing or different files are sent again.
 * - Parts: large files go up as multipart uploads whose id and finished parts are part of the
 *   heartbeat details; the next attempt continues those uploads and sends only the missing parts
 *   of a half-sent 1 GiB segment (if the server no longer has them, the file starts over).
 *
 * Objects under the prefix that match no local file (left by an earlier, different data
 * directory) are deleted at the end, so the prefix mirrors the directory exactly.
 *
 * At most `concurrency` requests are in flight, whatever mix of small files and parts of large
 * ones. Memory stays below concurrency x (partSize + multipartThreshold): each request holds one
 * part or one small file, and each of the `concurrency` file workers at most one small file.
 */

export const SHA256_METADATA_KEY = 'sha256';
const MiB = 1024 * 1024;
const MIN_PART_SIZE = 5 * MiB;
const MAX_PARTS = 10_000;

/** An unfinished multipart upload, as recorded in the heartbeat details. */
export interface MultipartState {
  key: string;
  uploadId: string;
  size: number;
  sha256: string;
  partSize: number;
  /** Finished parts: [part number, ETag]. */
  parts: [number, string][];
}

export interface UploadProgress {
  phase: 'upload';
  filesTotal: number;
  bytesTotal: number;
  filesDone: number;
  /** Bytes of finished files plus finished parts of files still in flight. */
  bytesDone: number;
  uploadedFiles: number;
  uploadedBytes: number;
  skippedFiles: number;
  skippedBytes: number;
  /** Parts reused from the previous attempt's unfinished multipart uploads. */
  resumedParts: number;
  inFlight: MultipartState[];
}

export interface UploadResult extends Omit<UploadProgress, 'inFlight'> {
  skippedSymlinks: string[];
  removedStaleObjects: number;
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
  /** Requests in flight at once (PUTs of small files and parts of large ones); Neon uses 10. */
  concurrency?: number;
  partSize?: number;
  /** Files at least this large go up as multipart uploads. */
  multipartThreshold?: number;
  /** Where local checksums are cached between attempts (the data directory no longer changes). */
  hashCacheFile?: string;
}

interface LocalFile {
  rel: string;
  abs: string;
  size: number;
  mtimeMs: number;
}

interface CachedHash {
  size: number;
  mtimeMs: number;
  sha256: string;
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

async function sha256OfFile(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file, { highWaterMark: MiB })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

function loadHashCache(file: string | undefined): Map<string, CachedHash> {
  if (!file || !existsSync(file)) return new Map();
  try {
    return new Map(Object.entries(JSON.parse(readFileSync(file, 'utf8')) as Record<string, CachedHash>));
  } catch {
    return new Map();
  }
}

function saveHashCache(file: string | undefined, cache: Map<string, CachedHash>): void {
  if (!file) return;
  const tmp = `${file}.tmp`;
  writeFileSync(tmp, JSON.stringify(Object.fromEntries(cache)));
  renameSync(tmp, file);
}

function previousProgress(v: unknown): UploadProgress | undefined {
  if (typeof v !== 'object' || v === null || (v as UploadProgress).phase !== 'upload') return undefined;
  const p = v as UploadProgress;
  return { ...p, inFlight: Array.isArray(p.inFlight) ? p.inFlight : [] };
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

export async function uploadDataDirectory(opts: UploadOptions): Promise<UploadResult> {
  const concurrency = Math.max(1, opts.concurrency ?? 10);
  const partSize = Math.max(MIN_PART_SIZE, opts.partSize ?? 8 * MiB);
  const multipartThreshold = Math.max(1, opts.multipartThreshold ?? partSize);
  const ctx = opts.ctx;
  const { signal } = ctx;
  // Every in-flight request listens on the one cancellation signal.
  setMaxListeners(Math.max(getMaxListeners(signal), concurrency * 2 + 10), signal);
  const previous = previousProgress(ctx.previousDetails);
  const resumable = new Map((previous?.inFlight ?? []).map((m) => [m.key, m]));

  const { files, symlinks } = await walkDataDirectory(opts.dataDir);
  const remote = new Map<string, number>();
  for await (const o of listObjects(opts.s3, opts.bucket, `${opts.keyPrefix}/`, signal)) remote.set(o.key, o.size);

  const cache = loadHashCache(opts.hashCacheFile);
  const progress: UploadProgress = {
    phase: 'upload',
    filesTotal: files.length,
    bytesTotal: files.reduce((n, f) => n + f.size, 0),
    filesDone: 0,
    bytesDone: 0,
    uploadedFiles: 0,
    uploadedBytes: 0,
    skippedFiles: 0,
    skippedBytes: 0,
    resumedParts: 0,
    inFlight: [],
  };
  const inFlight = new Map<string, MultipartState>();
  const heartbeat = () => ctx.heartbeat({ ...progress, inFlight: [...inFlight.values()].map((m) => ({ ...m, parts: [...m.parts] })) });
  const stopHeartbeat = every(5_000, heartbeat);
  const stopCacheSaver = every(30_000, () => saveHashCache(opts.hashCacheFile, cache));
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

  const localHash = async (f: LocalFile, content?: Buffer): Promise<string> => {
    const cached = cache.get(f.rel);
    if (cached && cached.size === f.size && cached.mtimeMs === f.mtimeMs) return cached.sha256;
    const sha256 = content ? createHash('sha256').update(content).digest('hex') : await sha256OfFile(f.abs);
    cache.set(f.rel, { size: f.size, mtimeMs: f.mtimeMs, sha256 });
    return sha256;
  };

  const alreadyThere = async (key: string, f: LocalFile, sha256: string): Promise<boolean> => {
    if (remote.get(key) !== f.size) return false;
    try {
      const head = await send(() => opts.s3.send(new HeadObjectCommand({ Bucket: opts.bucket, Key: key }), { abortSignal: signal }));
      return head.ContentLength === f.size && head.Metadata?.[SHA256_METADATA_KEY] === sha256;
    } catch (err) {
      if (signal.aborted) throw err;
      return false;
    }
  };

  const uploadMultipart = async (f: LocalFile, key: string, sha256: string): Promise<void> => {
    const earlier = resumable.get(key);
    resumable.delete(key);
    const filePartSize = Math.max(partSize, Math.ceil(f.size / MAX_PARTS));
    let state: MultipartState;
    if (earlier && earlier.size === f.size && earlier.sha256 === sha256 && earlier.partSize === filePartSize) {
      state = { ...earlier, parts: [...earlier.parts] };
      progress.resumedParts += state.parts.length;
    } else {
      const created = await send(() =>
        opts.s3.send(new CreateMultipartUploadCommand({ Bucket: opts.bucket, Key: key, Metadata: { [SHA256_METADATA_KEY]: sha256 } }), { abortSignal: signal }),
      );
      if (!created.UploadId) throw new Error(`CreateMultipartUpload for ${key} returned no UploadId`);
      state = { key, uploadId: created.UploadId, size: f.size, sha256, partSize: filePartSize, parts: [] };
    }
    inFlight.set(key, state);
    const partCount = Math.ceil(f.size / filePartSize);
    const done = new Set(state.parts.map(([n]) => n));
    const partBytes = (n: number) => Math.min(filePartSize, f.size - (n - 1) * filePartSize);
    for (const n of done) progress.bytesDone += partBytes(n);
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
              const out = await opts.s3.send(
                new UploadPartCommand({ Bucket: opts.bucket, Key: key, UploadId: state.uploadId, PartNumber: partNumber, Body: buffer, ContentLength: length }),
                { abortSignal: signal },
              );
              if (!out.ETag) throw new Error(`UploadPart ${partNumber} of ${key} returned no ETag`);
              state.parts.push([partNumber, out.ETag]);
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
    } finally {
      await handle.close();
    }
    const parts = [...state.parts].sort((a, b) => a[0] - b[0]).map(([PartNumber, ETag]) => ({ PartNumber, ETag }));
    try {
      await send(() =>
        opts.s3.send(new CompleteMultipartUploadCommand({ Bucket: opts.bucket, Key: key, UploadId: state.uploadId, MultipartUpload: { Parts: parts } }), {
          abortSignal: signal,
        }),
      );
    } catch (err) {
      if (signal.aborted) throw err;
      // The earlier attempt's upload is gone or its parts are (expired, aborted, cleaned): start
      // this file over once, from a fresh multipart upload.
      if (earlier && state.uploadId === earlier.uploadId) {
        inFlight.delete(key);
        for (const [n] of state.parts) progress.bytesDone -= partBytes(n);
        progress.resumedParts -= earlier.parts.length;
        return uploadMultipart(f, key, sha256);
      }
      throw err;
    }
    inFlight.delete(key);
    for (const [n] of state.parts) progress.bytesDone -= partBytes(n);
  };

  const uploadOne = async (f: LocalFile) => {
    const key = `${opts.keyPrefix}/${f.rel}`;
    const small = f.size < multipartThreshold;
    const content = small ? await readFile(f.abs) : undefined;
    if (content && content.length !== f.size) throw new Error(`${f.abs} changed size while being uploaded; is the scratch Postgres still running?`);
    const sha256 = await localHash(f, content);
    if (await alreadyThere(key, f, sha256)) {
      progress.skippedFiles++;
      progress.skippedBytes += f.size;
    } else {
      if (content) {
        await send(() =>
          opts.s3.send(new PutObjectCommand({ Bucket: opts.bucket, Key: key, Body: content, ContentLength: f.size, Metadata: { [SHA256_METADATA_KEY]: sha256 } }), {
            abortSignal: signal,
          }),
        );
      } else {
        await uploadMultipart(f, key, sha256);
      }
      const after = await stat(f.abs);
      if (after.size !== f.size || after.mtimeMs !== f.mtimeMs) {
        throw new Error(`${f.abs} changed while being uploaded; is the scratch Postgres still running?`);
      }
      progress.uploadedFiles++;
      progress.uploadedBytes += f.size;
    }
    progress.filesDone++;
    progress.bytesDone += f.size;
    heartbeat();
  };

  try {
    let next = 0;
    let failure: unknown;
    // File workers only prepare (read, hash, check); the request semaphore bounds the sending.
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
    heartbeat();
    return { ...summary(progress), skippedSymlinks: symlinks, removedStaleObjects: stale.length, resumedFrom: previous ? summary(previous) : undefined };
  } finally {
    stopHeartbeat();
    stopCacheSaver();
    saveHashCache(opts.hashCacheFile, cache);
  }
}
