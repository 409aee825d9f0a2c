/**
 * "Already there?": whether the object under a key is the local file, intact, so a resumed upload
 * skips it. Cheapest evidence first: the journal's ETag for this very file, then an earlier
 * attempt's completed multipart upload, and only then a HEAD and a re-read of the local file to
 * compare its sha256 with the object's metadata.
 */
import { HeadObjectCommand } from '@aws-sdk/client-s3';
import { sha256OfFile, type LocalFile } from './upload-files';
import type { MultipartUploads } from './upload-multipart';
import { SHA256_METADATA_KEY, type RemoteObject, type UploadContext } from './upload-s3';

export class AlreadyThere {
  /** Objects of the same size that the journal could not vouch for, found intact by content. */
  verifiedByContent = 0;

  constructor(
    private readonly u: UploadContext,
    /** What the prefix held when the upload started. */
    private readonly remote: Map<string, RemoteObject>,
    private readonly multipart: MultipartUploads,
  ) {}

  /** True if the object already under `key` is this file, intact. Reads the local file only when nothing cheaper can tell. */
  async check(key: string, f: LocalFile): Promise<boolean> {
    const { s3, bucket, signal, requests, journal } = this.u;
    const object = this.remote.get(key);
    if (object?.size !== f.size) return false;
    const record = journal.file(key);
    const sameLocal = record !== undefined && record.size === f.size && record.mtimeMs === f.mtimeMs;
    if (sameLocal && record.etag !== '' && record.etag === object.etag) return true;
    if (await this.multipart.isCompletionOf(this.multipart.earlierUpload(f, key), f, object.etag)) {
      journal.recordFile({ key, size: f.size, mtimeMs: f.mtimeMs, etag: object.etag });
      return true;
    }
    let expected: string | undefined;
    try {
      const head = await requests.send(() => s3.send(new HeadObjectCommand({ Bucket: bucket, Key: key }), { abortSignal: signal }));
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
    this.verifiedByContent++;
    journal.recordFile({ key, size: f.size, mtimeMs: f.mtimeMs, etag: object.etag, sha256: local });
    return true;
  }
}
