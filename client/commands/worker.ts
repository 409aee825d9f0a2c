import type { Command } from 'commander';
import { runUntilShutdown } from '../../workers/run-worker';
import { createControlPlaneWorker, limitWorkflowThreadHeap, startControlPlaneFleetMetrics } from '../../workers/control-plane';
import { createImporterWorker, runImporterUntilShutdown } from '../../workers/importer';
import { cliConfig } from '../context';
import { configureComputeWorkerCommand } from './compute-worker';
import { log } from '../../common/logger';

export function registerWorkerCommands(program: Command): void {
  const worker = program.command('worker').description('run a Temporal worker in the foreground (SIGINT/SIGTERM drain it gracefully)');

  worker
    .command('control-plane')
    .description('all workflows and the control-plane activities, on the control-plane task queue')
    .action(async () => {
      const config = cliConfig();
      limitWorkflowThreadHeap();
      const handle = await createControlPlaneWorker(config);
      const fleet = config.workerMetrics ? await startControlPlaneFleetMetrics(config, config.workerMetrics) : undefined;
      try {
        await runUntilShutdown(handle, () => log().info(`control-plane worker ready on ${config.temporal.controlPlaneTaskQueue} (spec trust ${config.specTrust})`));
      } finally {
        await fleet?.close();
      }
      log().info('control-plane worker stopped');
    });

  worker
    .command('importer')
    .description("an importer host: claims fast imports, runs their dump, restore and upload on this machine's disk")
    .option('--pg-bin <dir>', 'PostgreSQL bin directory (default: PG_BIN_DIR, pg_config, /usr/lib/postgresql/15/bin)')
    .action(async (opts: { pgBin?: string }) => {
      const config = cliConfig();
      const handle = await createImporterWorker(config, { pgBinDir: opts.pgBin });
      await runImporterUntilShutdown(handle, () =>
        log().info(`importer worker ready: host ${handle.host.hostId} on ${handle.host.taskQueue}, work directory ${handle.host.workdirRoot}`),
      );
      log().info('importer worker stopped');
    });

  configureComputeWorkerCommand(worker.command('compute'), cliConfig);
}
