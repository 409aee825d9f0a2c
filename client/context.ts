import { Client } from '@temporalio/client';
import { loadConfig, type AppConfig, type DevStackDefaults } from '../common/config';
import { encryptedDataConverter } from '../common/codec/data-converter';
import { connectClient } from '../common/temporal-connection';
import { devPayloadKeyFile, devS3Credentials, devStorageTokenFile, runningStack } from './dev-stack';

/**
 * The CLI's configuration: the environment first; whatever it leaves unset comes from the dev
 * stack when one is up in the configured stack directory.
 */
export function cliConfig(env: Record<string, string | undefined> = process.env): AppConfig {
  const stackDir = loadConfig(env).stackDir;
  const running = runningStack(stackDir);
  const dev: DevStackDefaults | undefined = running && {
    temporal: running.endpoints.temporal,
    s3: { ...running.endpoints.s3, ...devS3Credentials() },
    payloadKeyFile: devPayloadKeyFile(stackDir),
    storageAuthTokenFile: devStorageTokenFile(stackDir),
    pageserver: running.endpoints.pageserver,
    safekeepers: running.endpoints.safekeepers,
  };
  return loadConfig(env, dev);
}

/** A Temporal client whose payloads are encrypted with the configured key. */
export async function openClient(config: AppConfig): Promise<{ client: Client; close: () => Promise<void> }> {
  const dataConverter = encryptedDataConverter(config.payloadKeys);
  const connection = await connectClient(config.temporal);
  return { client: new Client({ connection, namespace: config.temporal.namespace, dataConverter }), close: () => connection.close() };
}
