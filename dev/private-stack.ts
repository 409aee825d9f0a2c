/**
 * A private embedded stack on free ports (the test run's, a benchmark's), and the configuration
 * and environment that reach it. Tests (test/global-setup.ts, test/helpers/stack.ts) and
 * benchmarks share this one module.
 */
import { loadConfig, type AppConfig } from '../common/config';
import { freePort, freePortRange } from './processes';
import { devPayloadKeyFile, devS3Credentials, devStorageTokenFile, stackDown, stackUp, type StackEndpoints } from './stack';
import { resolveStackSettings, type TemporalServerKind } from './stack-settings';
import { provisionTemporalCli } from './temporal-cli';

/** Configuration pointing at `stack`; `env` adds settings (PG_BIN_DIR is taken from ours). */
export function stackConfig(stack: StackEndpoints, env: Record<string, string | undefined> = {}): AppConfig {
  return loadConfig(
    { PG_BIN_DIR: process.env.PG_BIN_DIR, ...env },
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

/** Environment for child processes (workers, the CLI) so they talk to `stack`. */
export function stackEnv(stack: StackEndpoints): Record<string, string> {
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

export interface PrivateStackOptions {
  /** `sql`: the Temporal server production runs, on PostgreSQL. Default: the Temporal CLI dev server. */
  temporalServer?: TemporalServerKind;
  onProgress?: (line: string) => void;
}

/**
 * Starts a stack in `dir` on free ports. Free ports are only free until someone takes them (the
 * Temporal server itself binds random ports for its HTTP API and metrics), so a clash is retried
 * with fresh ports.
 */
export async function startPrivateStack(dir: string, options: PrivateStackOptions = {}): Promise<StackEndpoints> {
  for (let attempt = 1; ; attempt++) {
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
          endpointStorage: await freePort(),
        },
        temporalServer: options.temporalServer,
      },
      {},
    );
    try {
      return await stackUp(settings, {
        resolveTemporalCli: async () => (await provisionTemporalCli({ onProgress: (l) => console.log(l) })).path,
        onProgress: options.onProgress,
      });
    } catch (err) {
      await stackDown(dir);
      if (attempt >= 3 || !/already in use/.test((err as Error).message)) throw err;
      console.log(`private stack: ${(err as Error).message}; retrying with other ports`);
    }
  }
}
