/**
 * Dev safekeeper process:
 *   node --import tsx dev/storage/safekeeper/main.ts --id N --dir DIR --pg-port P --http-port P
 *        [--host 127.0.0.1] [--auth-token-file FILE | --auth-token T]
 * Prints `safekeeper ready` once both listeners accept connections; SIGTERM/SIGINT stop it cleanly.
 */
import { Command, InvalidArgumentError } from 'commander';
import { consoleToLog, log as processLog } from '../../../common/logger';
import { authTokenOption } from '../../../common/secret-file';
import { startSafekeeper } from './safekeeper';

function port(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new InvalidArgumentError('expected a port number (0-65535)');
  return n;
}

function nodeId(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('expected a positive integer');
  return n;
}

const program = new Command()
  .name('safekeeper')
  .requiredOption('--id <n>', 'safekeeper node id', nodeId)
  .requiredOption('--dir <dir>', 'where timelines are stored (survives restarts)')
  .requiredOption('--pg-port <port>', 'libpq port', port)
  .requiredOption('--http-port <port>', 'HTTP management port', port)
  .option('--host <host>', 'listen address', '127.0.0.1')
  .option('--auth-token <token>', 'password clients must present')
  .option('--auth-token-file <file>', 'file holding that password (keeps it out of process listings)')
  .parse();

const { authTokenFile, ...opts } = program.opts<{ id: number; dir: string; pgPort: number; httpPort: number; host: string; authToken?: string; authTokenFile?: string }>();
// JSON log lines, as every process of the project writes (common/logger.ts).
consoleToLog();
const logger = processLog().child({ safekeeper: opts.id });
const log = (line: string) => logger.info(line);

try {
  opts.authToken = authTokenOption(opts.authToken, authTokenFile);
  const sk = await startSafekeeper({ ...opts, log });
  console.log(`safekeeper ready id=${sk.id} pg=${sk.pgAddress} http=${sk.httpUrl}`);
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log(`${signal}: shutting down`);
    sk.close().then(
      () => process.exit(0),
      (err: unknown) => {
        log(`shutdown failed: ${(err as Error).message}`);
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
} catch (err) {
  console.error(`safekeeper failed to start: ${(err as Error).message}`);
  process.exit(1);
}
