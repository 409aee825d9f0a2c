import type { Command } from 'commander';
import { findPostgres } from '../../common/pg-binaries';
import { UserFacingError } from '../../common/errors';
import { mintDevEndpointStorageToken, previousStackSettings, stackDown, stackStatus, stackUp, type StackEndpoints, resolveStackSettings, provisionTemporalCli } from '../dev-stack';
import { printJson, printText } from '../output';
import { registerTemporalServerCommands } from './temporal-server';

interface StackOptions {
  dir?: string;
  temporalPort?: string;
  uiPort?: string;
  s3Port?: string;
  pageserverPgPort?: string;
  pageserverHttpPort?: string;
  safekeeperPgPort?: string;
  safekeeperHttpPort?: string;
  codecPort?: string;
  endpointStoragePort?: string;
  json?: boolean;
}

function settingsFrom(opts: StackOptions) {
  const dir = resolveStackSettings({ dir: opts.dir }).dir;
  return resolveStackSettings(
    {
      dir,
      ports: {
        temporal: opts.temporalPort,
        temporalUi: opts.uiPort,
        s3: opts.s3Port,
        pageserverPg: opts.pageserverPgPort,
        pageserverHttp: opts.pageserverHttpPort,
        safekeeperPg: opts.safekeeperPgPort,
        safekeeperHttp: opts.safekeeperHttpPort,
        codecServer: opts.codecPort,
        endpointStorage: opts.endpointStoragePort,
      },
    },
    process.env,
    previousStackSettings(dir),
  );
}

const progress = (line: string) => process.stderr.write(`${line}\n`);

export async function resolveTemporalCliWithProgress(): Promise<string> {
  return (await provisionTemporalCli({ onProgress: progress })).path;
}

export function printEndpoints(e: StackEndpoints): void {
  printText(
    [
      `Temporal address:   ${e.temporal.address}`,
      `Temporal namespace: ${e.temporal.namespace}`,
      `Temporal Web UI:    ${e.temporal.ui || '(none: the production server comes without it)'}`,
      `Codec server:       ${e.codec.endpoint} (the Web UI decodes payloads through it)`,
      `S3 endpoint:        ${e.s3.endpoint}`,
      `Endpoint storage:   ${e.endpointStorage.url} (endpoint_storage_addr ${e.endpointStorage.addr}; cache state over HTTP)`,
      `S3 bucket:          ${e.s3.bucket}`,
      `S3 region:          ${e.s3.region}`,
      `Pageserver:         postgres://${e.pageserver.pg} (page service), ${e.pageserver.http} (HTTP API)`,
      ...e.safekeepers.map((sk, i) => `Safekeeper ${i + 1}:       ${sk.pg} (libpq), ${sk.http} (HTTP)`),
      `Stack directory:    ${e.stackDir}`,
      '',
    ].join('\n'),
  );
}

export function registerDevCommands(program: Command): void {
  const dev = program.command('dev').description('the embedded development stack (Temporal with Web UI, S3, dev pageserver and safekeepers, control-plane worker)');
  const withStackOptions = (c: Command) =>
    c
      .option('--dir <path>', 'stack directory (env DURABLE_COMPUTE_STACK_DIR; default .durable-compute/stack)')
      .option('--temporal-port <port>', 'Temporal gRPC port (env DURABLE_COMPUTE_TEMPORAL_PORT; default 7233)')
      .option('--ui-port <port>', 'Temporal Web UI port (env DURABLE_COMPUTE_TEMPORAL_UI_PORT; default 8233)')
      .option('--s3-port <port>', 'S3 port (env DURABLE_COMPUTE_S3_PORT; default 4568)')
      .option('--pageserver-pg-port <port>', 'pageserver page service port (env DURABLE_COMPUTE_PAGESERVER_PG_PORT; default 6400)')
      .option('--pageserver-http-port <port>', 'pageserver HTTP API port (env DURABLE_COMPUTE_PAGESERVER_HTTP_PORT; default 9898)')
      .option('--safekeeper-pg-port <port>', 'first safekeeper libpq port, one per safekeeper (env DURABLE_COMPUTE_SAFEKEEPER_PG_PORT; default 5454)')
      .option('--safekeeper-http-port <port>', 'first safekeeper HTTP port, one per safekeeper (env DURABLE_COMPUTE_SAFEKEEPER_HTTP_PORT; default 7676)')
      .option('--codec-port <port>', 'codec server port, for the Web UI (env DURABLE_COMPUTE_CODEC_PORT; default 8234)')
      .option('--endpoint-storage-port <port>', 'endpoint storage stand-in port (env DURABLE_COMPUTE_ENDPOINT_STORAGE_PORT; default 51243)');

  withStackOptions(dev.command('up'))
    .description('start the stack in the background; returns once every part accepts connections')
    .option('--json', 'print the endpoints as one JSON object')
    .action(async (opts: StackOptions) => {
      const settings = settingsFrom(opts);
      await stackUp(settings, { resolveTemporalCli: resolveTemporalCliWithProgress, onProgress: progress });
      const status = await stackStatus(settings.dir);
      if (!status) throw new Error('stack state vanished after start');
      if (opts.json) printJson(status);
      else printEndpoints(status);
    });

  withStackOptions(dev.command('status'))
    .description('report what runs')
    .option('--json', 'print one JSON object')
    .action(async (opts: StackOptions) => {
      const settings = settingsFrom(opts);
      const status = await stackStatus(settings.dir);
      if (opts.json) {
        printJson(status ?? { running: false, stackDir: settings.dir, processes: {} });
        return;
      }
      if (!status) {
        printText(`No stack in ${settings.dir}\n`);
        return;
      }
      printText(`Stack ${status.running ? 'running' : 'NOT fully running'}\n`);
      for (const [name, p] of Object.entries(status.processes)) {
        printText(`  ${name.padEnd(12)} ${p.running ? `running (pid ${p.pid})` : 'stopped'}\n`);
      }
      printEndpoints(status);
    });

  withStackOptions(dev.command('down'))
    .description('stop exactly the processes the stack started')
    .action(async (opts: StackOptions) => {
      const settings = settingsFrom(opts);
      const stopped = await stackDown(settings.dir);
      printText(stopped.length ? `stopped ${stopped.join(', ')}\n` : 'nothing was running\n');
    });

  dev
    .command('endpoint-storage-token')
    .description("sign a token for the stack's endpoint storage, scoped to one endpoint (the spec's endpoint_storage_token); prints it")
    .option('--dir <path>', 'stack directory (env DURABLE_COMPUTE_STACK_DIR; default .durable-compute/stack)')
    .requiredOption('--tenant-id <id>', 'tenant ID (32 hex digits)')
    .requiredOption('--timeline-id <id>', 'timeline ID (32 hex digits)')
    .requiredOption('--endpoint-id <id>', 'endpoint ID (the spec\'s endpoint_id)')
    .option('--ttl-seconds <n>', 'validity', '86400')
    .action(async (opts: { dir?: string; tenantId: string; timelineId: string; endpointId: string; ttlSeconds: string }) => {
      for (const [flag, id] of [['--tenant-id', opts.tenantId], ['--timeline-id', opts.timelineId]] as const) {
        if (!/^[0-9a-f]{32}$/i.test(id)) throw new UserFacingError(`${flag} must be 32 hex digits, got ${JSON.stringify(id)}`);
      }
      if (!/^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/.test(opts.endpointId)) throw new UserFacingError(`--endpoint-id must be 1-64 letters, digits, '-' or '_', got ${JSON.stringify(opts.endpointId)}`);
      const ttl = Number(opts.ttlSeconds);
      if (!Number.isSafeInteger(ttl) || ttl < 1) throw new UserFacingError(`--ttl-seconds must be a positive integer, got ${JSON.stringify(opts.ttlSeconds)}`);
      const { dir } = resolveStackSettings({ dir: opts.dir });
      const claims = { tenant_id: opts.tenantId.toLowerCase(), timeline_id: opts.timelineId.toLowerCase(), endpoint_id: opts.endpointId };
      const token = await mintDevEndpointStorageToken(dir, claims, ttl).catch((err: unknown) => {
        throw new UserFacingError(`cannot sign with the stack's key in ${dir} (start it with 'durable-compute dev up'): ${(err as Error).message}`);
      });
      printText(`${token}\n`);
    });

  registerTemporalServerCommands(dev);

  dev
    .command('prepare')
    .description('find or build the Temporal CLI and check the PostgreSQL installation')
    .action(async () => {
      const cli = await provisionTemporalCli({ onProgress: progress });
      const pg = findPostgres();
      printText(`Temporal CLI: ${cli.path} (${cli.source})\nPostgreSQL ${pg.version}: ${pg.binDir}\n`);
    });
}
