import { mkdir, open, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { GetObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { unquoteEtag } from '../../../drivers';

/**
 * Downloads validated objects into local files, as fast as one S3 endpoint allows: large objects
 * are split into byte ranges fetched in parallel (as Neon's pageserver reads with range GETs),
 * the longest work starts first so no single big object is left streaming alone at the end, and
 * bytes reach the disk in large positional writes straight from the response, with no stream
 * plumbing per chunk. Every object and range must have exactly the length the listing gave.
 */

const MiB = 1024 * 1024;
/** Objects at least this large are fetched as several ranges. */
const RANGED_FROM = 48 * MiB;
const RANGE_BYTES = 16 * MiB;
/** Chunks of a response are gathered into writes of about this size. */
const WRITE_BYTES = 2 * MiB;

export interface DownloadItem {
  key: string;
  size: number;
  dest: string;
  /** The ETag the listing gave: every response must be of that version of the object. */
  etag?: string;
}

export class DownloadError extends Error {
  override name = 'DownloadError';
  constructor(
    message: string,
    readonly key: string,
  ) {
    super(message);
  }
}

interface Task {
  item: DownloadItem;
  start: number;
  length: number;
  /** Set for ranges: the file they share, opened once. */
  file?: SharedFile;
}

interface SharedFile {
  handle: Promise<FileHandle>;
}

/** What is left of `buffers` after the first `written` bytes (a short vectored write). */
function remainderAfter(buffers: Buffer[], written: number): Buffer[] {
  const rest: Buffer[] = [];
  let skip = written;
  for (const b of buffers) {
    if (skip >= b.length) {
      skip -= b.length;
      continue;
    }
    rest.push(skip > 0 ? b.subarray(skip) : b);
    skip = 0;
  }
  return rest;
}

async function writeBody(body: Readable, task: Task, handle: FileHandle): Promise<void> {
  const { item, start, length } = task;
  let received = 0;
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  let position = start;
  const flush = async () => {
    if (pendingBytes === 0) return;
    // One vectored write for the gathered chunks: no copy into a bigger buffer first.
    let buffers = pending;
    let expected = pendingBytes;
    pending = [];
    pendingBytes = 0;
    while (expected > 0) {
      const { bytesWritten } = await handle.writev(buffers, position);
      position += bytesWritten;
      expected -= bytesWritten;
      if (expected > 0) buffers = remainderAfter(buffers, bytesWritten);
    }
  };
  for await (const chunk of body as AsyncIterable<Buffer>) {
    received += chunk.length;
    if (received > length) {
      body.destroy();
      throw new DownloadError(`Object ${JSON.stringify(item.key)} is larger than the ${item.size} bytes it was listed with`, item.key);
    }
    pending.push(chunk);
    pendingBytes += chunk.length;
    if (pendingBytes >= WRITE_BYTES) await flush();
  }
  await flush();
  if (received !== length) {
    throw new DownloadError(`Object ${JSON.stringify(item.key)} has ${start + received} bytes where ${start + length} were expected (listed with ${item.size})`, item.key);
  }
}

async function fetchTask(s3: S3Client, bucket: string, task: Task, signal?: AbortSignal): Promise<void> {
  const { item, start, length } = task;
  const ranged = task.file !== undefined;
  const out = await s3.send(
    new GetObjectCommand({
      Bucket: bucket,
      Key: item.key,
      ...(ranged ? { Range: `bytes=${start}-${start + length - 1}` } : {}),
      ...(item.etag ? { IfMatch: `"${item.etag}"` } : {}),
    }),
    { abortSignal: signal },
  );
  const body = out.Body as Readable | undefined;
  if (!body) throw new DownloadError(`Object ${JSON.stringify(item.key)} came without a body`, item.key);
  // S3 refuses the request itself when the ETag no longer matches; servers that ignore If-Match
  // (s3rver) still name the version they sent.
  if (item.etag && unquoteEtag(out.ETag) !== item.etag) {
    body.destroy();
    throw new DownloadError(`Object ${JSON.stringify(item.key)} changed after it was listed (ETag ${unquoteEtag(out.ETag) || 'missing'}, listed ${item.etag})`, item.key);
  }
  if (ranged) {
    // The object behind the listing must still be the one listed: its total size is in Content-Range.
    const total = /\/(\d+)$/.exec(out.ContentRange ?? '')?.[1];
    if (total !== String(item.size)) {
      body.destroy();
      throw new DownloadError(`Object ${JSON.stringify(item.key)} is ${total ?? 'of unknown size'} bytes now, listed with ${item.size}`, item.key);
    }
    await writeBody(body, task, await task.file!.handle);
    return;
  }
  const handle = await open(item.dest, 'wx', 0o600);
  try {
    await writeBody(body, task, handle);
  } finally {
    await handle.close();
  }
}

/** Fetches every item into its `dest` (which must not exist), `concurrency` requests at a time. */
export async function downloadObjects(s3: S3Client, bucket: string, items: DownloadItem[], opts: { concurrency: number; signal?: AbortSignal }): Promise<void> {
  const dirs = new Set(items.map((i) => path.dirname(i.dest)));
  for (const dir of [...dirs].sort()) await mkdir(dir, { recursive: true, mode: 0o700 });

  const tasks: Task[] = [];
  const shared: SharedFile[] = [];
  for (const item of items) {
    if (item.size < RANGED_FROM) {
      tasks.push({ item, start: 0, length: item.size });
      continue;
    }
    const count = Math.ceil(item.size / RANGE_BYTES);
    const file: SharedFile = { handle: open(item.dest, 'wx', 0o600) };
    // Awaited by its ranges; a failure to open must not count as unhandled before that.
    file.handle.catch(() => undefined);
    shared.push(file);
    for (let i = 0; i < count; i++) {
      const start = i * RANGE_BYTES;
      tasks.push({ item, start, length: Math.min(RANGE_BYTES, item.size - start), file });
    }
  }
  // Longest first; ranges of one object stay in order, so it is written front to back.
  tasks.sort((a, b) => b.length - a.length || (a.item.key < b.item.key ? -1 : a.item.key > b.item.key ? 1 : a.start - b.start));

  let next = 0;
  let failure: unknown;
  const worker = async () => {
    while (failure === undefined && !opts.signal?.aborted && next < tasks.length) {
      const task = tasks[next++]!;
      try {
        await fetchTask(s3, bucket, task, opts.signal);
      } catch (err) {
        failure ??= err instanceof DownloadError ? err : new DownloadError(`Downloading ${JSON.stringify(task.item.key)} failed: ${(err as Error).message}`, task.item.key);
      }
    }
  };
  try {
    await Promise.all(Array.from({ length: Math.max(1, Math.min(opts.concurrency, tasks.length)) }, worker));
  } finally {
    for (const file of shared) await (await file.handle.catch(() => undefined))?.close();
  }
  opts.signal?.throwIfAborted();
  if (failure !== undefined) throw failure;
}
