/**
 * Process entry of the dev pageserver:
 *   node --import tsx dev/storage/pageserver/main.ts --dir <dir> --pg-port <p> --http-port <p>
 *     [--host 127.0.0.1] [--safekeepers http://127.0.0.1:7676,...] [--auth-token-file FILE | --auth-token TOKEN] [--pg-bin-dir DIR]
 *     [--s3-endpoint http://127.0.0.1:4568 --s3-buckets b1,b2 [--s3-region us-east-1]]
 *     [--import-poll-ms 10000] [--import-complete-url http://control-plane]
 * With --s3-endpoint, import_pgdata is served from those buckets (credentials from AWS_ACCESS_KEY_ID
 * and AWS_SECRET_ACCESS_KEY, never from the command line); without it, import_pgdata answers 501.
 * Prints `pageserver ready` once both listeners accept; SIGTERM/SIGINT stop it gracefully.
 */
import { consoleToLog, log as processLog } from '../../../common/logger';
import { Command } from 'commander';
import { createS3Client } from '../../../drivers';
import { authTokenOption } from '../../../common/secret-file';
import { createImportPgdataHandler } from '../pgdata-import/handler';
import { startPageserver } from './pageserver';

// JSON log lines, as every process of the project writes (common/logger.ts).
consoleToLog();

function port(value: string | undefined, flag: string): number {
  const n = Number(value);
  if (value === undefined || !Number.isInteger(n) || n < 0 || n > 65535) {
    throw new Error(`${flag} must be a port number (0-65535), got ${JSON.stringify(value ?? null)}`);
  }
  return n;
}

async function main(): Promise<void> {
  const opts = new Command('pageserver')
    .description('the dev pageserver: libpq page service and management API over local images')
    .option('--dir <dir>', 'where tenants, timelines and images live')
    .option('--pg-port <port>', 'libpq page service port')
    .option('--http-port <port>', 'management API port')
    .option('--host <host>', 'address to listen on', '127.0.0.1')
    .option('--safekeepers <urls>', "the safekeepers' HTTP URLs, comma-separated", '')
    .option('--auth-token <token>', 'bearer token callers must present')
    .option('--auth-token-file <file>', 'file holding that token')
    .option('--pg-bin-dir <dir>', "PostgreSQL 15's bin directory")
    .option('--s3-endpoint <url>', 'S3 endpoint import_pgdata reads from')
    .option('--s3-buckets <names>', 'buckets import_pgdata may read, comma-separated', '')
    .option('--s3-region <region>', 'S3 region', 'us-east-1')
    .option('--import-poll-ms <ms>', 'how often a background import checks for its upload', '10000')
    .option('--import-complete-url <url>', "the control plane's import_complete callback")
    .parse()
    .opts<Record<string, string | undefined>>();
  // The flags under their command-line names, as the rest of this function reads them.
  const values = {
    dir: opts.dir,
    'pg-port': opts.pgPort,
    'http-port': opts.httpPort,
    host: opts.host!,
    safekeepers: opts.safekeepers!,
    'auth-token': opts.authToken,
    'auth-token-file': opts.authTokenFile,
    'pg-bin-dir': opts.pgBinDir,
    's3-endpoint': opts.s3Endpoint,
    's3-buckets': opts.s3Buckets!,
    's3-region': opts.s3Region!,
    'import-poll-ms': opts.importPollMs!,
    'import-complete-url': opts.importCompleteUrl,
  };
  if (!values.dir) throw new Error('--dir is required');
  const authToken = authTokenOption(values['auth-token'], values['auth-token-file']);
  const safekeepers = values.safekeepers
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  for (const url of safekeepers) {
    if (!/^https?:\/\/[^/\s]+\/?$/.test(url)) throw new Error(`--safekeepers: ${JSON.stringify(url)} is not an http://host:port URL`);
  }
  const log = (line: string) => processLog().info(line);
  let importPgdata;
  if (values['s3-endpoint']) {
    if (!/^https?:\/\/[^/\s]+\/?$/.test(values['s3-endpoint'])) throw new Error(`--s3-endpoint: ${JSON.stringify(values['s3-endpoint'])} is not an http://host:port URL`);
    const buckets = values['s3-buckets'].split(',').map((b) => b.trim()).filter(Boolean);
    if (buckets.length === 0) throw new Error('--s3-endpoint needs --s3-buckets (the buckets import_pgdata may read)');
    const accessKeyId = process.env.AWS_ACCESS_KEY_ID;
    const secretAccessKey = process.env.AWS_SECRET_ACCESS_KEY;
    const s3 = createS3Client({
      endpoint: values['s3-endpoint'],
      region: values['s3-region'],
      bucket: buckets[0]!,
      forcePathStyle: true,
      ...(accessKeyId && secretAccessKey ? { credentials: { accessKeyId, secretAccessKey } } : {}),
    });
    importPgdata = createImportPgdataHandler({ s3, allowedBuckets: buckets, log });
  }
  const pollMs = Number(values['import-poll-ms']);
  if (!Number.isInteger(pollMs) || pollMs < 100 || pollMs > 600_000) throw new Error(`--import-poll-ms must be 100-600000, got ${values['import-poll-ms']}`);
  const completeUrl = values['import-complete-url'];
  if (completeUrl !== undefined && !/^https?:\/\/\S+$/.test(completeUrl)) throw new Error(`--import-complete-url: ${JSON.stringify(completeUrl)} is not an http(s) URL`);
  const server = await startPageserver({
    dir: values.dir,
    host: values.host,
    pgPort: port(values['pg-port'], '--pg-port'),
    httpPort: port(values['http-port'], '--http-port'),
    safekeepers,
    ...(authToken ? { authToken } : {}),
    ...(values['pg-bin-dir'] ? { pgBinDir: values['pg-bin-dir'] } : {}),
    ...(importPgdata ? { importPgdata } : {}),
    importPollIntervalMs: pollMs,
    ...(completeUrl ? { importCompleteUrl: completeUrl } : {}),
    log,
  });
  console.log(`pageserver ready (page service ${values.host}:${server.pgPort}, http ${values.host}:${server.httpPort})`);
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    console.log(`pageserver stopping (${signal})`);
    server.close().then(
      () => process.exit(0),
      (err: Error) => {
        console.error(`pageserver: error while stopping: ${err.message}`);
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

main().catch((err: Error) => {
  console.error(`pageserver: ${err.message}`);
  process.exit(1);
});
