/**
 * The dev pageserver: page service (libpq) + management API (HTTP) over a durable directory.
 * `startPageserver` runs it in-process (tests); main.ts runs it as a process.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import { findPostgres } from '../../../common/pg-binaries';
import { startPgWireServer } from '../pgwire/server';
import { createHttpHandler } from './http-api';
import type { ImageRetention } from './images';
import { createPageServiceHandler } from './page-service';
import { postgresCannotReach, stopAllPostgres } from './postgres-run';
import { SafekeeperClient } from './safekeeper-client';
import { importCompleteNotifier } from './pgdata-imports';
import { PageserverService, type ImportPgdataHandler } from './service';
import { TimelineStore } from './timeline-store';

export interface PageserverOptions {
  dir: string;
  host: string;
  /** libpq page service port; 0 = any free port. */
  pgPort: number;
  /** management API port; 0 = any free port. */
  httpPort: number;
  /** Safekeeper HTTP base URLs, e.g. http://127.0.0.1:7676. */
  safekeepers: string[];
  /** When set: page service password, bearer token on the API and towards the safekeepers. */
  authToken?: string;
  pgBinDir?: string;
  importPgdata?: ImportPgdataHandler;
  /** How often a background import checks for the upload's commit marker (default 10 s, as Neon). */
  importPollIntervalMs?: number;
  /** Where the storage controller's `PUT .../import_complete` callback goes when an import ends. */
  importCompleteUrl?: string;
  /** Upper bound for one WAL replay (default 10 minutes). */
  materializeTimeoutMs?: number;
  /** Longest wait of a base backup for its timeline's lock (default 3 × materializeTimeoutMs); then a 503 naming the holder. */
  lockWaitMs?: number;
  /** Background WAL ingest poll interval (default 500 ms; 0 = replay only on request). */
  ingestPollMs?: number;
  /** Images up to this size keep a precomputed base backup; bigger ones are packed per request (default 256 MiB). */
  precomputeLimitBytes?: number;
  /** Which images survive once newer ones exist (default DEFAULT_IMAGE_RETENTION). */
  imageRetention?: ImageRetention;
  /** How long a page service client may leave a base backup unread before it is disconnected (default 2 minutes). */
  writeStallTimeoutMs?: number;
  log?: (line: string) => void;
}

export interface Pageserver {
  pgPort: number;
  httpPort: number;
  service: PageserverService;
  close(): Promise<void>;
}

export async function startPageserver(opts: PageserverOptions): Promise<Pageserver> {
  const log = opts.log ?? ((line: string) => console.log(`${new Date().toISOString()} ${line}`));
  const install = findPostgres({ pgBinDir: opts.pgBinDir });
  const store = new TimelineStore(opts.dir, opts.precomputeLimitBytes);
  await store.init();
  const unreachable = postgresCannotReach(store.tenantsDir);
  if (unreachable) log(`note: ${unreachable}; images are built under ${os.tmpdir()} and moved into place (slower)`);
  const service = new PageserverService({
    store,
    safekeepers: new SafekeeperClient(opts.safekeepers.map((u) => u.replace(/\/+$/, '')), opts.authToken, log),
    install,
    materializeTimeoutMs: opts.materializeTimeoutMs ?? 10 * 60 * 1000,
    ...(opts.lockWaitMs !== undefined ? { lockWaitMs: opts.lockWaitMs } : {}),
    ...(opts.ingestPollMs !== undefined ? { ingestPollMs: opts.ingestPollMs } : {}),
    ...(opts.imageRetention ? { imageRetention: opts.imageRetention } : {}),
    log,
    ...(opts.importPgdata ? { importPgdata: opts.importPgdata } : {}),
    imports: {
      pollIntervalMs: opts.importPollIntervalMs ?? 10_000,
      ...(opts.importCompleteUrl ? { onComplete: importCompleteNotifier(opts.importCompleteUrl, { token: opts.authToken, log }) } : {}),
    },
  });
  await service.init();

  const pgwire = await startPgWireServer({
    host: opts.host,
    port: opts.pgPort,
    ...(opts.authToken !== undefined ? { password: opts.authToken } : {}),
    onQuery: createPageServiceHandler(service, log),
    log,
    ...(opts.writeStallTimeoutMs !== undefined ? { writeStallTimeoutMs: opts.writeStallTimeoutMs } : {}),
  });

  const httpServer = http.createServer(createHttpHandler({ service, log, ...(opts.authToken !== undefined ? { authToken: opts.authToken } : {}) }));
  httpServer.requestTimeout = 15 * 60 * 1000;
  try {
    await new Promise<void>((resolve, reject) => {
      httpServer.once('error', reject);
      httpServer.listen(opts.httpPort, opts.host, () => {
        httpServer.off('error', reject);
        resolve();
      });
    });
  } catch (err) {
    await pgwire.close();
    await service.close();
    throw err;
  }

  return {
    pgPort: pgwire.port,
    httpPort: (httpServer.address() as AddressInfo).port,
    service,
    async close() {
      const httpClosed = new Promise<void>((resolve) => httpServer.close(() => resolve()));
      httpServer.closeAllConnections();
      await Promise.all([pgwire.close(), httpClosed, service.close()]);
      await stopAllPostgres();
    },
  };
}
