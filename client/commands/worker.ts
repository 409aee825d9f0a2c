import type { Command } from 'commander';
import { runUntilShutdown } from '../../workers/run-worker';
import { createComputeWorker } from '../../workers/compute';
import { createControlPlaneWorker } from '../../workers/control-plane';
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
      await runUntilShutdown(handle, () => console.log(`control-plane worker ready on ${config.temporal.controlPlaneTaskQueue} (spec trust ${config.specTrust})`));
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
    .action(async (opts: { computeId: string; pgdata: string; pgBin?: string; storageBackend: string; syncSafekeepersCommand?: string[] }) => {
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
      await runUntilShutdown(handle, () => console.log(`compute worker ready on ${handle.taskQueue}`));
      console.log('compute worker stopped');
    });
}
