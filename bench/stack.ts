/** The benchmarks' private embedded stack on free ports, and the configuration that reaches it. */
import { loadConfig, type AppConfig } from '../common/config';
import { freePort, freePortRange } from '../dev/processes';
import { devPayloadKeyFile, devS3Credentials, devStorageTokenFile, stackUp, type StackEndpoints } from '../dev/stack';
import { resolveStackSettings } from '../dev/stack-settings';
import { provisionTemporalCli } from '../dev/temporal-cli';

export function configFor(stack: StackEndpoints, extraEnv: Record<string, string> = {}): AppConfig {
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

export function envFor(stack: StackEndpoints): Record<string, string> {
  const creds = devS3Credentials();
  return {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    TEMPORAL_ADDRESS: stack.temporal.address,
    TEMPORAL_NAMESPACE: stack.temporal.namespace,
    S3_ENDPOINT: stack.s3.endpoint,
    S3_BUCKET: stack.s3.bucket,
    S3_REGION: stack.s3.region,
    AWS_ACCESS_KEY_ID: creds.accessKeyId,
    AWS_SECRET_ACCESS_KEY: creds.secretAccessKey,
    DURABLE_COMPUTE_PAYLOAD_KEY_FILE: devPayloadKeyFile(stack.stackDir),
    STORAGE_AUTH_TOKEN_FILE: devStorageTokenFile(stack.stackDir),
  };
}

export async function startStack(dir: string): Promise<StackEndpoints> {
  const settings = resolveStackSettings(
    {
      dir,
      ports: {
        temporal: await freePort(),
        temporalUi: await freePort(),
        s3: await freePort(),
        pageserverPg: await freePort(),
        pageserverHttp: await freePort(),
        safekeeperPg: await freePortRange(3),
        safekeeperHttp: await freePortRange(3),
        codecServer: await freePort(),
      },
    },
    {},
  );
  return stackUp(settings, { resolveTemporalCli: async () => (await provisionTemporalCli({ onProgress: (l) => console.log(l) })).path });
}

