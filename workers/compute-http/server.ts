/**
 * compute_ctl's external HTTP API (compute_tools/src/http/routes), served by the compute worker
 * inside the VM. Each call maps onto the compute's workflow (updates for changes, queries for
 * reads); catalog reads and probes go to the local Postgres. Every route but /metrics needs a
 * bearer JWT (see auth.ts); errors are `{"error": "..."}` with compute_ctl's status codes.
 */
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { pipeline } from 'node:stream/promises';
import { WorkflowNotFoundError, WorkflowUpdateFailedError, type Client, type WorkflowHandle } from '@temporalio/client';
import { parseComputeConfig } from '../../model/compute-spec';
import { computeWorkflowId, type ComputeStatus, type ComputeStatusResponse, type TerminateMode } from '../../model/compute-status';
import {
  apiKeysQuery,
  cancelPrewarmUpdate,
  configureUpdate,
  lfcStatusQuery,
  offloadUpdate,
  prewarmUpdate,
  statusQuery,
  terminateUpdate,
} from '../../workflows/compute/messages';
import type { computeWorkflow } from '../../workflows/compute/workflow';
import { promoteUpdate } from '../../workflows/compute/promote-messages';
import { isLsn } from '../../model/lsn';
import { workflowApiKeys, type ApiKeySource } from './api-keys';
import { bearerToken, checkClaims } from './auth';
import { createComputeMetrics, statusLabel } from './compute-metrics';
import { HttpError, parseJsonBody, readBody, sendEmpty, sendError, sendJson } from './http-kit';
import { checkWritability, dbsAndRoles, dumpSchema, insights, type LocalPostgres } from './local-postgres';
import { log as logger } from '../../common/logger';

export interface ComputeHttpOptions {
  computeId: string;
  /** compute_ctl's external port; 3080 by default, 0 picks a free one. */
  port: number;
  /** compute_ctl binds every address. */
  host?: string;
  /** A client with the same connection and encrypted data converter as the worker. */
  client: Client;
  postgres: LocalPostgres;
  /** Default: the workflow's compute_ctl_config.jwks. */
  keys?: ApiKeySource;
  log?: (line: string) => void;
}

export interface ComputeHttpServer {
  port: number;
  close(): Promise<void>;
}

interface Request {
  req: IncomingMessage;
  res: ServerResponse;
  url: URL;
  body: Buffer;
}

type Handler = (r: Request) => Promise<void>;

/** The cause an update failure carries: the validator's or the handler's own message. */
function rootMessage(err: unknown): string {
  let e: unknown = err;
  while (e instanceof Error && 'cause' in e && e.cause instanceof Error) e = e.cause;
  return e instanceof Error ? e.message : String(e);
}

/** compute_ctl's /status body. */
function statusBody(s: ComputeStatusResponse) {
  return { start_time: s.start_time, tenant: s.tenant, timeline: s.timeline, status: s.status, last_active: s.last_active, error: s.error };
}

function wrongState(status: ComputeStatus): HttpError {
  return new HttpError(412, `invalid compute status: ${statusLabel(status)}`);
}

export async function startComputeHttpServer(opts: ComputeHttpOptions): Promise<ComputeHttpServer> {
  const log = opts.log ?? ((line: string) => logger().info(line));
  const handle: WorkflowHandle<typeof computeWorkflow> = opts.client.workflow.getHandle(computeWorkflowId(opts.computeId));

  /** Runs a workflow call; a compute with no workflow is a clear 500, not a stack trace. */
  async function call<T>(what: string, run: () => Promise<T>): Promise<T> {
    try {
      return await run();
    } catch (err) {
      if (err instanceof WorkflowNotFoundError) throw new HttpError(500, `${what}: compute ${opts.computeId} has no workflow (start it first)`);
      throw err;
    }
  }
  const status = () => call('status', () => handle.query(statusQuery));
  const lfc = () => call('lfc status', () => handle.query(lfcStatusQuery));

  const keys =
    opts.keys ??
    workflowApiKeys(async () => {
      try {
        return await handle.query(apiKeysQuery);
      } catch (err) {
        // No workflow yet: no config, so no keys (the dev default); every other route says why.
        if (err instanceof WorkflowNotFoundError) return { keys: [] };
        throw err;
      }
    });
  let warnedAuthOff = false;
  const metrics = createComputeMetrics({ status, lfc });

  async function authorize(req: IncomingMessage): Promise<void> {
    const keySet = await keys.current();
    if (keySet.size === 0) {
      if (!warnedAuthOff) {
        warnedAuthOff = true;
        log(`compute API on compute ${opts.computeId}: the key set (compute_ctl_config.jwks) is empty, so requests are NOT authenticated; give keys in the spec or --jwks-file`);
      }
      return;
    }
    const claims = await keySet.verify(bearerToken(req.headers.authorization));
    checkClaims(claims, opts.computeId);
  }

  /** Maps a refused or failed update onto compute_ctl's answers. */
  function updateError(err: unknown, refusals: [RegExp, number][]): never {
    if (err instanceof WorkflowUpdateFailedError) {
      const message = rootMessage(err);
      for (const [pattern, code] of refusals) if (pattern.test(message)) throw new HttpError(code, message);
      throw new HttpError(500, message);
    }
    throw err;
  }

  const routes: Record<string, Partial<Record<string, Handler>>> = {
    '/status': {
      GET: async ({ res }) => sendJson(res, 200, statusBody(await status())),
    },
    '/metrics.json': {
      GET: async ({ res }) => {
        // compute_ctl's ComputeMetrics; extensions are never downloaded here, so those stay 0.
        sendJson(res, 200, { ...(await status()).metrics, load_ext_ms: 0, num_ext_downloaded: 0, largest_ext_size: 0, total_ext_download_size: 0 });
      },
    },
    '/configure': {
      POST: async ({ req, res, body }) => {
        const json = parseJsonBody(body, req.headers['content-type']);
        if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new HttpError(400, 'invalid request body: expected a JSON object {spec, compute_ctl_config}');
        for (const field of ['spec', 'compute_ctl_config']) {
          if (!(field in json)) throw new HttpError(400, `invalid request body: missing field \`${field}\``);
        }
        const parsed = parseComputeConfig(json);
        if (!parsed.ok) throw new HttpError(400, `invalid spec: ${parsed.errors.join('; ')}`);
        const before = await status();
        if (before.status !== 'empty' && before.status !== 'running') throw wrongState(before.status);
        let after: ComputeStatusResponse;
        try {
          after = await call('configure', () => handle.executeUpdate(configureUpdate, { args: [json] }));
        } catch (err) {
          if (err instanceof WorkflowUpdateFailedError && /configure needs empty or running/.test(rootMessage(err))) throw wrongState((await status()).status);
          updateError(err, [
            [/invalid compute spec/, 400],
            [/cannot switch tenant or timeline/, 400],
          ]);
        } finally {
          keys.invalidate();
        }
        if (after.status !== 'running') throw new HttpError(500, `compute configuration failed: ${after.error ?? `compute is ${after.status}`}`);
        sendJson(res, 200, statusBody(after));
      },
    },
    '/terminate': {
      POST: async ({ res, url }) => {
        const mode = url.searchParams.get('mode') ?? 'fast';
        if (mode !== 'fast' && mode !== 'immediate') throw new HttpError(400, `failed to deserialize query string: mode: unknown variant \`${mode}\`, expected \`fast\` or \`immediate\``);
        const before = await status();
        if (before.status === 'terminated') return sendJson(res, 201, { lsn: before.terminate_lsn });
        if (before.status !== 'empty' && before.status !== 'running' && before.status !== 'failed') throw wrongState(before.status);
        try {
          const { lsn } = await call('terminate', () => handle.executeUpdate(terminateUpdate, { args: [{ mode: mode as TerminateMode }] }));
          sendJson(res, 200, { lsn });
        } catch (err) {
          if (err instanceof WorkflowUpdateFailedError && /terminate needs empty or running/.test(rootMessage(err))) throw wrongState((await status()).status);
          updateError(err, [[/reconfiguration is in progress/, 412]]);
        }
      },
    },
    '/promote': {
      // compute_ctl: {spec, wal_flush_lsn} -> 200 PromoteState; a failure is 500 with a PromoteState body.
      // Its body goes through axum's plain Json extractor, so a bad body gets a plain-text 400/422.
      POST: async ({ res, body }) => {
        const plain = (code: number, text: string) => {
          res.writeHead(code, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(text) });
          res.end(text);
        };
        let json: unknown;
        try {
          json = JSON.parse(body.toString('utf8'));
        } catch (err) {
          return plain(400, `Failed to parse the request body as JSON: ${(err as Error).message}`);
        }
        const fields = typeof json === 'object' && json !== null && !Array.isArray(json) ? (json as Record<string, unknown>) : undefined;
        if (!fields || !('spec' in fields) || typeof fields.wal_flush_lsn !== 'string' || !isLsn(fields.wal_flush_lsn)) {
          return plain(422, 'Failed to deserialize the JSON body into the target type: expected {spec, wal_flush_lsn: "X/Y"}');
        }
        const parsed = parseComputeConfig(fields.spec);
        if (!parsed.ok) throw new HttpError(400, `invalid spec: ${parsed.errors.join('; ')}`);
        try {
          const state = await call('promote', () => handle.executeUpdate(promoteUpdate, { args: [{ spec: fields.spec, safekeepersLsn: fields.wal_flush_lsn as string }] }));
          sendJson(res, 200, state);
        } catch (err) {
          if (!(err instanceof WorkflowUpdateFailedError)) throw err;
          sendJson(res, 500, { status: 'failed', error: rootMessage(err) });
        }
      },
    },
    '/lfc/prewarm': {
      GET: async ({ res }) => sendJson(res, 200, (await lfc()).prewarm),
      POST: async ({ res, url }) => {
        const fromEndpoint = url.searchParams.get('from_endpoint') ?? undefined;
        try {
          await call('prewarm', () => handle.executeUpdate(prewarmUpdate, { args: [{ fromEndpoint }] }));
        } catch (err) {
          updateError(err, [
            [/already running/, 429],
            [/needs a running compute/, 412],
            [/from_endpoint is not a valid/, 400],
          ]);
        }
        sendEmpty(res, 202);
      },
      DELETE: async ({ res }) => {
        try {
          await call('cancel prewarm', () => handle.executeUpdate(cancelPrewarmUpdate, { args: [] }));
        } catch (err) {
          // compute_ctl answers 202 whether or not a prewarm was running.
          if (!(err instanceof WorkflowUpdateFailedError && /no prewarm is running/.test(rootMessage(err)))) updateError(err, []);
        }
        sendEmpty(res, 202);
      },
    },
    '/lfc/offload': {
      GET: async ({ res }) => sendJson(res, 200, (await lfc()).offload),
      POST: async ({ res }) => {
        try {
          await call('offload', () => handle.executeUpdate(offloadUpdate, { args: [] }));
        } catch (err) {
          updateError(err, [
            [/already running/, 429],
            [/needs a running compute/, 412],
          ]);
        }
        sendEmpty(res, 202);
      },
    },
    '/dbs_and_roles': {
      GET: async ({ res }) => sendJson(res, 200, await dbsAndRoles(opts.postgres)),
    },
    '/database_schema': {
      GET: async ({ res, url }) => {
        const database = url.searchParams.get('database');
        if (!database) throw new HttpError(400, 'failed to deserialize query string: missing field `database`');
        const dump = await dumpSchema(opts.postgres, database);
        // The first bytes (or pg_dump's failure before any) decide the status; then the text
        // streams, and the response ends only once pg_dump exited cleanly (else it is cut off).
        const chunks = dump.stdout[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
        const first = await chunks.next();
        if (first.done) await dump.done;
        res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' });
        if (!first.done) {
          await pipeline(
            (async function* () {
              yield first.value;
              for (let next = await chunks.next(); !next.done; next = await chunks.next()) yield next.value;
            })(),
            res,
            { end: false },
          );
          await dump.done;
        }
        res.end();
      },
    },
    '/check_writability': {
      POST: async ({ res }) => {
        const s = await status();
        if (s.status !== 'running') throw wrongState(s.status);
        await checkWritability(opts.postgres);
        sendJson(res, 200, true);
      },
    },
    '/insights': {
      GET: async ({ res }) => {
        const s = await status();
        if (s.status !== 'running') throw wrongState(s.status);
        // compute_ctl serializes the JSON text as a JSON string; clients parse twice.
        sendJson(res, 200, await insights(opts.postgres));
      },
    },
  };

  async function handle_(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const requestId = typeof req.headers['x-request-id'] === 'string' ? req.headers['x-request-id'] : randomUUID();
    res.setHeader('x-request-id', requestId);
    const url = new URL(req.url ?? '/', 'http://compute');
    try {
      if (url.pathname === '/metrics') {
        if (req.method !== 'GET') return sendEmpty(res, 405);
        const text = await metrics.render();
        res.writeHead(200, { 'content-type': metrics.contentType });
        res.end(text);
        return;
      }
      const route = routes[url.pathname];
      if (!route) return sendEmpty(res, 404);
      const handler = route[req.method ?? ''];
      if (!handler) return sendEmpty(res, 405);
      await authorize(req);
      const body = await readBody(req);
      await handler({ req, res, url, body });
    } catch (err) {
      const httpErr = err instanceof HttpError ? err : new HttpError(500, (err as Error).message ?? String(err));
      if (httpErr.status >= 500) log(`compute API ${req.method} ${url.pathname} (${requestId}): ${httpErr.status} ${httpErr.message}`);
      if (res.headersSent) {
        res.destroy();
        return;
      }
      if (httpErr.status === 413) {
        // The rest of the body is not read: close the connection after the answer.
        res.setHeader('connection', 'close');
        sendError(res, httpErr);
        req.resume();
        return;
      }
      sendError(res, httpErr);
    }
  }

  const server: Server = createServer((req, res) => {
    void handle_(req, res);
  });
  // A client that opens a connection and sends nothing must not hold it forever.
  server.headersTimeout = 30_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host ?? '0.0.0.0', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
