import path from 'node:path';
import type { Command } from 'commander';
import { z } from 'zod';
import { UserFacingError } from '../../common/errors';
import { projectRoot } from '../../common/paths';
import { provisionTemporalServer, TEMPORAL_SERVER_VERSION, sqlTemporalServerStatus, startSqlTemporalServer, stopSqlTemporalServer } from '../dev-stack';
import { printJson } from '../output';

const defaultDir = path.join(projectRoot, '.durable-compute', 'temporal-server');
const progress = (line: string) => process.stderr.write(`${line}\n`);
const port = z.coerce.number().int().min(1).max(65535);

function parsed<T>(schema: z.ZodType<T>, value: unknown, what: string): T {
  const result = schema.safeParse(value);
  if (!result.success) throw new UserFacingError(`Invalid ${what}: ${JSON.stringify(value)}`);
  return result.data;
}

interface UpOptions {
  dir: string;
  port?: string;
  namespace?: string;
  historyShards?: string;
  logLevel?: string;
  postgresHost?: string;
  postgresPort?: string;
  postgresUser?: string;
  postgresPasswordFile?: string;
  json?: boolean;
}

function externalPostgres(opts: UpOptions) {
  const given = [opts.postgresHost, opts.postgresPort, opts.postgresUser, opts.postgresPasswordFile];
  if (given.every((v) => v === undefined)) return undefined;
  if (given.some((v) => v === undefined)) {
    throw new UserFacingError('An existing PostgreSQL needs all of --postgres-host, --postgres-port, --postgres-user and --postgres-password-file');
  }
  return {
    host: opts.postgresHost!,
    port: parsed(port, opts.postgresPort, '--postgres-port'),
    user: opts.postgresUser!,
    passwordFile: path.resolve(opts.postgresPasswordFile!),
  };
}

/** `dev temporal-server ...`: the Temporal server production runs, on PostgreSQL, for local runs and benchmarks. */
export function registerTemporalServerCommands(dev: Command): void {
  const cmd = dev
    .command('temporal-server')
    .description(`the Temporal server production runs (go.temporal.io/server v${TEMPORAL_SERVER_VERSION}) on PostgreSQL 15, on loopback`);
  const withDir = (c: Command) => c.option('--dir <path>', 'its directory: state, config, logs, private PostgreSQL (default .durable-compute/temporal-server)', defaultDir);

  cmd
    .command('prepare')
    .description('find or build the server and its SQL schema tool (go install into .cache/, a few minutes the first time)')
    .action(async () => {
      const started = Date.now();
      const b = await provisionTemporalServer({ onProgress: progress });
      process.stdout.write(`Temporal server: ${b.server} (${b.source})\nSQL schema tool: ${b.sqlTool}\nin ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
    });

  withDir(cmd.command('up'))
    .description('start PostgreSQL (a private cluster unless one is given), apply the schemas, start the server; returns once the namespace serves')
    .option('--port <port>', 'frontend gRPC port (default: a free one, kept across restarts)')
    .option('--namespace <name>', 'namespace to register (default: default)')
    .option('--history-shards <n>', 'history shards, fixed at the first start (default: 4)')
    .option('--log-level <level>', 'server log level: debug, info, warn, error (default: warn)')
    .option('--postgres-host <host>', 'use this PostgreSQL instead of a private cluster')
    .option('--postgres-port <port>', 'its port')
    .option('--postgres-user <user>', 'its role (needs CREATEDB, or the databases temporal and temporal_visibility)')
    .option('--postgres-password-file <file>', "a file holding the role's password")
    .option('--json', 'print the endpoints as one JSON object')
    .action(async (opts: UpOptions) => {
      const started = Date.now();
      const server = await startSqlTemporalServer({
        dir: opts.dir,
        frontendPort: opts.port === undefined ? undefined : parsed(port, opts.port, '--port'),
        namespace: opts.namespace,
        numHistoryShards: opts.historyShards === undefined ? undefined : parsed(z.coerce.number().int().min(1).max(16384), opts.historyShards, '--history-shards'),
        logLevel: opts.logLevel === undefined ? undefined : parsed(z.enum(['debug', 'info', 'warn', 'error']), opts.logLevel, '--log-level'),
        postgres: externalPostgres(opts),
        onProgress: progress,
      });
      const readyMs = Date.now() - started;
      const { stop: _stop, ...endpoints } = server;
      if (opts.json) printJson({ ...endpoints, readyMs });
      else
        process.stdout.write(
          [
            `Temporal address:   ${server.address}`,
            `Temporal namespace: ${server.namespace}`,
            `Metrics:            ${server.metricsUrl}`,
            `Directory:          ${server.dir}`,
            `Ready in ${(readyMs / 1000).toFixed(1)} s`,
            '',
          ].join('\n'),
        );
    });

  withDir(cmd.command('status'))
    .description('report what runs')
    .option('--json', 'print one JSON object')
    .action((opts: { dir: string; json?: boolean }) => {
      const status = sqlTemporalServerStatus(opts.dir);
      if (opts.json) return printJson(status ?? { dir: path.resolve(opts.dir), processes: {} });
      if (!status) return void process.stdout.write(`No Temporal server in ${path.resolve(opts.dir)}\n`);
      process.stdout.write(`Temporal address: ${status.address} (namespace ${status.namespace})\nMetrics: ${status.metricsUrl}\nPostgreSQL: ${status.postgres}\n`);
      for (const [name, p] of Object.entries(status.processes)) {
        process.stdout.write(`  ${name.padEnd(18)} ${p.running ? `running (pid ${p.pid})` : 'stopped'}  ${p.log}\n`);
      }
    });

  withDir(cmd.command('down'))
    .description('stop exactly the processes it started; the data stays for the next up')
    .action(async (opts: { dir: string }) => {
      const stopped = await stopSqlTemporalServer(opts.dir);
      process.stdout.write(stopped.length ? `stopped ${stopped.join(', ')}\n` : 'nothing was running\n');
    });
}
