/**
 * pg-copy-streams ships `both()` (COPY BOTH, as used by replication-style protocols) but its type
 * declarations omit it; this gives it a type so callers stay type-checked.
 */
import type { Submittable } from 'pg';
import * as copyStreams from 'pg-copy-streams';
import type { Duplex, DuplexOptions } from 'node:stream';

export type CopyBothStream = Duplex & Submittable;

interface WithBoth {
  both(text: string, options?: DuplexOptions & { alignOnCopyDataFrame?: boolean }): CopyBothStream;
}

/** A COPY BOTH query for `client.query(...)`: write CopyData payloads, read the server's. */
export function copyBoth(text: string, options?: DuplexOptions & { alignOnCopyDataFrame?: boolean }): CopyBothStream {
  return (copyStreams as unknown as WithBoth).both(text, options);
}
