import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { METADATA_ENCODING_KEY, type Payload, type PayloadCodec } from '@temporalio/common';
import type { CodecAuth } from './codec-auth';
import { ENCRYPTED_ENCODING } from '../common/codec/encryption-codec';

/**
 * Temporal's remote codec protocol (what the Web UI and `temporal --codec-endpoint` call):
 * `POST …/decode` and `POST …/encode` with a Payloads object in proto3 JSON form,
 * `{"payloads": [{"metadata": {"encoding": "<base64>"}, "data": "<base64>"}]}`, answered in the
 * same form. Only the last path segment picks the operation, so the server can sit under any
 * prefix of a proxy. The payload keys are the workers' own (the codec passed in), so whoever may
 * call it reads every spec and password hash in history: hence the bearer credentials (codec-auth.ts).
 */

export const CODEC_SERVER_MAX_BODY_BYTES_DEFAULT = 4 * 1024 * 1024;

export interface CodecServerOptions {
  codec: PayloadCodec;
  /** Who may encode/decode (a bearer token or JWT); undefined only for the dev stack on loopback. */
  auth: CodecAuth | undefined;
  /** Origins (scheme://host[:port]) whose pages may call the server: the Web UI's. */
  allowedOrigins: string[];
  maxBodyBytes?: number;
  log?: (line: string) => void;
}

/** The headers the Web UI sends with each codec call (Authorization only with "pass access token"). */
const ALLOWED_HEADERS = 'Authorization, Content-Type, X-Namespace';
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=|[A-Za-z0-9+/]{2}|[A-Za-z0-9+/]{3})?$/;

class BadRequest extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

function base64Bytes(value: unknown, where: string): Uint8Array {
  // proto3 JSON also allows the URL-safe alphabet for bytes.
  if (typeof value !== 'string' || !BASE64.test(value.replace(/-/g, '+').replace(/_/g, '/'))) {
    throw new BadRequest(400, `${where} must be a base64 string`);
  }
  return Buffer.from(value, 'base64');
}

/** Payloads from their proto3 JSON form, naming the first field that is wrong. */
export function payloadsFromJson(body: unknown): Payload[] {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new BadRequest(400, 'the body must be a JSON object {"payloads": [...]}');
  const list = (body as { payloads?: unknown }).payloads;
  if (list === undefined || list === null) return [];
  if (!Array.isArray(list)) throw new BadRequest(400, 'payloads must be an array');
  return list.map((p: unknown, i) => {
    if (typeof p !== 'object' || p === null || Array.isArray(p)) throw new BadRequest(400, `payloads[${i}] must be an object`);
    const { metadata, data } = p as { metadata?: unknown; data?: unknown };
    if (metadata !== undefined && metadata !== null && (typeof metadata !== 'object' || Array.isArray(metadata))) {
      throw new BadRequest(400, `payloads[${i}].metadata must be an object of base64 strings`);
    }
    const decodedMetadata: Record<string, Uint8Array> = {};
    for (const [key, value] of Object.entries((metadata ?? {}) as Record<string, unknown>)) {
      decodedMetadata[key] = base64Bytes(value, `payloads[${i}].metadata.${key}`);
    }
    return { metadata: decodedMetadata, data: data === undefined || data === null ? new Uint8Array() : base64Bytes(data, `payloads[${i}].data`) };
  });
}

export function payloadsToJson(payloads: Payload[]): { payloads: { metadata: Record<string, string>; data: string }[] } {
  return {
    payloads: payloads.map((p) => ({
      metadata: Object.fromEntries(Object.entries(p.metadata ?? {}).map(([k, v]) => [k, Buffer.from(v ?? []).toString('base64')])),
      data: Buffer.from(p.data ?? []).toString('base64'),
    })),
  };
}

function isEncrypted(p: Payload): boolean {
  const encoding = p.metadata?.[METADATA_ENCODING_KEY];
  return encoding !== undefined && encoding !== null && Buffer.from(encoding).toString() === ENCRYPTED_ENCODING;
}

/**
 * Decodes the encrypted payloads and returns the others as they came: what is in clear in
 * history (a search attribute, a payload of another data converter) reveals nothing new, and one
 * such payload in a batch must not fail the UI's whole request.
 */
async function decodeAll(codec: PayloadCodec, payloads: Payload[]): Promise<Payload[]> {
  const out = [...payloads];
  const encrypted = payloads.flatMap((p, i) => (isEncrypted(p) ? [i] : []));
  for (const i of encrypted) {
    try {
      const [decoded] = await codec.decode([payloads[i]!]);
      out[i] = decoded!;
    } catch (err) {
      throw new BadRequest(400, `payloads[${i}] cannot be decoded: ${(err as Error).message}`);
    }
  }
  return out;
}

/** An origin in its canonical form (scheme://host[:port]), so the configured ones compare exactly with the Origin header. */
function normalizeOrigin(origin: string): string | undefined {
  try {
    const u = new URL(origin);
    return u.origin === 'null' ? undefined : u.origin;
  } catch {
    return undefined;
  }
}

export function codecServerHandler(opts: CodecServerOptions): http.RequestListener {
  const maxBody = opts.maxBodyBytes ?? CODEC_SERVER_MAX_BODY_BYTES_DEFAULT;
  const allowed = new Set(opts.allowedOrigins.map((o) => normalizeOrigin(o) ?? o));
  const log = opts.log ?? (() => {});

  const send = (res: http.ServerResponse, status: number, body: unknown, extra: http.OutgoingHttpHeaders = {}) => {
    const text = JSON.stringify(body);
    res.writeHead(status, { ...extra, 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
    res.end(text);
  };

  const readBody = async (req: http.IncomingMessage): Promise<Buffer> => {
    const declared = Number(req.headers['content-length'] ?? 0);
    if (declared > maxBody) throw new BadRequest(413, `the body is larger than ${maxBody} bytes`);
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of req as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > maxBody) throw new BadRequest(413, `the body is larger than ${maxBody} bytes`);
      chunks.push(chunk);
    }
    return Buffer.concat(chunks);
  };

  const originAllowed = (origin: string | undefined): origin is string => origin !== undefined && allowed.has(normalizeOrigin(origin) ?? '');
  // Credentials: the UI's "include cross-origin credentials" sends cookies, which a browser only
  // allows with the exact origin echoed back, never with a wildcard.
  const corsHeaders = (origin: string | undefined): http.OutgoingHttpHeaders =>
    originAllowed(origin) ? { 'access-control-allow-origin': origin, 'access-control-allow-credentials': 'true', vary: 'Origin' } : { vary: 'Origin' };

  const handle = async (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> => {
    const url = new URL(req.url ?? '/', 'http://codec.invalid');
    const origin = req.headers.origin;
    const cors = corsHeaders(origin);

    if (url.pathname === '/health' && req.method === 'GET') return send(res, 200, { ok: true }, cors);
    const operation = url.pathname.split('/').filter(Boolean).pop();
    if (operation !== 'encode' && operation !== 'decode') return send(res, 404, { message: `no route for ${req.method} ${url.pathname}` }, cors);

    if (req.method === 'OPTIONS') {
      // A preflight carries no Authorization header, so it is answered without one.
      if (!originAllowed(origin)) return send(res, 403, { message: `origin ${origin ?? '(none)'} is not allowed; add it with --allow-origin` }, { vary: 'Origin' });
      res.writeHead(204, {
        ...cors,
        'access-control-allow-methods': 'POST, OPTIONS',
        'access-control-allow-headers': ALLOWED_HEADERS,
        'access-control-max-age': '600',
      });
      return void res.end();
    }
    if (req.method !== 'POST') return send(res, 405, { message: `method ${req.method} not allowed; use POST` }, { ...cors, allow: 'POST, OPTIONS' });
    // A page from any other origin is refused outright, not merely kept from reading the answer.
    if (origin !== undefined && !originAllowed(origin)) return send(res, 403, { message: `origin ${origin} is not allowed; add it with --allow-origin` }, cors);
    if (opts.auth !== undefined && !(await opts.auth.accepts(req.headers.authorization))) {
      return send(res, 401, { message: 'missing or unknown bearer token' }, { ...cors, 'www-authenticate': 'Bearer' });
    }

    const raw = await readBody(req);
    let body: unknown;
    try {
      body = JSON.parse(raw.toString('utf8'));
    } catch (err) {
      throw new BadRequest(400, `the body is not valid JSON: ${(err as Error).message}`);
    }
    const payloads = payloadsFromJson(body);
    const result = operation === 'decode' ? await decodeAll(opts.codec, payloads) : await opts.codec.encode(payloads);
    const namespace = req.headers['x-namespace'];
    log(`${operation} ${payloads.length} payload(s)${typeof namespace === 'string' ? ` for namespace ${namespace}` : ''}`);
    return send(res, 200, payloadsToJson(result), cors);
  };

  return (req, res) => {
    handle(req, res).catch((err: unknown) => {
      const status = err instanceof BadRequest ? err.status : 500;
      // Never echo a payload: only the message, which names the field or the key that is missing.
      const message = err instanceof Error ? err.message : String(err);
      if (status === 500) log(`internal error: ${message}`);
      if (res.headersSent) return void res.destroy();
      send(res, status, { message: status === 500 ? 'internal error' : message }, { ...corsHeaders(req.headers.origin), ...(status === 413 ? { connection: 'close' } : {}) });
      // The rest of an oversized body is not read: drop the connection once the answer is out.
      if (status === 413) res.on('finish', () => req.destroy());
    });
  };
}

/** Serves `codecServerHandler` on host:port until closed. */
export async function startCodecServer(opts: CodecServerOptions & { host: string; port: number }): Promise<{ url: string; close: () => Promise<void> }> {
  const server = http.createServer(codecServerHandler(opts));
  // Slow or stalled clients do not hold a socket for long.
  server.requestTimeout = 30_000;
  server.headersTimeout = 10_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  const host = opts.host.includes(':') ? `[${opts.host}]` : opts.host;
  return {
    url: `http://${host}:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
