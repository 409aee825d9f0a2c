import { closeSync, existsSync, openSync, readFileSync, writeSync } from 'node:fs';

/**
 * What an upload has sent, appended line by line next to the data directory it uploads, so the
 * next attempt after a crash knows it without asking S3 object by object and without reading the
 * local files again.
 *
 * A file record ties a local file (size and mtime: the data directory of a stopped Postgres no
 * longer changes) to the ETag S3 gave the object it became. On resume, an object listed with the
 * same size and that ETag is that upload, intact; anything else is checked by content or sent
 * again. Part records let a multipart upload continue with the parts it already has, even those
 * finished after the last heartbeat reached Temporal.
 *
 * Each record is one line written with a single write: a crash leaves at most a torn last line,
 * which loading skips. The journal belongs to one work directory, that is one local run of one
 * import, so records of another run can never be mixed in; records name the full object key.
 */

export interface FileRecord {
  t: 'file';
  key: string;
  size: number;
  mtimeMs: number;
  etag: string;
  /** Content sha256, for objects sent in one request (a multipart upload never reads the whole file at once). */
  sha256?: string;
}

export interface MultipartStartRecord {
  t: 'mpu';
  key: string;
  uploadId: string;
  size: number;
  mtimeMs: number;
  partSize: number;
}

export interface PartRecord {
  t: 'part';
  key: string;
  uploadId: string;
  part: number;
  etag: string;
}

type JournalRecord = FileRecord | MultipartStartRecord | PartRecord;

/** An unfinished multipart upload as the journal knows it. */
export interface JournaledMultipart extends Omit<MultipartStartRecord, 't'> {
  parts: Map<number, string>;
}

function isRecord(v: unknown): v is JournalRecord {
  if (typeof v !== 'object' || v === null) return false;
  const r = v as Record<string, unknown>;
  if (typeof r.key !== 'string') return false;
  if (r.t === 'file') return typeof r.size === 'number' && typeof r.mtimeMs === 'number' && typeof r.etag === 'string';
  if (r.t === 'mpu') return typeof r.uploadId === 'string' && typeof r.size === 'number' && typeof r.mtimeMs === 'number' && typeof r.partSize === 'number';
  if (r.t === 'part') return typeof r.uploadId === 'string' && Number.isInteger(r.part) && typeof r.etag === 'string';
  return false;
}

export class UploadJournal {
  private readonly files = new Map<string, FileRecord>();
  private readonly uploads = new Map<string, JournaledMultipart>();
  private fd: number | undefined;

  private constructor() {}

  /** The journal at `path` (none: an in-memory journal that forgets everything, for one-off uploads). */
  static open(path: string | undefined): UploadJournal {
    const journal = new UploadJournal();
    if (path && existsSync(path)) {
      for (const line of readFileSync(path, 'utf8').split('\n')) {
        if (!line) continue;
        let parsed: unknown;
        try {
          parsed = JSON.parse(line);
        } catch {
          continue; // a torn last line
        }
        if (isRecord(parsed)) journal.apply(parsed);
      }
    }
    if (path) journal.fd = openSync(path, 'a', 0o600);
    return journal;
  }

  private apply(r: JournalRecord): void {
    if (r.t === 'file') {
      this.files.set(r.key, r);
      this.uploads.delete(r.key);
    } else if (r.t === 'mpu') {
      const { t: _t, ...rest } = r;
      this.uploads.set(r.key, { ...rest, parts: new Map() });
    } else {
      const u = this.uploads.get(r.key);
      if (u && u.uploadId === r.uploadId) u.parts.set(r.part, r.etag);
    }
  }

  private append(r: JournalRecord): void {
    this.apply(r);
    if (this.fd !== undefined) writeSync(this.fd, `${JSON.stringify(r)}\n`);
  }

  file(key: string): FileRecord | undefined {
    return this.files.get(key);
  }

  multipart(key: string): JournaledMultipart | undefined {
    return this.uploads.get(key);
  }

  recordFile(r: Omit<FileRecord, 't'>): void {
    this.append({ t: 'file', ...r });
  }

  recordMultipartStart(r: Omit<MultipartStartRecord, 't'>): void {
    this.append({ t: 'mpu', ...r });
  }

  recordPart(r: Omit<PartRecord, 't'>): void {
    this.append({ t: 'part', ...r });
  }

  close(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }
}
