/**
 * The dev safekeeper's management API, shaped like Neon's (safekeeper/src/http/routes.rs):
 *   GET    /v1/status                                   {id}
 *   POST   /v1/tenant/timeline                          create {tenant_id, timeline_id, start_lsn, commit_lsn?, pg_version?}
 *   GET    /v1/tenant/<t>/timeline/<tl>                 TimelineStatus
 *   DELETE /v1/tenant/<t>/timeline/<tl>                 {dir_existed}
 *   GET    /v1/tenant/<t>/timeline/<tl>/wal?start&end   raw WAL bytes (dev only; 416 if not all there)
 * Errors are `{"msg": "..."}` like Neon's.
 */
import { bearerTokenMatches } from '../../../common/bearer-token';
import http from 'node:http';
import { pipeline } from 'node:stream/promises';
import { Readable } from 'node:stream';
import { isNeonId } from '../../../model/ids';
import { formatLsn, isLsn, parseLsn } from '../../../model/lsn';
import type { TimelineRegistry } from './registry';
import type { Timeline } from './timeline';

class HttpError extends Error {
  constructor(
    public readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

const MAX_BODY = 64 * 1024;

export function timelineStatusJson(t: Timeline): Record<string, unknown> {
  const s = t.snapshot();
  return {
    tenant_id: s.tenantId,
    timeline_id: s.timelineId,
    mconf: { generation: 0, members: [], new_members: null },
    acceptor_state: {
      term: Number(s.term),
      epoch: Number(t.lastLogTerm < 0n ? 0n : t.lastLogTerm),
      term_history: s.termHistory.map((e) => ({ term: Number(e.term), lsn: formatLsn(e.lsn) })),
    },
    pg_info: { pg_version: s.pgVersion, system_id: 0, wal_seg_size: 16 * 1024 * 1024 },
    flush_lsn: formatLsn(s.flushLsn),
    timeline_start_lsn: formatLsn(s.timelineStartLsn),
    local_start_lsn: formatLsn(s.timelineStartLsn),
    commit_lsn: formatLsn(s.commitLsn),
    backup_lsn: formatLsn(s.backupLsn),
    peer_horizon_lsn: formatLsn(s.peerHorizonLsn),
    remote_consistent_lsn: formatLsn(s.remoteConsistentLsn),
    peers: [],
    walsenders: [],
    // Neon lists the connected walproposers here; the dev pageserver ingests once none is left.
    walreceivers: t.pushing ? [{ state: 'Streaming' }] : [],
  };
}

function sendJson(res: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

async function readJson(req: http.IncomingMessage): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req as AsyncIterable<Buffer>) {
    size += c.length;
    if (size > MAX_BODY) throw new HttpError(413, `request body exceeds ${MAX_BODY} bytes`);
    chunks.push(c);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    throw new HttpError(400, 'request body is not valid JSON');
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new HttpError(400, 'request body must be a JSON object');
  return parsed as Record<string, unknown>;
}

function ids(tenantId: string, timelineId: string): { tenantId: string; timelineId: string } {
  if (!isNeonId(tenantId)) throw new HttpError(400, `invalid tenant_id ${JSON.stringify(tenantId)}: expected 32 lower-case hex characters`);
  if (!isNeonId(timelineId)) throw new HttpError(400, `invalid timeline_id ${JSON.stringify(timelineId)}: expected 32 lower-case hex characters`);
  return { tenantId, timelineId };
}

function lsnParam(value: unknown, name: string, required: true): bigint;
function lsnParam(value: unknown, name: string, required: false): bigint | undefined;
function lsnParam(value: unknown, name: string, required: boolean): bigint | undefined {
  if (value === undefined || value === null) {
    if (required) throw new HttpError(400, `${name} is required`);
    return undefined;
  }
  if (typeof value !== 'string' || !isLsn(value)) throw new HttpError(400, `${name} must be an LSN like 0/16B5A50, got ${JSON.stringify(value)}`);
  return parseLsn(value);
}

export function createHttpHandler(opts: { id: number; registry: TimelineRegistry; authToken?: string; log: (l: string) => void }) {
  const { registry } = opts;

  async function route(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://safekeeper');
    const parts = url.pathname.split('/').filter(Boolean);
    const method = req.method ?? 'GET';
    if (opts.authToken !== undefined && !bearerTokenMatches(req.headers.authorization, opts.authToken)) {
      throw new HttpError(401, 'missing or invalid bearer token');
    }
    if (parts.length === 2 && parts[0] === 'v1' && parts[1] === 'status' && method === 'GET') {
      sendJson(res, 200, { id: opts.id });
      return;
    }
    if (parts.length === 3 && parts[0] === 'v1' && parts[1] === 'tenant' && parts[2] === 'timeline' && method === 'POST') {
      const body = await readJson(req);
      const { tenantId, timelineId } = ids(String(body.tenant_id ?? ''), String(body.timeline_id ?? ''));
      const startLsn = lsnParam(body.start_lsn, 'start_lsn', true);
      const commitLsn = lsnParam(body.commit_lsn, 'commit_lsn', false);
      if (startLsn === 0n) throw new HttpError(400, 'start_lsn must not be 0/0');
      if (commitLsn !== undefined && commitLsn < startLsn) throw new HttpError(400, 'commit_lsn must not precede start_lsn');
      const pgVersion = body.pg_version === undefined ? undefined : Number(body.pg_version);
      if (pgVersion !== undefined && !Number.isInteger(pgVersion)) throw new HttpError(400, 'pg_version must be an integer');
      const { timeline, created } = await registry.getOrCreate(tenantId, timelineId, {
        startLsn,
        ...(commitLsn !== undefined ? { commitLsn } : {}),
        ...(pgVersion !== undefined ? { pgVersion: pgVersion < 1000 ? pgVersion * 10000 : pgVersion } : {}),
      });
      if (!created && timeline.snapshot().timelineStartLsn !== startLsn) {
        throw new HttpError(409, `timeline ${tenantId}/${timelineId} already exists with start_lsn ${formatLsn(timeline.snapshot().timelineStartLsn)}`);
      }
      opts.log(`timeline ${tenantId}/${timelineId} ${created ? 'created' : 'already exists'} at ${formatLsn(startLsn)}`);
      sendJson(res, created ? 201 : 200, timelineStatusJson(timeline));
      return;
    }
    if (parts.length >= 5 && parts[0] === 'v1' && parts[1] === 'tenant' && parts[3] === 'timeline') {
      const { tenantId, timelineId } = ids(parts[2]!, parts[4]!);
      if (parts.length === 5 && method === 'DELETE') {
        sendJson(res, 200, { dir_existed: await registry.delete(tenantId, timelineId) });
        return;
      }
      const isWal = parts.length === 6 && parts[5] === 'wal' && method === 'GET';
      const start = isWal ? lsnParam(url.searchParams.get('start') ?? undefined, 'start', true) : 0n;
      const end = isWal ? lsnParam(url.searchParams.get('end') ?? undefined, 'end', true) : 0n;
      if (end < start) throw new HttpError(400, 'end must not precede start');
      const t = await registry.get(tenantId, timelineId);
      if (!t) throw new HttpError(404, `timeline ${tenantId}/${timelineId} not found`);
      if (parts.length === 5 && method === 'GET') {
        sendJson(res, 200, timelineStatusJson(t));
        return;
      }
      if (parts.length === 6 && parts[5] === 'wal' && method === 'GET') {
        const problem = t.checkRange(start, end);
        if (problem) throw new HttpError(416, problem);
        const s = t.snapshot();
        res.writeHead(200, {
          'content-type': 'application/octet-stream',
          'content-length': String(end - start),
          'x-flush-lsn': formatLsn(s.flushLsn),
          'x-commit-lsn': formatLsn(s.commitLsn),
        });
        await pipeline(Readable.from(t.readWal(start, end)), res);
        return;
      }
    }
    throw new HttpError(404, `no route for ${method} ${url.pathname}`);
  }

  return (req: http.IncomingMessage, res: http.ServerResponse): void => {
    route(req, res).catch((err: unknown) => {
      const status = err instanceof HttpError ? err.status : 500;
      const msg = err instanceof Error ? err.message : String(err);
      if (status === 500) opts.log(`http ${req.method} ${req.url}: ${msg}`);
      if (res.headersSent) res.destroy();
      else sendJson(res, status, { msg });
    });
  };
}
