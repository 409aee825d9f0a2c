/**
 * Process entry of the dev pageserver:
 *   node --import tsx dev/storage/pageserver/main.ts --dir <dir> --pg-port <p> --http-port <p>
 *     [--host 127.0.0.1] [--safekeepers http://127.0.0.1:7676,...] [--auth-token TOKEN] [--pg-bin-dir DIR]
 * Prints `pageserver ready` once both listeners accept; SIGTERM/SIGINT stop it gracefully.
 */
import { parseArgs } from 'node:util';
import { startPageserver } from './pageserver';

function port(value: string | undefined, flag: string): number {
  const n = Number(value);
  if (value === undefined || !Number.isInteger(n) || n < 0 || n > 65535) {
    throw new Error(`${flag} must be a port number (0-65535), got ${JSON.stringify(value ?? null)}`);
  }
  return n;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      dir: { type: 'string' },
      'pg-port': { type: 'string' },
      'http-port': { type: 'string' },
      host: { type: 'string', default: '127.0.0.1' },
      safekeepers: { type: 'string', default: '' },
      'auth-token': { type: 'string' },
      'pg-bin-dir': { type: 'string' },
    },
    strict: true,
  });
  if (!values.dir) throw new Error('--dir is required');
  const safekeepers = values.safekeepers
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  for (const url of safekeepers) {
    if (!/^https?:\/\/[^/\s]+\/?$/.test(url)) throw new Error(`--safekeepers: ${JSON.stringify(url)} is not an http://host:port URL`);
  }
  const server = await startPageserver({
    dir: values.dir,
    host: values.host,
    pgPort: port(values['pg-port'], '--pg-port'),
    httpPort: port(values['http-port'], '--http-port'),
    safekeepers,
    ...(values['auth-token'] ? { authToken: values['auth-token'] } : {}),
    ...(values['pg-bin-dir'] ? { pgBinDir: values['pg-bin-dir'] } : {}),
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
