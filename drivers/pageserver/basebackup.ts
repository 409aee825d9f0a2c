import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { assertNeonId } from '../../model/ids';
import { formatLsn, parseLsn } from '../../model/lsn';
import { ArchiveError, extractTarStream, type ExtractResult } from '../archive/extract-tar';
import { DEFAULT_CONNECT_TIMEOUT_MS, DEFAULT_IDLE_TIMEOUT_MS, runCopyOut } from './copy-out';
import { shardZeroConnstring } from './conninfo';
import { StorageError } from './errors';

/**
 * compute_ctl's step 4: a base backup from the pageserver (shard 0) over libpq, gunzipped and
 * unpacked into PGDATA as it arrives.
 */

export type ComputeModeType = 'primary' | 'static' | 'replica';

export interface FetchBasebackupOptions {
  /** The spec's pageserver connection string; for a sharded one (comma separated) shard 0 is used. */
  connstring: string;
  tenantId: string;
  timelineId: string;
  /** `X/Y`; absent (or 0/0) asks for the latest LSN. */
  lsn?: string;
  /** Replica and Static computes ask for a backup a standby can start from. */
  replica?: boolean;
  /** Sent as `-c neon.compute_mode=...`; derived from `replica`/`lsn` when absent. */
  computeMode?: ComputeModeType;
  /** storage_auth_token: the password for the pageserver. */
  token?: string;
  targetDir: string;
  /** Cap on the uncompressed archive; default 4 GiB (base backups hold no relation data). */
  maxBytes?: number;
  maxEntries?: number;
  connectTimeoutMs?: number;
  /** Longest silence once connected; default 120 s. */
  idleTimeoutMs?: number;
  signal?: AbortSignal;
  /** Progress: bytes received on the wire so far. */
  onProgress?: (progress: { receivedBytes: number }) => void;
  /** Owner for the extracted files (the postgres user when running as root). */
  owner?: { uid: number; gid: number };
}

/** Named as compute_ctl names them in /metrics.json. */
export interface BasebackupMetrics {
  pageserver_connect_micros: number;
  /** Compressed bytes received. */
  basebackup_bytes: number;
  basebackup_ms: number;
}

export interface FetchBasebackupResult {
  metrics: BasebackupMetrics;
  files: number;
  extractedBytes: number;
}

export const DEFAULT_BASEBACKUP_MAX_BYTES = 4 * 1024 * 1024 * 1024;

/** The page service command; the LSN in canonical `X/Y` form, `0/0` meaning "latest". */
export function basebackupCommand(tenantId: string, timelineId: string, lsn?: string, replica = false): string {
  assertNeonId(tenantId, 'tenant_id');
  assertNeonId(timelineId, 'timeline_id');
  const parts = ['basebackup', tenantId, timelineId];
  if (lsn !== undefined && lsn !== '') {
    const value = parseLsn(lsn);
    if (value !== 0n) parts.push(formatLsn(value));
  }
  parts.push('--gzip');
  if (replica) parts.push('--replica');
  return parts.join(' ');
}

function archiveFailure(err: unknown): StorageError {
  if (err instanceof ArchiveError) {
    if (err.code === 'io') return new StorageError('local-io', `cannot write the base backup: ${err.message}`, { cause: err });
    const kind = err.code === 'too-large' || err.code === 'too-many-entries' ? 'too-large' : err.code === 'aborted' ? 'aborted' : 'bad-archive';
    return new StorageError(kind, `base backup archive rejected: ${err.message}`, { cause: err });
  }
  if (isZlibError(err)) {
    return new StorageError('bad-archive', `base backup is not a valid gzip stream: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  // The target directory itself could not be prepared (permissions, disk).
  return new StorageError('local-io', `cannot write the base backup: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
}

/** Errors of the local file system carry the failing system call. */
function isLocalIoError(err: unknown): boolean {
  return typeof err === 'object' && err !== null && typeof (err as NodeJS.ErrnoException).syscall === 'string';
}

function isZlibError(err: unknown): boolean {
  const code = typeof err === 'object' && err !== null ? (err as { code?: unknown }).code : undefined;
  return typeof code === 'string' && code.startsWith('Z_');
}

export async function fetchBasebackup(opts: FetchBasebackupOptions): Promise<FetchBasebackupResult> {
  const hasLsn = opts.lsn !== undefined && opts.lsn !== '' && parseLsn(opts.lsn) !== 0n;
  const command = basebackupCommand(opts.tenantId, opts.timelineId, opts.lsn, opts.replica ?? false);
  const mode: ComputeModeType = opts.computeMode ?? (!opts.replica ? 'primary' : hasLsn ? 'static' : 'replica');
  const maxBytes = opts.maxBytes ?? DEFAULT_BASEBACKUP_MAX_BYTES;

  const outcome = await runCopyOut(
    {
      connstring: shardZeroConnstring(opts.connstring),
      command,
      ...(opts.token !== undefined ? { password: opts.token } : {}),
      applicationName: 'compute_ctl',
      extraOptions: `-c neon.compute_mode=${mode}`,
      connectTimeoutMs: opts.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS,
      idleTimeoutMs: opts.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS,
      ...(opts.signal ? { signal: opts.signal } : {}),
      ...(opts.onProgress ? { onBytes: (receivedBytes: number) => opts.onProgress!({ receivedBytes }) } : {}),
      serverLabel: 'pageserver',
    },
    async (data: Readable) => {
      let extraction: Promise<ExtractResult> | undefined;
      let extractError: unknown;
      let extracted: ExtractResult | undefined;
      try {
        await pipeline(data, createGunzip({ chunkSize: 256 * 1024 }), (tarStream: AsyncIterable<Buffer>) => {
          // The whole stream is read, past the end-of-archive marker, so an error the server
          // sends after the archive still fails the fetch.
          extraction = extractTarStream(tarStream, opts.targetDir, {
            maxBytes,
            ...(opts.maxEntries !== undefined ? { maxEntries: opts.maxEntries } : {}),
            ...(opts.owner ? { owner: opts.owner } : {}),
          });
          return extraction.then((r) => {
            extracted = r;
          });
        });
      } catch (err) {
        // pipeline() gives up as soon as any stage fails; the extractor may still be removing
        // what it wrote. Wait for it, and for its verdict.
        await extraction?.catch((e: unknown) => {
          extractError = e;
        });
        // The extractor's own verdict first; then gunzip's (the extractor only saw its stream close).
        if (extractError instanceof ArchiveError) throw archiveFailure(extractError);
        if (isZlibError(err)) throw archiveFailure(err);
        if (isZlibError(extractError) || isLocalIoError(extractError)) throw archiveFailure(extractError);
        // Anything else came down the wire (a server error, a lost connection): runCopyOut reports it.
        throw extractError ?? err;
      }
      if (!extracted) throw new StorageError('bad-archive', 'base backup stream ended without an archive');
      return extracted;
    },
  );
  return {
    metrics: {
      pageserver_connect_micros: outcome.connectMicros,
      basebackup_bytes: outcome.bytes,
      basebackup_ms: Math.round(outcome.elapsedMs),
    },
    files: outcome.result.files,
    extractedBytes: outcome.result.bytes,
  };
}
