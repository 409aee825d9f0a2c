import { Client, Connection } from '@temporalio/client';
import { inject } from 'vitest';
import { loadConfig, type AppConfig } from '../../common/config';
import { devPayloadKeyFile, devS3Credentials, devStorageTokenFile } from '../../dev/stack';

/** Configuration pointing at the stack the global setup started (or was given). */
export function testConfig(extraEnv: Record<string, string> = {}): AppConfig {
  const stack = inject('stack');
  return loadConfig(
    { PG_BIN_DIR: process.env.PG_BIN_DIR, ...extraEnv },
    {
      temporal: stack.temporal,
      s3: { ...stack.s3, ...devS3Credentials() },
      pageserver: stack.pageserver,
      safekeepers: stack.safekeepers,
      payloadKeyFile: devPayloadKeyFile(stack.stackDir),
      storageAuthTokenFile: devStorageTokenFile(stack.stackDir),
    },
  );
}

/** Environment for child processes (workers, CLI) so they talk to the test stack. */
export function testEnv(): Record<string, string> {
  const stack = inject('stack');
  const creds = devS3Credentials();
  return {
    TEMPORAL_ADDRESS: stack.temporal.address,
    TEMPORAL_NAMESPACE: stack.temporal.namespace,
    S3_ENDPOINT: stack.s3.endpoint,
    S3_BUCKET: stack.s3.bucket,
    S3_REGION: stack.s3.region,
    AWS_ACCESS_KEY_ID: creds.accessKeyId,
    AWS_SECRET_ACCESS_KEY: creds.secretAccessKey,
    PAGESERVER_HTTP_URL: stack.pageserver.http,
    PAGESERVER_PG: stack.pageserver.pg,
    SAFEKEEPERS: stack.safekeepers.map((sk) => sk.pg).join(','),
    SAFEKEEPERS_HTTP_URLS: stack.safekeepers.map((sk) => sk.http).join(','),
    DURABLE_COMPUTE_PAYLOAD_KEY_FILE: devPayloadKeyFile(stack.stackDir),
    STORAGE_AUTH_TOKEN_FILE: devStorageTokenFile(stack.stackDir),
  };
}

export async function testClient(): Promise<{ client: Client; close: () => Promise<void> }> {
  const stack = inject('stack');
  const connection = await Connection.connect({ address: stack.temporal.address });
  return { client: new Client({ connection, namespace: stack.temporal.namespace }), close: () => connection.close() };
}
