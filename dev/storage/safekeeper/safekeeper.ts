/**
 * A dev safekeeper: stores WAL pushed by computes (through the stock WAL pusher) per timeline,
 * votes in the pusher's and the sync command's elections, and serves status and WAL over libpq and
 * HTTP. One process per safekeeper; three make the default quorum.
 */
import { mkdirSync } from 'node:fs';
import http from 'node:http';
import { startPgWireServer } from '../pgwire/server';
import { createCommandHandler } from './commands';
import { createHttpHandler } from './http-api';
import { TimelineRegistry } from './registry';

export interface SafekeeperOptions {
  id: number;
  dir: string;
  host: string;
  /** 0 = any free port. */
  pgPort: number;
  httpPort: number;
  /** If set, libpq clients must send it as password and HTTP clients as `Authorization: Bearer`. */
  authToken?: string;
  log?: (line: string) => void;
}

export interface RunningSafekeeper {
  id: number;
  pgPort: number;
  httpPort: number;
  /** host:port of the libpq listener, as computes list it in neon.safekeepers. */
  pgAddress: string;
  httpUrl: string;
  close(): Promise<void>;
}

export async function startSafekeeper(opts: SafekeeperOptions): Promise<RunningSafekeeper> {
  const log = opts.log ?? (() => {});
  mkdirSync(opts.dir, { recursive: true });
  const registry = new TimelineRegistry(opts.dir);
  const pg = await startPgWireServer({
    host: opts.host,
    port: opts.pgPort,
    ...(opts.authToken !== undefined ? { password: opts.authToken } : {}),
    onQuery: createCommandHandler(registry, log),
    log,
  });
  const server = http.createServer(createHttpHandler({ id: opts.id, registry, log, ...(opts.authToken !== undefined ? { authToken: opts.authToken } : {}) }));
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(opts.httpPort, opts.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } catch (err) {
    await pg.close();
    throw err;
  }
  const address = server.address();
  const httpPort = typeof address === 'object' && address ? address.port : opts.httpPort;
  return {
    id: opts.id,
    pgPort: pg.port,
    httpPort,
    pgAddress: `${opts.host}:${pg.port}`,
    httpUrl: `http://${opts.host}:${httpPort}`,
    async close() {
      const httpClosed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      await pg.close();
      await httpClosed;
      await registry.closeAll();
    },
  };
}
