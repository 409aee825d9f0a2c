/**
 * A tiny, labelled HTTP fault layer between toxiproxy and S3: toxiproxy works on TCP and has no
 * toxic that answers an HTTP status, so this layer answers S3-style 500 InternalError or 503
 * SlowDown while told to, and otherwise forwards each request unchanged. It also records the bytes
 * each forwarded request moved, from which the chaos table counts the bytes sent again.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export type HttpFault = 500 | 503 | undefined;

/** One request forwarded to S3: its object (multipart parts by part number), bytes each way, answer. */
export interface ForwardedRequest {
  method: string;
  object: string;
  bytesUp: number;
  bytesDown: number;
  status: number | null;
}

export interface HttpFaultLayer {
  /** host:port this layer listens on. */
  address: string;
  setFault(fault: HttpFault): void;
  /** Requests seen so far, and how many were answered with the fault. */
  counters(): { requests: number; faulted: number };
  /** Every request forwarded to S3, in arrival order (index into it to take a window). */
  forwarded(): readonly ForwardedRequest[];
  close(): Promise<void>;
}

/**
 * Bytes sent (or received) again in a window of requests: for each object, everything moved
 * except the last answered-200 transfer of it. A retried PUT of a whole object counts once extra;
 * a resumed multipart upload that skips the parts already there counts nothing.
 */
export function bytesMovedAgain(requests: readonly ForwardedRequest[], direction: 'up' | 'down'): { total: number; again: number } {
  const byObject = new Map<string, { total: number; last: number }>();
  let total = 0;
  for (const r of requests) {
    const bytes = direction === 'up' ? r.bytesUp : r.bytesDown;
    if ((direction === 'up' && r.method !== 'PUT' && r.method !== 'POST') || (direction === 'down' && r.method !== 'GET')) continue;
    total += bytes;
    const entry = byObject.get(r.object) ?? { total: 0, last: 0 };
    entry.total += bytes;
    if (r.status !== null && r.status >= 200 && r.status < 300) entry.last = bytes;
    byObject.set(r.object, entry);
  }
  let again = 0;
  for (const e of byObject.values()) again += e.total - e.last;
  return { total, again };
}

/** What a window's S3 requests met, for a cell's note: how many were answered with the HTTP fault. */
export function s3FaultNote(faulted: number): string {
  return faulted ? `${faulted} S3 requests answered with the fault` : '';
}

/** The object a request is about: its path, plus the part number of a multipart part. */
function objectOf(url: string): string {
  const parsed = new URL(url, 'http://s3');
  const part = parsed.searchParams.get('partNumber');
  return part ? `${parsed.pathname}#part${part}` : parsed.pathname;
}

const S3_ERRORS: Record<500 | 503, { code: string; message: string }> = {
  500: { code: 'InternalError', message: 'We encountered an internal error. Please try again. (chaos fault layer)' },
  503: { code: 'SlowDown', message: 'Please reduce your request rate. (chaos fault layer)' },
};

export async function startHttpFaultLayer(upstream: URL): Promise<HttpFaultLayer> {
  let fault: HttpFault;
  const counters = { requests: 0, faulted: 0 };
  const log: ForwardedRequest[] = [];
  const server = http.createServer((req, res) => {
    counters.requests += 1;
    if (fault) {
      counters.faulted += 1;
      const e = S3_ERRORS[fault];
      req.resume();
      res.writeHead(fault, { 'content-type': 'application/xml' });
      res.end(`<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${e.code}</Code><Message>${e.message}</Message></Error>`);
      return;
    }
    const entry: ForwardedRequest = { method: req.method ?? '?', object: objectOf(req.url ?? '/'), bytesUp: 0, bytesDown: 0, status: null };
    log.push(entry);
    const out = http.request({ host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers }, (up) => {
      res.writeHead(up.statusCode ?? 502, up.headers);
      up.on('data', (chunk: Buffer) => (entry.bytesDown += chunk.length));
      // Only a response that reached the client in full counts as answered.
      res.on('finish', () => (entry.status = up.statusCode ?? null));
      up.pipe(res);
    });
    out.on('error', () => res.destroy());
    req.on('data', (chunk: Buffer) => (entry.bytesUp += chunk.length));
    req.pipe(out);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    address: `127.0.0.1:${(server.address() as AddressInfo).port}`,
    setFault: (f) => (fault = f),
    counters: () => ({ ...counters }),
    forwarded: () => log,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
