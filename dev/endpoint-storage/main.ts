/**
 * The dev endpoint storage as its own process, run by the dev stack:
 * `node --import tsx dev/endpoint-storage/main.ts --listen H:P --pemfile F --s3-endpoint URL --s3-bucket B`.
 * S3 credentials come from the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), never argv.
 */
import { readFileSync } from 'node:fs';
import { Command } from 'commander';
import { consoleToLog } from '../../common/logger';
import { createS3Client } from '../../drivers';
import { checkBucketAccess, DEFAULT_MAX_UPLOAD_BYTES, startEndpointStorage } from './server';

consoleToLog();

const opts = new Command('endpoint-storage')
  .description("the dev stack's stand-in for Neon's endpoint storage: per-endpoint objects over HTTP, EdDSA JWTs, stored in S3")
  .requiredOption('--listen <host:port>', 'address to listen on')
  .requiredOption('--pemfile <file>', 'public Ed25519 key (SPKI PEM) tokens are verified with')
  .requiredOption('--s3-endpoint <url>', 'S3 endpoint')
  .requiredOption('--s3-bucket <bucket>', 'bucket the objects go to')
  .option('--s3-region <region>', 'S3 region', 'us-east-1')
  .option('--s3-prefix <prefix>', 'key prefix in the bucket', 'endpoint-storage')
  .option('--max-upload-bytes <n>', 'largest object accepted', String(DEFAULT_MAX_UPLOAD_BYTES))
  .parse()
  .opts<{ listen: string; pemfile: string; s3Endpoint: string; s3Bucket: string; s3Region: string; s3Prefix: string; maxUploadBytes: string }>();

const listen = /^(.+):(\d{1,5})$/.exec(opts.listen);
if (!listen) throw new Error(`--listen must be host:port, got ${JSON.stringify(opts.listen)}`);
const accessKeyId = process.env.AWS_ACCESS_KEY_ID;
const secretAccessKey = process.env.AWS_SECRET_ACCESS_KEY;
const s3 = createS3Client({
  endpoint: opts.s3Endpoint,
  region: opts.s3Region,
  bucket: opts.s3Bucket,
  forcePathStyle: true,
  credentials: accessKeyId && secretAccessKey ? { accessKeyId, secretAccessKey } : undefined,
});
await checkBucketAccess(s3, opts.s3Bucket, opts.s3Prefix);
const running = await startEndpointStorage({
  host: listen[1]!.replace(/^\[|\]$/g, ''),
  port: Number(listen[2]),
  publicKeyPem: readFileSync(opts.pemfile, 'utf8'),
  s3,
  bucket: opts.s3Bucket,
  prefix: opts.s3Prefix,
  maxUploadBytes: Number(opts.maxUploadBytes),
  log: (line) => console.log(line),
});
console.log(`endpoint storage listening on ${running.url}, objects in s3://${opts.s3Bucket}/${opts.s3Prefix}`);

const stop = () => {
  running
    .close()
    .then(() => process.exit(0))
    .catch(() => process.exit(1));
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
