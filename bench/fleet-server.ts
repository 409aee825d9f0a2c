/**
 * The fleet benchmark's Temporal server, private to the run: the Temporal CLI dev server (the
 * embedded dev stack's server, SQLite on tmpfs) or the production-style server
 * (go.temporal.io/server on its own PostgreSQL, as `durable-compute dev temporal-server up` runs it).
 * Either exposes its Prometheus `action` counter, which counts billable actions.
 */
import { chmodSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Connection } from '@temporalio/client';
import { freePort } from '../dev/processes';
import { provisionTemporalCli } from '../dev/temporal-cli';
import { sqlTemporalServerStatus, startSqlTemporalServer, stopSqlTemporalServer } from '../dev/temporal-server/server';
import { SEARCH_ATTRIBUTES } from '../model/search-attributes';
import { log, processUsage, startChild } from './fleet-processes';

export type FleetServerKind = 'dev' | 'sql';

export interface FleetServer {
  address: string;
  namespace: string;
  metricsUrl: string;
  /** What the results call it. */
  description: string;
  /** The server's processes, each measured with its children (PostgreSQL's backends are its postmaster's children). */
  pids(): { name: string; pid: number }[];
  stop(): Promise<void>;
}

export async function startFleetServer(kind: FleetServerKind, dir: string, shmDir: string): Promise<FleetServer> {
  const namespace = 'default';
  if (kind === 'sql') {
    // Its directory (PostgreSQL's data included) on tmpfs: the server keeps its durable settings
    // (fsync on), and the fsyncs cost what memory costs, not what this shared disk costs.
    const serverDir = path.join(shmDir, 'temporal-server');
    // PostgreSQL runs as an unprivileged user when we are root: it must pass through the run's private directory.
    chmodSync(shmDir, 0o755);
    const server = await startSqlTemporalServer({ dir: serverDir, namespace, logLevel: 'warn', onProgress: (l) => log(l) });
    return {
      address: server.address,
      namespace,
      metricsUrl: server.metricsUrl,
      description: 'the production-style Temporal server (go.temporal.io/server v1.32.2, all four services in one process, 4 history shards) on a private PostgreSQL cluster (its data directory on tmpfs, fsync on)',
      pids: () =>
        Object.entries(sqlTemporalServerStatus(serverDir)?.processes ?? {})
          .filter(([, p]) => p.running)
          .map(([name, p]) => ({ name, pid: p.pid })),
      stop: async () => {
        await stopSqlTemporalServer(serverDir);
      },
    };
  }
  const cli = (await provisionTemporalCli({ onProgress: (l) => log(l) })).path;
  const port = await freePort();
  const metricsPort = await freePort();
  const address = `127.0.0.1:${port}`;
  const child = startChild(
    cli,
    [
      'server', 'start-dev', '--ip', '127.0.0.1', '--port', String(port), '--headless',
      // The SQLite file on tmpfs: on this shared disk the file's fsyncs made a compute's instant
      // simulated steps take seconds each, and the in-memory mode lost its namespace under load
      // once (its database lives only as long as some connection to it).
      '--metrics-port', String(metricsPort), '--db-filename', path.join(shmDir, 'temporal.db'),
      '--namespace', namespace, '--log-level', 'warn',
      ...Object.entries(SEARCH_ATTRIBUTES).flatMap(([name, type]) => ['--search-attribute', `${name}=${type}`]),
    ],
    process.env,
    path.join(dir, 'temporal.log'),
  );
  for (let i = 0; ; i++) {
    try {
      const connection = await Connection.connect({ address, connectTimeout: '2s' });
      try {
        await connection.workflowService.describeNamespace({ namespace });
      } finally {
        await connection.close();
      }
      break;
    } catch (err) {
      if (child.exitCode !== null || i > 120) throw new Error(`Temporal dev server did not start: ${(err as Error).message}`);
      await sleep(500);
    }
  }
  return {
    address,
    namespace,
    metricsUrl: `http://127.0.0.1:${metricsPort}/metrics`,
    description: 'a private Temporal CLI dev server (its SQLite file on tmpfs)',
    pids: () => [{ name: 'temporal', pid: child.pid! }],
    // startChild's children are stopped with the others.
    stop: async () => undefined,
  };
}

/** Every process under (and including) `root`, from /proc. */
export function processTree(root: number): number[] {
  const parentOf = new Map<number, number>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      parentOf.set(Number(entry), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
    } catch {
      // exited meanwhile
    }
  }
  const tree = [root];
  for (let i = 0; i < tree.length; i++) for (const [pid, ppid] of parentOf) if (ppid === tree[i]) tree.push(pid);
  return tree;
}

/** CPU seconds and RSS of the server's processes and their children, summed. */
export function serverProcessesUsage(server: FleetServer): { cpuSeconds: number; rssMiB: number } {
  return server
    .pids()
    .flatMap(({ pid }) => processTree(pid))
    .map((pid) => {
      try {
        return processUsage(pid);
      } catch {
        return { cpuSeconds: 0, rssMiB: 0 };
      }
    })
    .reduce((a, b) => ({ cpuSeconds: a.cpuSeconds + b.cpuSeconds, rssMiB: a.rssMiB + b.rssMiB }), { cpuSeconds: 0, rssMiB: 0 });
}
