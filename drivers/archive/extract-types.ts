/** What a tar extraction promises: its options, its result, and the one error type it throws. */

export type ArchiveErrorCode =
  /** An entry that could escape the target or is of a forbidden kind (device, fifo, ...). */
  | 'unsafe-entry'
  /** The archive is bigger than allowed (declared sizes or the stream itself). */
  | 'too-large'
  | 'too-many-entries'
  /** The stream ended before the archive did. */
  | 'truncated'
  /** Not a tar archive, or a damaged one. */
  | 'corrupt'
  /** The disk refused (no space, permissions). */
  | 'io'
  | 'aborted';

export class ArchiveError extends Error {
  override name = 'ArchiveError';
  constructor(
    readonly code: ArchiveErrorCode,
    message: string,
    /** The offending entry's name, when one entry is to blame. */
    readonly entry?: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export interface ExtractOptions {
  /** Cap on the uncompressed archive stream in bytes (headers included); bigger archives are refused. */
  maxBytes: number;
  /** Cap on the number of entries; default 1,000,000. */
  maxEntries?: number;
  signal?: AbortSignal;
  /** Owner for everything created (e.g. the postgres user when extracting as root). */
  owner?: { uid: number; gid: number };
}

export interface ExtractResult {
  /** Regular files and hard links written. */
  files: number;
  /** Bytes of file content written. */
  bytes: number;
  /** All entries, directories and links included. */
  entries: number;
  /** Bytes of the (uncompressed) archive stream consumed. */
  streamBytes: number;
}
