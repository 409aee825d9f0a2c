/**
 * Streams a tar archive from an untrusted source (a pageserver, an object store) straight to disk,
 * refusing anything that could write outside the target directory or exhaust it. Nothing is
 * buffered beyond the stream's own chunks.
 */
import fs from 'node:fs/promises';
import type { Readable } from 'node:stream';
import tar, { type Extract } from 'tar-stream';
import { displayName } from './entry-paths';
import { ArchiveError, type ExtractOptions, type ExtractResult } from './extract-types';
import { BLOCK, DEFAULT_MAX_ENTRIES, DIR_MODE, errorText, Extraction, isFsError, RecentBytes } from './extraction';

export { ArchiveError, type ArchiveErrorCode, type ExtractOptions, type ExtractResult } from './extract-types';

/** streamx (under tar-stream) marks a stream being torn down; writes to it go nowhere. */
function tornDown(extract: Extract): boolean {
  return (extract as unknown as { destroying?: boolean }).destroying === true;
}

/** Resolves on 'drain'; false if the extractor closed instead (it failed or was destroyed). */
function drained(extract: Extract): Promise<boolean> {
  if (tornDown(extract)) return Promise.resolve(false);
  return new Promise((resolve) => {
    const onDrain = () => done(true);
    const onClose = () => done(false);
    const done = (ok: boolean) => {
      extract.off('drain', onDrain);
      extract.off('close', onClose);
      resolve(ok);
    };
    extract.on('drain', onDrain);
    extract.on('close', onClose);
  });
}

function isDestroyable(x: unknown): x is { destroy(err?: Error): void } {
  return typeof (x as { destroy?: unknown }).destroy === 'function';
}

/**
 * Extracts the tar stream `input` into `targetDir` (created 0700 if missing). Accepts regular
 * files, directories, hard links to files already extracted and symbolic links whose targets stay
 * inside; refuses absolute or `..` names, NUL or backslash in names, devices, fifos, GNU sparse files
 * and any other entry type it does not understand, writes through
 * symbolic links, archives above `maxBytes` or `maxEntries`, and archives without their
 * end-of-archive marker. The first problem stops the extraction, removes what it created and throws
 * an ArchiveError naming the entry. An error of `input` itself (a network failure, a server error)
 * is rethrown unchanged after the same cleanup, so callers can classify it.
 */
export async function extractTarStream(
  input: Readable | AsyncIterable<Buffer | Uint8Array>,
  targetDir: string,
  opts: ExtractOptions,
): Promise<ExtractResult> {
  if (!(opts.maxBytes > 0)) throw new RangeError('extractTarStream: maxBytes must be positive');
  if (opts.signal?.aborted) {
    if (isDestroyable(input)) input.destroy();
    throw new ArchiveError('aborted', 'extraction aborted before it started', undefined, { cause: opts.signal.reason });
  }
  await fs.mkdir(targetDir, { recursive: true, mode: DIR_MODE });
  const root = await fs.realpath(targetDir);
  const extraction = new Extraction(root, { maxBytes: opts.maxBytes, maxEntries: opts.maxEntries ?? DEFAULT_MAX_ENTRIES, owner: opts.owner });

  const extract = tar.extract();
  /** The parser's own complaint; the entry stream it tears down only reports "destroyed". */
  let parseError: unknown;
  extract.on('error', (err: unknown) => {
    parseError ??= err;
  });
  let streamBytes = 0;
  const recent = new RecentBytes();
  let stopping = false;
  /** Our own verdict (too large, aborted) reached while feeding. */
  let feedFailure: ArchiveError | undefined;
  /** The input stream's own error, rethrown as is. */
  let sourceError: unknown;

  const stopSource = () => {
    stopping = true;
    if (isDestroyable(input)) input.destroy();
  };

  const onAbort = () => {
    feedFailure ??= new ArchiveError('aborted', 'extraction aborted', undefined, { cause: opts.signal?.reason });
    stopSource();
    extract.destroy(feedFailure);
  };
  opts.signal?.addEventListener('abort', onAbort, { once: true });

  const feeding = (async () => {
    try {
      for await (const raw of input as AsyncIterable<Buffer | Uint8Array>) {
        if (stopping || tornDown(extract)) return;
        const chunk = Buffer.isBuffer(raw) ? raw : Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength);
        recent.push(streamBytes, chunk, extraction.lastEntryEnd);
        streamBytes += chunk.length;
        // Counting the stream (not only declared file sizes) also stops bombs made of padding
        // or endless zero blocks, which the tar parser would otherwise skip forever.
        if (streamBytes > opts.maxBytes) {
          throw new ArchiveError('too-large', `archive stream exceeds the ${opts.maxBytes}-byte limit`);
        }
        if (!extract.write(chunk) && !(await drained(extract))) return;
      }
      if (!stopping) extract.end(undefined);
    } catch (err) {
      if (stopping) return;
      if (err instanceof ArchiveError) feedFailure ??= err;
      else sourceError ??= err;
      extract.destroy(err instanceof Error ? err : new Error(String(err)));
    }
  })();

  try {
    for await (const entry of extract) {
      try {
        await extraction.handle(entry, () => streamBytes, (offset) => recent.byteAt(offset));
      } catch (err) {
        if (err instanceof ArchiveError || !isFsError(err)) throw err;
        throw new ArchiveError('io', `cannot extract ${displayName(entry.header.name)}: ${errorText(err)}`, entry.header.name, { cause: err });
      }
    }
    await feeding;
    if (feedFailure) throw feedFailure;
    if (sourceError !== undefined) throw sourceError;
    if (streamBytes === 0) throw new ArchiveError('truncated', 'archive is empty (zero bytes)');
    if (streamBytes < extraction.lastEntryEnd + 2 * BLOCK) {
      throw new ArchiveError('truncated', 'archive ends without its end-of-archive marker (truncated?)');
    }
    return { files: extraction.files, bytes: extraction.bytes, entries: extraction.entries, streamBytes };
  } catch (err) {
    stopSource();
    extract.destroy(new Error('extraction stopped'));
    await extraction.removeCreated();
    if (feedFailure) throw feedFailure;
    if (sourceError !== undefined) throw sourceError;
    if (err instanceof ArchiveError) throw err;
    const text = errorText(parseError ?? err);
    if (/unexpected end of data/i.test(text)) throw new ArchiveError('truncated', 'archive is truncated: it ends inside an entry', undefined, { cause: err });
    throw new ArchiveError('corrupt', `not a valid tar archive: ${text}`, undefined, { cause: err });
  } finally {
    opts.signal?.removeEventListener('abort', onAbort);
  }
}
