import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { AgentState, AssignResult } from './compute-agent';

/** An assignment request is one small JSON object; anything longer is refused unread. */
const MAX_BODY_BYTES = 4096;

export interface AssignmentTarget {
  readonly status: AgentState;
  assign(computeId: unknown): Promise<AssignResult>;
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

function send(res: http.ServerResponse, status: number, body: unknown): void {
  const text = `${JSON.stringify(body)}\n`;
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

async function readJson(req: http.IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) throw new HttpError(413, `the request body is over ${MAX_BODY_BYTES} bytes`);
    chunks.push(chunk);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown;
  } catch {
    throw new HttpError(400, 'the request body is not JSON');
  }
}

const ASSIGN_STATUS: Record<AssignResult['outcome'], number> = { assigned: 200, conflict: 409, invalid: 400, unavailable: 503 };

async function route(target: AssignmentTarget, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://localhost');
  if (url.pathname === '/assignment') {
    if (req.method !== 'GET') throw new HttpError(405, 'use GET /assignment');
    return send(res, 200, target.status);
  }
  if (url.pathname === '/assign') {
    if (req.method !== 'POST') throw new HttpError(405, 'use POST /assign');
    const body = await readJson(req);
    if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new HttpError(400, 'the request body must be a JSON object {"compute_id": "..."}');
    const result = await target.assign((body as Record<string, unknown>).compute_id);
    const { outcome, ...rest } = result;
    if (outcome === 'conflict') return send(res, 409, { error: `this VM is already assigned to compute ${result.compute_id}`, ...rest });
    return send(res, ASSIGN_STATUS[outcome], rest);
  }
  throw new HttpError(404, `no route ${url.pathname}; the routes are POST /assign and GET /assignment`);
}

/**
 * The pool VM agent's internal API (compute_ctl's internal port): `POST /assign
 * {"compute_id": "..."}` binds the waiting worker to a compute and answers once it polls;
 * `GET /assignment` shows the state. Bound to loopback only: whoever reaches it can point the VM
 * at a compute, so only the VM's own processes (the platform's agent) may.
 */
export async function startAssignmentServer(target: AssignmentTarget, port: number): Promise<{ server: http.Server; port: number; close: () => Promise<void> }> {
  const server = http.createServer((req, res) => {
    route(target, req, res).catch((err: unknown) => {
      const status = err instanceof HttpError ? err.status : 500;
      if (!res.headersSent) send(res, status, { error: err instanceof HttpError ? err.message : 'internal error' });
      else res.destroy();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  return {
    server,
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
