/**
 * The S3 side of a data directory upload: the bound on requests in flight, payload hashes S3
 * checks, the listing of what is already there, and the single-request PUTs.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { Transform } from 'node:stream';
import { PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { listObjects, unquoteEtag } from '../s3/objects';
import type { StepContext } from '../../common/activity-context';
import { FileChangedError, sha256OfFile, type LocalFile } from './upload-files';
import type { UploadHeartbeat } from './upload-progress';
import type { UploadJournal } from './upload-journal';

export const SHA256_METADATA_KEY = 'sha256';
const MiB = 1024 * 1024;
/** A streamed PUT cannot be replayed by the SDK's retries; it is retried here, from the start of the file. */
const STREAM_ATTEMPTS = 3;

/** What every part of one upload works with. */
export interface UploadContext {
  s3: S3Client;
  bucket: string;
  signal: AbortSignal;
  ctx: StepContext;
  requests: RequestSlots;
  journal: UploadJournal;
  heartbeat: UploadHeartbeat;
}

/** A counting semaphore: the bound on requests in flight. */
export class RequestSlots {
  private free: number;
  private readonly waiting: (() => void)[] = [];

  constructor(
    slots: number,
    private readonly signal: AbortSignal,
  ) {
    this.free = slots;
  }

  async acquire(): Promise<void> {
    if (this.free > 0) {
      this.free--;
      return;
    }
    await new Promise<void>((resolve) => this.waiting.push(resolve));
  }

  release(): void {
    const next = this.waiting.shift();
    if (next) next();
    else this.free++;
  }

  /** Runs one request in a free slot (unless the upload was cancelled meanwhile). */
  async send<T>(fn: () => Promise<T>): Promise<T> {
    await this.acquire();
    try {
      if (this.signal.aborted) throw this.signal.reason;
      return await fn();
    } finally {
      this.release();
    }
  }
}

export interface RemoteObject {
  size: number;
  etag: string;
}

/** Every object under `prefix` with its size and ETag. */
export async function listWithEtags(s3: S3Client, bucket: string, prefix: string, signal: AbortSignal): Promise<Map<string, RemoteObject>> {
  const objects = new Map<string, RemoteObject>();
  for await (const o of listObjects(s3, bucket, prefix, signal)) objects.set(o.key, { size: o.size, etag: o.etag });
  return objects;
}

/**
 * Sends `command` with its payload hash already known: the signature uses it as is (the SDK
 * would otherwise hash the body again) and S3 refuses a body that does not match it.
 */
export function withPayloadHash<C extends { middlewareStack: { add: (...args: never[]) => unknown } }>(command: C, sha256Hex: string): C {
  (command.middlewareStack as unknown as { add: (mw: unknown, opts: unknown) => void }).add(
    (next: (args: { request: { headers?: Record<string, string> } }) => Promise<unknown>) => (args: { request: { headers?: Record<string, string> } }) => {
      if (args.request.headers) args.request.headers['x-amz-content-sha256'] = sha256Hex;
      return next(args);
    },
    { step: 'build', name: 'precomputedPayloadHash' },
  );
  return command;
}

/** An error S3 answered with (as the SDK raises it), as opposed to one from this side. */
export function isS3Response(err: unknown): boolean {
  return typeof err === 'object' && err !== null && typeof (err as { $metadata?: unknown }).$metadata === 'object';
}

/** One PUT of a small file read into memory, with its sha256 as payload hash and metadata. */
export async function putFromMemory(u: UploadContext, f: LocalFile, key: string, content: Buffer): Promise<{ etag: string; sha256: string }> {
  const sha256 = createHash('sha256').update(content).digest('hex');
  const out = await u.requests.send(() =>
    u.s3.send(withPayloadHash(new PutObjectCommand({ Bucket: u.bucket, Key: key, Body: content, ContentLength: f.size, Metadata: { [SHA256_METADATA_KEY]: sha256 } }), sha256), {
      abortSignal: u.signal,
    }),
  );
  return { etag: unquoteEtag(out.ETag), sha256 };
}

/**
 * One PUT streaming the file, with its sha256 (taken first) as the payload hash: S3 refuses a
 * body that differs from what was hashed. The stream cannot be replayed, so retries start the
 * file over here.
 */
export async function putStreamed(u: UploadContext, f: LocalFile, key: string): Promise<{ etag: string; sha256: string }> {
  const progress = u.heartbeat.progress;
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
      const out = await u.requests.send(() =>
        u.s3.send(
          withPayloadHash(new PutObjectCommand({ Bucket: u.bucket, Key: key, Body: counter, ContentLength: f.size, Metadata: { [SHA256_METADATA_KEY]: sha256 } }), sha256),
          { abortSignal: u.signal },
        ),
      );
      if (sent !== f.size) throw new FileChangedError(f.abs);
      progress.bytesDone -= sent;
      return { etag: unquoteEtag(out.ETag), sha256 };
    } catch (err) {
      progress.bytesDone -= sent;
      source.destroy();
      if (u.signal.aborted || attempt >= STREAM_ATTEMPTS || err instanceof FileChangedError) throw err;
    }
  }
}
