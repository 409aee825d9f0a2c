import { InvalidArgumentError, Option, type Command } from 'commander';
import type { AppConfig } from '../../common/config';
import { UserFacingError } from '../../common/errors';
import { startAssignmentServer } from '../../workers/assignment-http';
import { assignmentModeError, ComputeAgent } from '../../workers/compute-agent';
import { DEFAULT_COMPUTE_HTTP_PORT, startComputeApi } from '../../workers/compute-http';
import { log } from '../../common/logger';

export interface ComputeWorkerCommandOptions {
  computeId?: string;
  pool?: boolean;
  internalHttpPort: string;
  pgdata: string;
  pgBin?: string;
  storageBackend: string;
  syncSafekeepersCommand?: string[];
  httpPort: number;
  httpHost: string;
  jwksFile?: string;
}

function apiPort(text: string): number {
  const port = Number(text);
  if (!/^\d+$/.test(text) || port > 65535) throw new InvalidArgumentError(`expected a port number 0-65535, got ${JSON.stringify(text)}`);
  return port;
}

function portNumber(text: string): number {
  const port = Number(text);
  if (!/^\d{1,5}$/.test(text) || port < 1 || port > 65535) throw new UserFacingError(`--internal-http-port must be a port number 1-65535, got ${text}`);
  return port;
}

/**
 * Defines `worker compute`: the worker inside a compute VM. The CLI mounts it under `worker`, and
 * the compute-worker bundle (dist/compute-worker) runs it as its whole program, with the
 * configuration from the environment only.
 */
export function configureComputeWorkerCommand(command: Command, loadConfig: () => AppConfig): Command {
  return command
    .description("the worker inside a compute VM: this compute's Postgres steps, on its own task queue (SIGINT/SIGTERM drain it gracefully)")
    .option('--compute-id <id>', 'the compute this VM runs')
    .option('--pool', 'a pool VM: start without a compute and wait for POST /assign on the internal HTTP port')
    .option('--internal-http-port <port>', 'loopback port of the assignment API in pool mode (compute_ctl internal port)', '3081')
    .requiredOption('--pgdata <dir>', 'the compute data directory (absolute path)')
    .option('--pg-bin <dir>', 'PostgreSQL bin directory (default: PG_BIN_DIR, pg_config, /usr/lib/postgresql/15/bin)')
    .addOption(new Option('--storage-backend <name>', 'stock (stock PostgreSQL with the WAL pusher) or neon (Neon Postgres)').choices(['stock', 'neon']).default('stock'))
    .option('--sync-safekeepers-command <argv...>', 'the safekeeper sync command (Neon: postgres --sync-safekeepers)')
    .option('--http-port <port>', "compute_ctl's external HTTP API port (0: any free port)", apiPort, DEFAULT_COMPUTE_HTTP_PORT)
    .option('--http-host <address>', 'address the HTTP API listens on', '0.0.0.0')
    .option('--jwks-file <file>', "a fixed key set (JWKS JSON) for the API's tokens; default: the spec's compute_ctl_config.jwks")
    .action(async (opts: ComputeWorkerCommandOptions) => {
      const modeError = assignmentModeError(opts);
      if (modeError) throw modeError;
      const port = opts.pool ? portNumber(opts.internalHttpPort) : undefined;
      const config = loadConfig();
      const agent = await ComputeAgent.prepare(config, {
        pgdata: opts.pgdata,
        pgBinDir: opts.pgBin,
        storageBackend: opts.storageBackend as 'stock' | 'neon',
        syncSafekeepersCommand: opts.syncSafekeepersCommand,
        failpoints: config.failpoints,
      });
      const onSignal = () => agent.shutdown();
      process.once('SIGINT', onSignal).once('SIGTERM', onSignal);
      const server = port === undefined ? undefined : await startAssignmentServer(agent, port);
      // compute_ctl's external API serves the compute this VM was given (at once, or on assignment).
      let api: { close(): Promise<void> } | undefined;
      const startApi = async (computeId: string) => {
        const started = await startComputeApi(config, { computeId, pgdata: opts.pgdata, pgBinDir: opts.pgBin, port: opts.httpPort, host: opts.httpHost, jwksFile: opts.jwksFile });
        api = started;
        log().info(`compute HTTP API listening on ${opts.httpHost}:${started.port}`);
      };
      try {
        if (opts.computeId) await startApi(opts.computeId);
        else void agent.assigned.then(startApi).catch((err: unknown) => log().error(`compute HTTP API did not start: ${(err as Error).message}`));
        if (opts.computeId) {
          const result = await agent.assign(opts.computeId);
          if (result.outcome !== 'assigned') {
            agent.shutdown();
            await agent.closed();
            throw new UserFacingError(`the compute worker did not start: ${'error' in result ? result.error : result.outcome}`);
          }
        } else {
          log().info(`compute worker waiting for an assignment: POST http://127.0.0.1:${server!.port}/assign`);
        }
        await agent.closed();
      } finally {
        process.off('SIGINT', onSignal).off('SIGTERM', onSignal);
        await server?.close();
        await api?.close();
      }
      log().info('compute worker stopped');
    });
}
