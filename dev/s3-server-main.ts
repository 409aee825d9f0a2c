/**
 * The embedded S3 endpoint: s3rver on loopback with the stack's bucket. Run as its own process by
 * the dev stack (`node --import tsx dev/s3-server-main.ts --host H --port P --dir D --bucket B`).
 */
import { mkdirSync } from 'node:fs';
import { Command } from 'commander';
import S3rver from 's3rver';
import { consoleToLog } from '../common/logger';

// JSON log lines, as every process of the project writes (common/logger.ts).
consoleToLog();

const values = new Command('s3-server-main')
  .description("the dev stack's S3: s3rver on one address, with one bucket")
  .requiredOption('--port <port>', 'port to listen on')
  .requiredOption('--dir <dir>', 'where the objects live')
  .requiredOption('--bucket <bucket>', 'the bucket to create')
  .option('--host <host>', 'address to listen on', '127.0.0.1')
  .parse()
  .opts<{ host: string; port: string; dir: string; bucket: string }>();
mkdirSync(values.dir, { recursive: true });
const server = new S3rver({
  address: values.host,
  port: Number(values.port),
  directory: values.dir,
  silent: true,
  configureBuckets: [{ name: values.bucket, configs: [] }],
  // Fixed development credentials; real deployments use a real S3 with real ones.
  allowMismatchedSignatures: false,
});
await server.run();
console.log(`s3rver listening on http://${values.host}:${values.port}, bucket ${values.bucket}`);

const stop = () => {
  server
    .close()
    .then(() => process.exit(0))
    .catch(() => process.exit(1));
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
