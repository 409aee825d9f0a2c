import { z } from 'zod';
import { UserFacingError } from '../common/errors';
import { defaultStackDir } from '../common/paths';
import path from 'node:path';

/** Where and on which ports the embedded stack runs. Persisted in the stack directory. */
export interface StackSettings {
  dir: string;
  host: string;
  namespace: string;
  bucket: string;
  region: string;
  /** How many dev safekeepers run (Neon's default deployment has three). */
  safekeepers: number;
  /**
   * Which Temporal runs: the CLI's dev server (SQLite, with the Web UI), or `sql`, the server
   * production runs, on PostgreSQL (dev/temporal-server). Unset on stacks from before the choice: dev.
   */
  temporalServer?: TemporalServerKind;
  ports: {
    temporal: number;
    temporalUi: number;
    s3: number;
    pageserverPg: number;
    pageserverHttp: number;
    /** Safekeeper i (1-based) uses this port + i - 1; likewise for HTTP. */
    safekeeperPg: number;
    safekeeperHttp: number;
    /** The codec server the Web UI decodes payloads through (`durable-compute codec-server`). */
    codecServer: number;
    /** The endpoint storage stand-in (dev/endpoint-storage): per-endpoint objects such as the LFC state. */
    endpointStorage: number;
    /**
     * The control plane's import_complete endpoint (the pageserver calls it when an import ends).
     * Unset: a free port is chosen when the stack first starts, and kept from then on.
     */
    importCallback?: number;
  };
}

export const TEMPORAL_SERVER_KINDS = ['dev', 'sql'] as const;
export type TemporalServerKind = (typeof TEMPORAL_SERVER_KINDS)[number];

/** The stack's payload encryption key: created on its first start, kept with its state (mode 0600). */
export const devPayloadKeyFile = (stackDir: string): string => path.join(stackDir, 'payload.key');
/** The password the dev pageserver and safekeepers demand (Neon's storage_auth_token); made and kept the same way. */
export const devStorageTokenFile = (stackDir: string): string => path.join(stackDir, 'storage.token');

/** s3rver's fixed development credentials; not a secret, but kept out of printed output all the same. */
export const DEV_S3_CREDENTIALS = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } as const;

/** Neon's own defaults where it has them (pageserver 6400/9898, safekeeper 5454/7676). */
export const DEFAULT_PORTS: StackSettings['ports'] = {
  temporal: 7233,
  temporalUi: 8233,
  s3: 4568,
  pageserverPg: 6400,
  pageserverHttp: 9898,
  safekeeperPg: 5454,
  safekeeperHttp: 7676,
  codecServer: 8234,
  // Neon's endpoint storage default.
  endpointStorage: 51243,
};

/** Environment variable and CLI option (if any) for each port, so every error can say how to change it. */
export const PORT_VARIABLES: Record<keyof StackSettings['ports'], { env: string; option: string; what: string }> = {
  temporal: { env: 'DURABLE_COMPUTE_TEMPORAL_PORT', option: '--temporal-port', what: 'Temporal gRPC' },
  temporalUi: { env: 'DURABLE_COMPUTE_TEMPORAL_UI_PORT', option: '--ui-port', what: 'Temporal Web UI' },
  s3: { env: 'DURABLE_COMPUTE_S3_PORT', option: '--s3-port', what: 'S3 (s3rver)' },
  pageserverPg: { env: 'DURABLE_COMPUTE_PAGESERVER_PG_PORT', option: '--pageserver-pg-port', what: 'pageserver page service' },
  pageserverHttp: { env: 'DURABLE_COMPUTE_PAGESERVER_HTTP_PORT', option: '--pageserver-http-port', what: 'pageserver HTTP API' },
  safekeeperPg: { env: 'DURABLE_COMPUTE_SAFEKEEPER_PG_PORT', option: '--safekeeper-pg-port', what: 'safekeeper libpq (first of a range)' },
  safekeeperHttp: { env: 'DURABLE_COMPUTE_SAFEKEEPER_HTTP_PORT', option: '--safekeeper-http-port', what: 'safekeeper HTTP (first of a range)' },
  codecServer: { env: 'DURABLE_COMPUTE_CODEC_PORT', option: '--codec-port', what: 'codec server (Web UI payload decoding)' },
  endpointStorage: { env: 'DURABLE_COMPUTE_ENDPOINT_STORAGE_PORT', option: '--endpoint-storage-port', what: 'endpoint storage (LFC state over HTTP)' },
  importCallback: { env: 'DURABLE_COMPUTE_IMPORT_CALLBACK_PORT', option: '', what: 'import_complete callback endpoint' },
};

const port = z.coerce.number().int().min(1).max(65535);

/** Stack settings from explicit overrides, then the environment, then the documented defaults. */
export function resolveStackSettings(
  overrides: Partial<Omit<StackSettings, 'ports'>> & { ports?: Partial<Record<keyof StackSettings['ports'], number | string>> } = {},
  env: Record<string, string | undefined> = process.env,
  /** Settings the stack ran with last time: a restarted stack keeps its ports unless told otherwise. */
  previous?: StackSettings,
): StackSettings {
  const ports = { ...DEFAULT_PORTS, ...previous?.ports };
  for (const key of Object.keys(PORT_VARIABLES) as (keyof StackSettings['ports'])[]) {
    const { env: name, option } = PORT_VARIABLES[key];
    const raw = overrides.ports?.[key] ?? env[name];
    if (raw === undefined || raw === '') continue;
    const parsed = port.safeParse(raw);
    if (!parsed.success) throw new UserFacingError(`Invalid port for ${[name, option].filter(Boolean).join(' / ')}: ${JSON.stringify(raw)} is not 1-65535`);
    ports[key] = parsed.data;
  }
  const dir = overrides.dir ?? env.DURABLE_COMPUTE_STACK_DIR ?? defaultStackDir;
  const temporalServer = overrides.temporalServer ?? (env.DURABLE_COMPUTE_TEMPORAL_SERVER || undefined) ?? previous?.temporalServer ?? 'dev';
  if (!(TEMPORAL_SERVER_KINDS as readonly string[]).includes(temporalServer)) {
    throw new UserFacingError(`Invalid DURABLE_COMPUTE_TEMPORAL_SERVER=${JSON.stringify(temporalServer)}: use ${TEMPORAL_SERVER_KINDS.join(' or ')}`);
  }
  return {
    dir: path.resolve(dir),
    host: overrides.host ?? previous?.host ?? '127.0.0.1',
    namespace: overrides.namespace ?? previous?.namespace ?? 'default',
    bucket: overrides.bucket ?? previous?.bucket ?? 'durable-compute',
    region: overrides.region ?? previous?.region ?? 'us-east-1',
    safekeepers: overrides.safekeepers ?? previous?.safekeepers ?? 3,
    temporalServer: temporalServer as TemporalServerKind,
    ports,
  };
}
