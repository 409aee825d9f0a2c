/**
 * The management API, with Neon's paths and JSON (pageserver/src/http/routes.rs); errors are
 * `{"msg": "..."}`.
 *   GET    /v1/status
 *   GET    /v1/tenant
 *   PUT    /v1/tenant/<t>/location_config           (attaches = creates the tenant)
 *   POST   /v1/tenant/<t>/timeline                  bootstrap | branch | import_pgdata
 *   GET    /v1/tenant/<t>/timeline
 *   GET    /v1/tenant/<t>/timeline/<tl>
 *   DELETE /v1/tenant/<t>/timeline/<tl>
 *   PUT    /v1/tenant/<t>/timeline/<tl>/do_gc       {gc_horizon?}: moves the GC cutoff, drops images
 *   POST   /v1/tenant/<t>/timeline/<tl>/lsn_lease   {lsn} → {valid_until}
 *   PUT    /v1/tenant/config                        {tenant_id, lsn_lease_length}
 */
import { bearerTokenMatches } from '../../../common/bearer-token';
import type http from 'node:http';
import { isNeonId } from '../../../model/ids';
import { isLsn, parseLsn } from '../../../model/lsn';
import { parseDurationMs } from './gc-state';
import { PageserverError, SUPPORTED_PG_VERSION, type CreateTimelineRequest, type PageserverService } from './service';

const MAX_BODY_BYTES = 1024 * 1024;

function sendJson(res: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

async function readBody(req: http.IncomingMessage): Promise<Record<string, unknown>> {
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > MAX_BODY_BYTES) throw new PageserverError(413, `request body of ${declared} bytes exceeds the limit of ${MAX_BODY_BYTES} bytes`);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) throw new PageserverError(413, `request body exceeds the limit of ${MAX_BODY_BYTES} bytes`);
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new PageserverError(400, `request body is not valid JSON: ${(err as Error).message}`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new PageserverError(400, 'request body must be a JSON object');
  return parsed as Record<string, unknown>;
}

function idParam(value: unknown, what: string): string {
  if (typeof value !== 'string' || !isNeonId(value)) {
    throw new PageserverError(400, `invalid ${what} ${JSON.stringify(value ?? null)}: expected 32 lower-case hex characters`);
  }
  return value;
}

function lsnParam(value: unknown, what: string): bigint {
  if (typeof value !== 'string' || !isLsn(value)) throw new PageserverError(400, `invalid ${what} ${JSON.stringify(value)}: expected an LSN like 0/16B5A50`);
  return parseLsn(value);
}

/** do_gc's `gc_horizon`: WAL bytes behind the last record to keep; absent = the pageserver's default. */
function gcHorizonParam(value: unknown): bigint | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    throw new PageserverError(400, `invalid gc_horizon ${JSON.stringify(value)}: expected a number of bytes >= 0`);
  }
  return BigInt(value);
}

/** Parses the create-timeline body into one of the three modes. */
export function parseCreateTimeline(body: Record<string, unknown>): CreateTimelineRequest {
  const timelineId = idParam(body.new_timeline_id, 'new_timeline_id');
  if (body.import_pgdata !== undefined && body.import_pgdata !== null) {
    const spec = body.import_pgdata as { idempotency_key?: unknown };
    const key = typeof spec === 'object' && spec !== null && typeof spec.idempotency_key === 'string' ? spec.idempotency_key : null;
    return { mode: 'import', timelineId, importPgdata: body.import_pgdata, idempotencyKey: key };
  }
  if (body.ancestor_timeline_id !== undefined && body.ancestor_timeline_id !== null) {
    const ancestorTimelineId = idParam(body.ancestor_timeline_id, 'ancestor_timeline_id');
    if (ancestorTimelineId === timelineId) throw new PageserverError(400, 'a timeline cannot be its own ancestor');
    const start = body.ancestor_start_lsn;
    return {
      mode: 'branch',
      timelineId,
      ancestorTimelineId,
      ancestorStartLsn: start === undefined || start === null ? undefined : lsnParam(start, 'ancestor_start_lsn'),
    };
  }
  const pgVersion = body.pg_version ?? SUPPORTED_PG_VERSION;
  if (pgVersion !== SUPPORTED_PG_VERSION) {
    throw new PageserverError(400, `unsupported pg_version ${JSON.stringify(pgVersion)}: this pageserver runs PostgreSQL ${SUPPORTED_PG_VERSION}`);
  }
  return { mode: 'bootstrap', timelineId, pgVersion: SUPPORTED_PG_VERSION };
}

export function createHttpHandler(opts: { service: PageserverService; authToken?: string; log: (line: string) => void }) {
  const { service } = opts;

  async function route(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://pageserver');
    const parts = url.pathname.split('/').filter(Boolean);
    const method = req.method ?? 'GET';
    if (parts[0] !== 'v1') throw new PageserverError(404, `no route for ${method} ${url.pathname}`);
    if (parts.length === 2 && parts[1] === 'status') {
      if (method !== 'GET') throw new PageserverError(405, `method ${method} not allowed on ${url.pathname}`);
      sendJson(res, 200, { id: 1 });
      return;
    }
    if (opts.authToken !== undefined && !bearerTokenMatches(req.headers.authorization, opts.authToken)) {
      throw new PageserverError(401, 'missing or invalid bearer token');
    }
    if (parts[1] !== 'tenant') throw new PageserverError(404, `no route for ${method} ${url.pathname}`);
    if (parts.length === 3 && parts[2] === 'config') {
      if (method !== 'PUT') throw new PageserverError(405, `method ${method} not allowed on ${url.pathname}`);
      const body = await readBody(req);
      const unknown = Object.keys(body).filter((k) => k !== 'tenant_id' && k !== 'lsn_lease_length');
      if (unknown.length > 0) throw new PageserverError(400, `the dev pageserver's tenant config knows only lsn_lease_length, not ${unknown.join(', ')}`);
      const config: { lsn_lease_length?: string } = {};
      if (body.lsn_lease_length !== undefined && body.lsn_lease_length !== null) {
        try {
          parseDurationMs(body.lsn_lease_length, 'lsn_lease_length');
        } catch (err) {
          throw new PageserverError(400, (err as Error).message);
        }
        config.lsn_lease_length = body.lsn_lease_length as string;
      }
      await service.gc.setTenantConfig(idParam(body.tenant_id, 'tenant_id'), config);
      sendJson(res, 200, {});
      return;
    }
    if (parts.length === 2) {
      if (method !== 'GET') throw new PageserverError(405, `method ${method} not allowed on ${url.pathname}`);
      sendJson(res, 200, await service.listTenants());
      return;
    }
    const tenantId = idParam(parts[2], 'tenant_id');
    if (parts.length === 4 && parts[3] === 'location_config') {
      if (method !== 'PUT') throw new PageserverError(405, `method ${method} not allowed on ${url.pathname}`);
      await readBody(req);
      await service.ensureTenant(tenantId);
      sendJson(res, 200, { shards: [{ node_id: 1, shard_id: tenantId }], stripe_size: null });
      return;
    }
    if (parts[3] === 'timeline' && parts.length === 6 && parts[5] === 'do_gc') {
      if (method !== 'PUT') throw new PageserverError(405, `method ${method} not allowed on ${url.pathname}`);
      const body = await readBody(req);
      sendJson(res, 200, await service.gc.gcTimeline(tenantId, idParam(parts[4], 'timeline_id'), gcHorizonParam(body.gc_horizon)));
      return;
    }
    if (parts[3] === 'timeline' && parts.length === 6 && parts[5] === 'lsn_lease') {
      if (method !== 'POST') throw new PageserverError(405, `method ${method} not allowed on ${url.pathname}`);
      const body = await readBody(req);
      const { validUntil } = await service.gc.leaseLsn(tenantId, idParam(parts[4], 'timeline_id'), lsnParam(body.lsn, 'lsn'));
      sendJson(res, 200, { valid_until: new Date(validUntil).toISOString() });
      return;
    }
    if (parts[3] !== 'timeline' || parts.length > 5) throw new PageserverError(404, `no route for ${method} ${url.pathname}`);
    if (parts.length === 4) {
      if (method === 'GET') {
        sendJson(res, 200, await service.listTimelines(tenantId));
        return;
      }
      if (method === 'POST') {
        const request = parseCreateTimeline(await readBody(req));
        opts.log(`create timeline ${tenantId}/${request.timelineId} (${request.mode})`);
        sendJson(res, 201, await service.createTimeline(tenantId, request));
        return;
      }
      throw new PageserverError(405, `method ${method} not allowed on ${url.pathname}`);
    }
    const timelineId = idParam(parts[4], 'timeline_id');
    if (method === 'GET') {
      sendJson(res, 200, await service.timelineInfo(tenantId, timelineId));
      return;
    }
    if (method === 'DELETE') {
      await service.deleteTimeline(tenantId, timelineId);
      sendJson(res, 202, {});
      return;
    }
    throw new PageserverError(405, `method ${method} not allowed on ${url.pathname}`);
  }

  return (req: http.IncomingMessage, res: http.ServerResponse): void => {
    route(req, res).catch((err: unknown) => {
      const status = err instanceof PageserverError ? err.status : 500;
      const message = err instanceof Error ? err.message : String(err);
      if (status >= 500) opts.log(`${req.method} ${req.url}: ${message}`);
      if (res.headersSent) {
        res.destroy();
        return;
      }
      // Drain an unread body so the client sees the answer rather than a reset connection.
      req.resume();
      res.setHeader('connection', 'close');
      sendJson(res, status, { msg: message });
    });
  };
}
