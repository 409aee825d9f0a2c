import { InvalidArgumentError, type Command } from 'commander';
import { runUntilShutdown } from '../../workers/run-worker';
import { createComputeWorker } from '../../workers/compute';
import { DEFAULT_COMPUTE_HTTP_PORT, startComputeApi } from '../../workers/compute-http';
import { createControlPlaneWorker, startControlPlaneFleetMetrics } from '../../workers/control-plane';
import { createImporterWorker, runImporterUntilShutdown } from '../../workers/importer';
import { cliConfig } from '../context';

export function registerWorkerCommands(program: Command): void {
  const worker = program.command('worker').description('run a Temporal worker in the foreground (SIGINT/SIGTERM drain it gracefully)');

  worker
    .command('control-plane')
    .description('all workflows and the control-plane activities, on the control-plane task queue')
    .action(async () => {
      const config = cliConfig();
      const handle = await createControlPlaneWorker(config);
      const fleet = config.workerMetrics ? await startControlPlaneFleetMetrics(config, config.workerMetrics) : undefined;
      try {
        await runUntilShutdown(handle, () => console.log(`control-plane worker ready on ${config.temporal.controlPlaneTaskQueue}`));
      } finally {
        await fleet?.close();
      }
      console.log('control-plane worker stopped');
    });

  worker
    .command('importer')
    .description("an importer host: claims fast imports, runs their dump, restore and upload on this machine's disk")
    .option('--pg-bin <dir>', 'PostgreSQL bin directory (default: PG_BIN_DIR, pg_config, /usr/lib/postgresql/15/bin)')
    .action(async (opts: { pgBin?: string }) => {
      const config = cliConfig();
      const handle = await createImporterWorker(config, { pgBinDir: opts.pgBin });
      await runImporterUntilShutdown(handle, () =>
        console.log(`importer worker ready: host ${handle.host.hostId} on ${handle.host.taskQueue}, work directory ${handle.host.workdirRoot}`),
      );
      console.log('importer worker stopped');
    });

  worker
    .command('compute')
    .description("the worker inside a compute VM: this compute's Postgres steps, on its own task queue")
    .requiredOption('--compute-id <id>', 'the compute this VM runs')
    .requiredOption('--pgdata <dir>', 'the compute data directory (absolute path)')
    .option('--pg-bin <dir>', 'PostgreSQL bin directory (default: PG_BIN_DIR, pg_config, /usr/lib/postgresql/15/bin)')
    .option('--storage-backend <name>', 'stock (stock PostgreSQL with the WAL pusher) or neon (Neon Postgres)', 'stock')
    .option('--sync-safekeepers-command <argv...>', "the safekeeper sync command (Neon: postgres --sync-safekeepers)")
    .option('--http-port <port>', "compute_ctl's external HTTP API port (0: any free port)", parsePort, DEFAULT_COMPUTE_HTTP_PORT)
    .option('--http-host <address>', 'address the HTTP API listens on', '0.0.0.0')
    .option('--jwks-file <file>', "a fixed key set (JWKS JSON) for the API's tokens; default: the spec's compute_ctl_config.jwks")
    .action(async (opts: { computeId: string; pgdata: string; pgBin?: string; storageBackend: string; syncSafekeepersCommand?: string[]; httpPort: number; httpHost: string; jwksFile?: string }) => {
      if (opts.storageBackend !== 'stock' && opts.storageBackend !== 'neon') {
        throw new Error(`--storage-backend must be stock or neon, got ${opts.storageBackend}`);
      }
      const config = cliConfig();
      const handle = await createComputeWorker(config, {
        computeId: opts.computeId,
        pgdata: opts.pgdata,
        pgBinDir: opts.pgBin,
        storageBackend: opts.storageBackend,
        syncSafekeepersCommand: opts.syncSafekeepersCommand,
        failpoints: config.failpoints,
      });
      const api = await startComputeApi(config, {
        computeId: opts.computeId,
        pgdata: opts.pgdata,
        pgBinDir: opts.pgBin,
        port: opts.httpPort,
        host: opts.httpHost,
        jwksFile: opts.jwksFile,
      }).catch(async (err: unknown) => {
        await handle.connection.close();
        throw err;
      });
      try {
        console.log(`compute HTTP API listening on ${opts.httpHost}:${api.port}`);
        await runUntilShutdown(handle, () => console.log(`compute worker ready on ${handle.taskQueue}`));
      } finally {
        await api.close();
      }
      console.log('compute worker stopped');
    });
}

function parsePort(text: string): number {
  const port = Number(text);
  if (!/^\d+$/.test(text) || port > 65535) throw new InvalidArgumentError(`expected a port number 0-65535, got ${JSON.stringify(text)}`);
  return port;
}
