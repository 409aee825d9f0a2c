/**
 * The import_complete callback endpoint: the pageserver tells the control plane an import finished
 * (Neon's control plane takes this call), and the waiting import workflow is signalled.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Client } from '@temporalio/client';
import { bearerTokenMatches } from '../common/bearer-token';
import { maskSecrets } from '../common/errors';
import { isNeonId } from '../model/ids';
import { importCompleteSignal } from '../workflows/import/messages';

/**
 * The control plane's `PUT /import_complete` endpoint, which the storage controller (the dev
 * pageserver with --import-complete-url) calls when an import ends: it finds the running import
 * of that timeline and signals it, so the workflow stops waiting at once instead of at its next
 * poll. Idempotent, as the caller repeats the call until it is acknowledged: 200 when the import
 * was signalled or none is running (nothing left to tell), 400 for a malformed body, 503 when
 * Temporal cannot be reached (the caller retries).
 *
 * It fails closed: only calls with the token (the storage's, which the pageserver presents as a
 * bearer token) are served; without a configured token every call gets 401 and /status says why.
 * (Even an accepted notice only wakes the import: its outcome is what the pageserver says.)
 */
export function importCompleteHandler(client: Client, opts: { token?: string; log?: (line: string) => void } = {}) {
  const log = opts.log ?? (() => {});
  const refusal = callbackRefusal(opts.token);
  const send = (res: http.ServerResponse, status: number, body: unknown) => {
    const text = JSON.stringify(body);
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
    res.end(text);
  };
  const handle = async (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> => {
    // Liveness, for whoever supervises the endpoint (the dev stack probes it).
    if (req.url === '/status' && req.method === 'GET') return refusal ? send(res, 503, { ok: false, reason: refusal }) : send(res, 200, { ok: true });
    if (req.url !== '/import_complete') return send(res, 404, { msg: `no route for ${req.method} ${req.url}` });
    if (req.method !== 'PUT') return send(res, 405, { msg: `method ${req.method} not allowed` });
    if (refusal) return send(res, 401, { msg: refusal });
    if (opts.token === undefined || !bearerTokenMatches(req.headers.authorization, opts.token)) {
      return send(res, 401, { msg: 'missing or wrong bearer token' });
    }
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of req as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > 64 * 1024) return send(res, 413, { msg: 'body too large' });
      chunks.push(chunk);
    }
    let body: { tenant_id?: unknown; timeline_id?: unknown; error?: unknown };
    try {
      body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as typeof body;
    } catch {
      return send(res, 400, { msg: 'body is not JSON' });
    }
    const { tenant_id, timeline_id, error } = body ?? {};
    if (typeof tenant_id !== 'string' || !isNeonId(tenant_id) || typeof timeline_id !== 'string' || !isNeonId(timeline_id)) {
      return send(res, 400, { msg: 'tenant_id and timeline_id must be 32 lower-case hex characters' });
    }
    if (error !== null && error !== undefined && typeof error !== 'string') return send(res, 400, { msg: 'error must be a string or null' });
    const notice = { tenant_id, timeline_id, error: typeof error === 'string' ? maskSecrets(error).slice(0, 4000) : null };
    try {
      const query = `WorkflowType = 'importWorkflow' AND TenantId = '${tenant_id}' AND TimelineId = '${timeline_id}' AND ExecutionStatus = 'Running'`;
      let signalled = 0;
      for await (const wf of client.workflow.list({ query })) {
        await client.workflow.getHandle(wf.workflowId, wf.runId).signal(importCompleteSignal, notice);
        signalled++;
      }
      log(`import_complete ${tenant_id}/${timeline_id}${notice.error ? ` (error: ${notice.error})` : ''}: signalled ${signalled} import(s)`);
      return send(res, 200, { signalled });
    } catch (err) {
      log(`import_complete ${tenant_id}/${timeline_id}: ${maskSecrets((err as Error).message)}`);
      return send(res, 503, { msg: 'cannot reach Temporal; retry' });
    }
  };
  return (req: http.IncomingMessage, res: http.ServerResponse): void => {
    handle(req, res).catch((err: unknown) => {
      if (!res.headersSent) send(res, 500, { msg: maskSecrets(err instanceof Error ? err.message : String(err)) });
      else res.destroy();
    });
  };
}

/** Why the callback endpoint refuses every call, or undefined when it has a token to check. */
export function callbackRefusal(token: string | undefined): string | undefined {
  if (token !== undefined && token !== '') return undefined;
  return 'no token is configured (STORAGE_AUTH_TOKEN or STORAGE_AUTH_TOKEN_FILE), so this endpoint refuses every call: anyone could otherwise end or fail imports';
}

/** Serves `importCompleteHandler` on host:port until closed; says at once if it will refuse every call. */
export async function startImportCallbackServer(
  client: Client,
  opts: { host: string; port: number; token?: string; log?: (line: string) => void },
): Promise<{ url: string; close: () => Promise<void> }> {
  const refusal = callbackRefusal(opts.token);
  if (refusal) opts.log?.(`import callback server: ${refusal}`);
  const server = http.createServer(importCompleteHandler(client, { token: opts.token, log: opts.log }));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://${opts.host}:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
