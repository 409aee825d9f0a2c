/**
 * A dev stand-in for Neon's endpoint storage (endpoint_storage/ in the Neon repository): an HTTP
 * object store for per-endpoint files such as the LFC state, scoped by EdDSA JWTs, that keeps its
 * objects in S3. A compute talks to it with a token instead of holding bucket credentials.
 *
 * Routes as Neon's: GET / PUT / DELETE `/{tenant_id}/{timeline_id}/{endpoint_id}/{*key}`,
 * DELETE of the prefixes `/{tenant_id}`, `/{tenant_id}/{timeline_id}` and
 * `/{tenant_id}/{timeline_id}/{endpoint_id}`, and GET `/status` and `/metrics` without auth.
 *
 * Answers: a missing or unverifiable token, a bad ID, a key that escapes its endpoint, or a body
 * over the upload limit get 400; claims that do not match the path get 403 (Neon answers 401
 * there; the issue this stand-in was made for asks for 403, and compute_ctl treats both alike: as
 * a failure). A GET compares the path with the token's own endpoint ID, so a compute may read
 * another endpoint's objects on the same timeline (a replica prewarming from its primary), as in
 * Neon. Storage failures get 500.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { DeleteObjectCommand, GetObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { importSPKI, jwtVerify, type CryptoKey, type JWTPayload } from 'jose';
import { deletePrefix, isNotFound } from '../../drivers';

/** Neon's default max_upload_file_limit. */
export const DEFAULT_MAX_UPLOAD_BYTES = 100 * 1024 * 1024;
/** Neon's default listen port. */
export const DEFAULT_ENDPOINT_STORAGE_PORT = 51243;

export interface EndpointStorageOptions {
  host: string;
  /** 0: any free port. */
  port: number;
  /** The SPKI PEM of the Ed25519 key tokens are signed with (Neon's `pemfile`). */
  publicKeyPem: string;
  s3: S3Client;
  bucket: string;
  /** Key prefix in the bucket ('' for none). */
  prefix: string;
  maxUploadBytes?: number;
  /** One line per request: method, path and status only (never the Authorization header). */
  log?: (line: string) => void;
}

export interface RunningEndpointStorage {
  url: string;
  /** host:port, as a spec's endpoint_storage_addr names it. */
  addr: string;
  close(): Promise<void>;
}

const HEX_ID = /^[0-9a-fA-F]{32}$/;

/**
 * Neon's key cleaning: `.` parts go, `..` removes the part before it (at the root it is dropped),
 * a leading `/` is stripped. A key that is empty, only `.` or `/`, or that climbs above its
 * endpoint after cleaning is refused (undefined).
 */
export function normalizeKey(key: string): string | undefined {
  const rooted = key.startsWith('/');
  const parts: string[] = [];
  for (const part of key.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') {
      if (parts.length > 0 && parts[parts.length - 1] !== '..') parts.pop();
      else if (!rooted) parts.push('..');
      continue;
    }
    parts.push(part);
  }
  if (parts.length === 0 || parts[0] === '..') return undefined;
  return parts.join('/');
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

interface Route {
  tenant: string;
  timeline?: string;
  endpoint?: string;
  /** The raw key after the endpoint, percent-decoded; undefined for a prefix route. */
  key?: string;
}

function decodeSegment(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    throw new HttpError(400, 'invalid route: bad percent-encoding');
  }
}

function parseRoute(rawPath: string): Route {
  const segments = rawPath.split('/').slice(1);
  if (segments.length === 0 || segments[0] === '') throw new HttpError(404, 'not found');
  const [tenant, timeline, endpoint] = segments.slice(0, 3).map(decodeSegment);
  const id = (value: string | undefined, what: string) => {
    if (value === undefined) return undefined;
    if (!HEX_ID.test(value)) throw new HttpError(400, `invalid route: ${what} must be 32 hex digits`);
    return value.toLowerCase();
  };
  if (endpoint !== undefined && (endpoint === '' || endpoint === '.' || endpoint === '..' || endpoint.includes('/'))) {
    throw new HttpError(400, 'invalid route: bad endpoint ID');
  }
  const route: Route = { tenant: id(tenant, 'tenant ID')!, timeline: id(timeline, 'timeline ID'), endpoint };
  if (segments.length > 3) route.key = decodeSegment(segments.slice(3).join('/'));
  return route;
}

function bearer(req: IncomingMessage): string {
  const m = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization ?? '');
  if (!m) throw new HttpError(400, 'invalid token: no bearer token');
  return m[1]!;
}

const idClaim = (payload: JWTPayload, name: string): string | undefined => {
  const v = payload[name];
  return typeof v === 'string' ? v.toLowerCase() : undefined;
};

async function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > limit) throw new HttpError(400, `body of ${declared} bytes exceeds the ${limit}-byte limit`);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > limit) throw new HttpError(400, `body exceeds the ${limit}-byte limit`);
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks, size);
}

export async function startEndpointStorage(options: EndpointStorageOptions): Promise<RunningEndpointStorage> {
  const key: CryptoKey = await importSPKI(options.publicKeyPem, 'EdDSA');
  const limit = options.maxUploadBytes ?? DEFAULT_MAX_UPLOAD_BYTES;
  const prefix = options.prefix.replace(/^\/+|\/+$/g, '');
  const objectKey = (...parts: string[]) => [prefix, ...parts].filter((p) => p !== '').join('/');
  const counters = { requests: 0, errors: 0 };
  const { s3, bucket } = options;

  async function verify(req: IncomingMessage): Promise<JWTPayload> {
    const token = bearer(req);
    try {
      return (await jwtVerify(token, key, { algorithms: ['EdDSA'], requiredClaims: ['exp'] })).payload;
    } catch (err) {
      throw new HttpError(400, `invalid token: ${(err as Error).message}`);
    }
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<number> {
    const rawPath = (req.url ?? '/').split('?')[0]!;
    if (req.method === 'GET' && rawPath === '/status') return send(res, 200);
    if (req.method === 'GET' && rawPath === '/metrics') {
      return send(res, 200, `endpoint_storage_requests_total ${counters.requests}\nendpoint_storage_request_errors_total ${counters.errors}\n`, 'text/plain; version=0.0.4');
    }
    const route = parseRoute(rawPath);
    if (route.key === undefined) {
      // A prefix delete: the claims must name exactly the path's tenant, timeline and endpoint.
      if (req.method !== 'DELETE') throw new HttpError(405, 'method not allowed');
      const claims = await verify(req);
      const claimedEndpoint = typeof claims.endpoint_id === 'string' ? claims.endpoint_id : undefined;
      if (idClaim(claims, 'tenant_id') !== route.tenant || idClaim(claims, 'timeline_id') !== route.timeline || claimedEndpoint !== route.endpoint) {
        throw new HttpError(403, 'the token is not for this prefix');
      }
      await deletePrefix(s3, bucket, objectKey(route.tenant, route.timeline ?? '', route.endpoint ?? ''));
      return send(res, 200);
    }
    if (req.method !== 'GET' && req.method !== 'PUT' && req.method !== 'DELETE') throw new HttpError(405, 'method not allowed');
    const claims = await verify(req);
    // Reads may name another endpoint of the same timeline; writes only the token's own.
    const claimedEndpoint = typeof claims.endpoint_id === 'string' ? claims.endpoint_id : undefined;
    const endpointToMatch = req.method === 'GET' ? claimedEndpoint : route.endpoint;
    if (idClaim(claims, 'tenant_id') !== route.tenant || idClaim(claims, 'timeline_id') !== route.timeline || claimedEndpoint === undefined || claimedEndpoint !== endpointToMatch) {
      throw new HttpError(403, 'the token is not for this endpoint');
    }
    const cleaned = normalizeKey(route.key);
    if (cleaned === undefined) throw new HttpError(400, `invalid key ${JSON.stringify(route.key)}`);
    const k = objectKey(route.tenant, route.timeline!, route.endpoint!, cleaned);

    if (req.method === 'PUT') {
      const body = await readBody(req, limit);
      await s3.send(new PutObjectCommand({ Bucket: bucket, Key: k, Body: body, ContentLength: body.length, ContentType: 'application/octet-stream' }));
      return send(res, 200);
    }
    if (req.method === 'DELETE') {
      await s3.send(new DeleteObjectCommand({ Bucket: bucket, Key: k }));
      return send(res, 200);
    }
    let object;
    try {
      object = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: k }));
    } catch (err) {
      if (isNotFound(err)) return send(res, 404, k, 'text/plain');
      throw err;
    }
    const bytes = Buffer.from((await object.Body?.transformToByteArray()) ?? new Uint8Array());
    return send(res, 200, bytes, 'application/octet-stream');
  }

  function send(res: ServerResponse, status: number, body: string | Buffer = '', type = 'text/plain'): number {
    res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body) });
    res.end(body);
    return status;
  }

  const server: Server = createServer((req, res) => {
    counters.requests += 1;
    const path = (req.url ?? '/').split('?')[0];
    handle(req, res)
      .then((status) => options.log?.(`${req.method} ${path} ${status}`))
      .catch((err: unknown) => {
        const status = err instanceof HttpError ? err.status : 500;
        if (status >= 500) counters.errors += 1;
        // A storage failure's details go to the log only; the client learns the status.
        options.log?.(`${req.method} ${path} ${status}: ${(err as Error).message}`);
        if (res.headersSent) {
          res.destroy();
          return;
        }
        // The rest of a refused upload is not read: the connection closes after the answer.
        if (!req.complete) res.setHeader('connection', 'close');
        send(res, status, status >= 500 ? '' : (err as Error).message);
      });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  const addr = `${options.host.includes(':') ? `[${options.host}]` : options.host}:${port}`;
  return {
    url: `http://${addr}`,
    addr,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** Neon's startup check: the bucket accepts a write, a read and a delete under the prefix. */
export async function checkBucketAccess(s3: S3Client, bucket: string, prefix: string): Promise<void> {
  const probe = [prefix.replace(/^\/+|\/+$/g, ''), `.endpoint-storage-probe-${process.pid}`].filter((p) => p !== '').join('/');
  await s3.send(new PutObjectCommand({ Bucket: bucket, Key: probe, Body: 'probe' }));
  const got = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: probe }));
  await got.Body?.transformToByteArray();
  await s3.send(new DeleteObjectCommand({ Bucket: bucket, Key: probe }));
}
