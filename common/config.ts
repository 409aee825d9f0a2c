import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { UserFacingError } from './errors';
import { absoluteDir, base64Key, booleanText, hostPort, httpUrl, positiveInt, read, readableFile, type Env } from './env';
import { readSecretFile } from './secret-file';
import { defaultStackDir } from './paths';
import { SPEC_TRUST_LEVELS, type SpecTrust } from '../model/spec-trust';

export { loadCodecServerConfig, type CodecServerConfig } from './codec-server-config';

/**
 * The one place that reads the process environment. Every value is validated and an error names
 * the variable; secret values are never echoed back.
 */

export const CONTROL_PLANE_TASK_QUEUE_DEFAULT = 'durable-compute-control-plane';

export interface TemporalTlsFiles {
  clientCertPath?: string;
  clientKeyPath?: string;
  serverCaCertPath?: string;
  serverName?: string;
}

export interface TemporalConfig {
  address: string;
  namespace: string;
  /** false: plain text; true: TLS with system roots; object: TLS with these files. */
  tls: boolean | TemporalTlsFiles;
  apiKey?: string;
  controlPlaneTaskQueue: string;
  /** The control-plane worker's workflow cache (DURABLE_COMPUTE_MAX_CACHED_WORKFLOWS); absent: the worker's default. */
  maxCachedWorkflows?: number;
}

export interface S3Config {
  /** Absent means AWS's own endpoint for the region. */
  endpoint?: string;
  region: string;
  bucket: string;
  forcePathStyle: boolean;
  credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string };
  /** Connecting to S3 (S3_CONNECT_TIMEOUT_MS); absent: the client's default (drivers/s3/client.ts). */
  connectTimeoutMs?: number;
  /** A request with no data moving for this long fails and is retried (S3_REQUEST_TIMEOUT_MS). */
  requestTimeoutMs?: number;
}

export interface PayloadKeys {
  /** Encrypts new payloads. */
  current: Buffer;
  /** Still decrypt payloads written before a key rotation. */
  previous: Buffer[];
}

/** Where the pageserver and safekeepers are, for commands that create timelines or build specs. */
export interface StorageConfig {
  pageserverHttp?: string;
  /** host:port of the page service (libpq). */
  pageserverPg?: string;
  /** host:port of each safekeeper's libpq listener. */
  safekeepers: string[];
  /** Each safekeeper's HTTP API, for registering timelines. */
  safekeepersHttp: string[];
  /** The token the pageserver and safekeepers demand (Neon's storage_auth_token); none if they do not. */
  authToken?: string;
}

export interface AppConfig {
  temporal: TemporalConfig;
  storage: StorageConfig;
  s3: S3Config;
  /** Absent only when nothing configures one; workers and the CLI refuse to run workflows without it. */
  payloadKeys?: PayloadKeys;
  pgBinDir?: string;
  stackDir: string;
  /** S3 key prefix for cache (LFC) state objects. */
  cacheStatePrefix: string;
  /** Fault-injection pause points for tests (DURABLE_COMPUTE_FAILPOINTS=a,b with DURABLE_COMPUTE_ENABLE_FAILPOINTS=1); empty in production. */
  failpoints: string[];
  /** Fast import: how source connection strings are encrypted, and the importer host's settings. */
  imports: ImportConfig;
  /**
   * DURABLE_COMPUTE_SPEC_TRUST: `full` (default) lets a spec use every field; `restricted` makes
   * the client and the control-plane worker refuse the fields that give superuser-level power.
   */
  specTrust: SpecTrust;
  /** Where a worker process serves the Temporal SDK Runtime's Prometheus metrics; absent = not served. */
  workerMetrics?: WorkerMetricsConfig;
}

export interface WorkerMetricsConfig {
  /** host:port for the Runtime's Prometheus exporter (GET /metrics). */
  bindAddress: string;
  /** How often the control-plane worker recounts computes by status and imports by phase. */
  fleetRefreshSeconds: number;
}

/**
 * Fast import settings. The source connection string is encrypted by the client under `key` and
 * decrypted only on the importer; `Local` keys live in a file (the embedded default, created in
 * the stack directory on first use), `KMS` keys in AWS KMS.
 */
export interface ImportConfig {
  key: { kind: 'Local'; keyId: string; file: string; isDefaultFile: boolean } | { kind: 'KMS'; keyId: string };
  /** The local key file is also read when specs name a Local key while new ones use KMS. */
  localKeyFile: string;
  kms: { region: string; endpoint?: string };
  importer: {
    /** Working directories of imports on this host (dump, scratch data directory). */
    workdirRoot: string;
    /** This host's identity (its task queue); default: kept in <workdirRoot>/host-id. */
    hostId?: string;
    /** The queue all importers of one pool share (claims of new local runs). */
    sharedTaskQueue: string;
    uploadConcurrency?: number;
    /** Files above this many MiB go up in parts of uploadPartSizeMb; defaults in drivers/importer/upload.ts. */
    multipartThresholdMb?: number;
    uploadPartSizeMb?: number;
    /** Memory and CPUs the scratch Postgres is sized for; default: this machine's. */
    memoryMb?: number;
    cpus?: number;
  };
}

/** Endpoints of a running dev stack, used for whatever the environment leaves unset. */
export interface DevStackDefaults {
  temporal: { address: string; namespace: string };
  s3: { endpoint: string; bucket: string; region: string; accessKeyId: string; secretAccessKey: string };
  payloadKeyFile?: string;
  pageserver?: { pg: string; http: string };
  safekeepers?: { pg: string; http: string }[];
  storageAuthTokenFile?: string;
}

/** STORAGE_AUTH_TOKEN, or the file STORAGE_AUTH_TOKEN_FILE names, or the dev stack's. */
function storageAuthToken(env: Env, dev: DevStackDefaults | undefined): string | undefined {
  const token = read(env, 'STORAGE_AUTH_TOKEN', z.string().regex(/^\S+$/, 'expected one token without spaces'));
  const file = read(env, 'STORAGE_AUTH_TOKEN_FILE', readableFile);
  if (token && file) throw new UserFacingError('Set STORAGE_AUTH_TOKEN or STORAGE_AUTH_TOKEN_FILE, not both');
  const fromFile = file ?? (dev?.storageAuthTokenFile && existsSync(dev.storageAuthTokenFile) ? dev.storageAuthTokenFile : undefined);
  if (token || !fromFile) return token;
  try {
    return readSecretFile(fromFile, 'storage auth token');
  } catch (err) {
    throw new UserFacingError(`Invalid STORAGE_AUTH_TOKEN_FILE: ${(err as Error).message}`);
  }
}

export function loadConfig(env: Env = process.env, dev?: DevStackDefaults): AppConfig {
  const address = read(env, 'TEMPORAL_ADDRESS', hostPort) ?? dev?.temporal.address ?? '127.0.0.1:7233';
  const namespace =
    read(env, 'TEMPORAL_NAMESPACE', z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$/, 'not a valid namespace name')) ??
    dev?.temporal.namespace ??
    'default';
  const apiKey = read(env, 'TEMPORAL_API_KEY', z.string().min(1));
  const tlsFiles: TemporalTlsFiles = {
    clientCertPath: read(env, 'TEMPORAL_TLS_CLIENT_CERT_PATH', readableFile),
    clientKeyPath: read(env, 'TEMPORAL_TLS_CLIENT_KEY_PATH', readableFile),
    serverCaCertPath: read(env, 'TEMPORAL_TLS_SERVER_CA_CERT_PATH', readableFile),
    serverName: read(env, 'TEMPORAL_TLS_SERVER_NAME', z.string().min(1)),
  };
  if (Boolean(tlsFiles.clientCertPath) !== Boolean(tlsFiles.clientKeyPath)) {
    throw new UserFacingError(
      'Invalid environment: TEMPORAL_TLS_CLIENT_CERT_PATH and TEMPORAL_TLS_CLIENT_KEY_PATH must be set together',
    );
  }
  const anyTlsFile = Object.values(tlsFiles).some((v) => v !== undefined);
  const tlsFlag = read(env, 'TEMPORAL_TLS', booleanText);
  if (tlsFlag === false && (anyTlsFile || apiKey)) {
    throw new UserFacingError('Invalid environment: TEMPORAL_TLS=false contradicts TEMPORAL_API_KEY or the TEMPORAL_TLS_* files');
  }
  // An API key (Temporal Cloud) only travels over TLS.
  const tls: TemporalConfig['tls'] = anyTlsFile ? tlsFiles : (tlsFlag ?? Boolean(apiKey));

  const explicitEndpoint =
    read(env, 'S3_ENDPOINT', httpUrl) ?? read(env, 'AWS_ENDPOINT_URL_S3', httpUrl) ?? read(env, 'AWS_ENDPOINT_URL', httpUrl);
  const usesDevS3 = explicitEndpoint === undefined && env.S3_BUCKET === undefined && dev !== undefined;
  const accessKeyId = read(env, 'AWS_ACCESS_KEY_ID', z.string().min(1));
  const secretAccessKey = read(env, 'AWS_SECRET_ACCESS_KEY', z.string().min(1));
  if (Boolean(accessKeyId) !== Boolean(secretAccessKey)) {
    throw new UserFacingError('Invalid environment: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set together');
  }
  const bucket =
    read(env, 'S3_BUCKET', z.string().regex(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, 'not a valid S3 bucket name')) ??
    (usesDevS3 ? dev.s3.bucket : 'durable-compute');
  const credentials =
    accessKeyId && secretAccessKey
      ? { accessKeyId, secretAccessKey, sessionToken: read(env, 'AWS_SESSION_TOKEN', z.string().min(1)) }
      : usesDevS3
        ? { accessKeyId: dev.s3.accessKeyId, secretAccessKey: dev.s3.secretAccessKey }
        : undefined;
  const endpoint = explicitEndpoint ?? (usesDevS3 ? dev.s3.endpoint : undefined);

  const keyFile = read(env, 'DURABLE_COMPUTE_PAYLOAD_KEY_FILE', readableFile) ?? (dev?.payloadKeyFile && existsSync(dev.payloadKeyFile) ? dev.payloadKeyFile : undefined);
  const currentKey =
    read(env, 'DURABLE_COMPUTE_PAYLOAD_KEY', base64Key) ??
    (keyFile ? read({ DURABLE_COMPUTE_PAYLOAD_KEY_FILE: readFileSync(keyFile, 'utf8') }, 'DURABLE_COMPUTE_PAYLOAD_KEY_FILE', base64Key) : undefined);
  const previousKeys = (env.DURABLE_COMPUTE_PAYLOAD_PREVIOUS_KEYS ?? '')
    .split(',')
    .filter((k) => k.trim() !== '')
    .map((k) => read({ DURABLE_COMPUTE_PAYLOAD_PREVIOUS_KEYS: k }, 'DURABLE_COMPUTE_PAYLOAD_PREVIOUS_KEYS', base64Key)!);

  const safekeeperList = read(
    env,
    'SAFEKEEPERS',
    z.string().refine((v) => v.split(',').every((a) => hostPort.safeParse(a.trim()).success), 'expected comma-separated host:port'),
  );
  const storage: StorageConfig = {
    authToken: storageAuthToken(env, dev),
    pageserverHttp: read(env, 'PAGESERVER_HTTP_URL', httpUrl) ?? dev?.pageserver?.http,
    pageserverPg: read(env, 'PAGESERVER_PG', hostPort) ?? dev?.pageserver?.pg,
    safekeepers: safekeeperList ? safekeeperList.split(',').map((a) => a.trim()) : (dev?.safekeepers?.map((sk) => sk.pg) ?? []),
    safekeepersHttp:
      read(
        env,
        'SAFEKEEPERS_HTTP_URLS',
        z.string().refine((v) => v.split(',').every((u) => httpUrl.safeParse(u.trim()).success), 'expected comma-separated http(s) URLs'),
      )
        ?.split(',')
        .map((u) => u.trim()) ?? (dev?.safekeepers?.map((sk) => sk.http) ?? []),
  };

  return {
    storage,
    payloadKeys: currentKey ? { current: currentKey, previous: previousKeys } : undefined,
    temporal: {
      address,
      namespace,
      tls,
      apiKey,
      controlPlaneTaskQueue:
        read(env, 'DURABLE_COMPUTE_TASK_QUEUE', z.string().regex(/^[A-Za-z0-9._:-]{1,200}$/, 'not a valid task queue name')) ??
        CONTROL_PLANE_TASK_QUEUE_DEFAULT,
      maxCachedWorkflows: read(env, 'DURABLE_COMPUTE_MAX_CACHED_WORKFLOWS', positiveInt(1_000_000)),
    },
    s3: {
      endpoint,
      region:
        read(env, 'S3_REGION', z.string().regex(/^[a-z0-9-]{2,32}$/, 'not a valid region')) ??
        read(env, 'AWS_REGION', z.string().regex(/^[a-z0-9-]{2,32}$/, 'not a valid region')) ??
        (usesDevS3 ? dev.s3.region : 'us-east-1'),
      bucket,
      // Local S3 stand-ins answer only path-style requests.
      forcePathStyle: read(env, 'S3_FORCE_PATH_STYLE', booleanText) ?? endpoint !== undefined,
      credentials,
      connectTimeoutMs: read(env, 'S3_CONNECT_TIMEOUT_MS', positiveInt(600_000)),
      requestTimeoutMs: read(env, 'S3_REQUEST_TIMEOUT_MS', positiveInt(3_600_000)),
    },
    pgBinDir: read(env, 'PG_BIN_DIR', absoluteDir),
    cacheStatePrefix:
      read(env, 'DURABLE_COMPUTE_CACHE_PREFIX', z.string().regex(/^[A-Za-z0-9._-]+(\/[A-Za-z0-9._-]+)*$/, 'expected a relative S3 key prefix')) ?? 'lfc',
    failpoints: loadFailpoints(env),
    specTrust: read(env, 'DURABLE_COMPUTE_SPEC_TRUST', z.enum(SPEC_TRUST_LEVELS as [SpecTrust, ...SpecTrust[]], { error: 'expected full or restricted' })) ?? 'full',
    imports: loadImportConfig(env, read(env, 'DURABLE_COMPUTE_STACK_DIR', z.string().min(1).transform((p) => path.resolve(p))) ?? defaultStackDir),
    stackDir: read(env, 'DURABLE_COMPUTE_STACK_DIR', z.string().min(1).transform((p) => path.resolve(p))) ?? defaultStackDir,
    workerMetrics: loadWorkerMetricsConfig(env),
  };
}

function loadWorkerMetricsConfig(env: Env): WorkerMetricsConfig | undefined {
  const port = read(env, 'DURABLE_COMPUTE_WORKER_METRICS_PORT', z.coerce.number().int().min(1, 'port must be 1-65535').max(65535, 'port must be 1-65535'));
  const host = read(env, 'DURABLE_COMPUTE_WORKER_METRICS_HOST', z.string().regex(/^([0-9.]+|\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+)$/, 'expected a host name or IP address'));
  const refresh = read(env, 'DURABLE_COMPUTE_FLEET_METRICS_INTERVAL_SECONDS', positiveInt(3600));
  if (port === undefined) {
    if (host !== undefined) throw new UserFacingError('Invalid environment: DURABLE_COMPUTE_WORKER_METRICS_HOST needs DURABLE_COMPUTE_WORKER_METRICS_PORT');
    return undefined;
  }
  // Prometheus scrapes from another machine, as compute_ctl's metrics are (it binds every address).
  return { bindAddress: `${host ?? '0.0.0.0'}:${port}`, fleetRefreshSeconds: refresh ?? 30 };
}

/**
 * Failpoints pause activities on purpose: a test feature. Naming them is not enough to arm them;
 * DURABLE_COMPUTE_ENABLE_FAILPOINTS must say so too, and failpoints named without it are refused
 * rather than ignored, so nobody believes they are armed when they are not.
 */
function loadFailpoints(env: Env): string[] {
  const names = (read(env, 'DURABLE_COMPUTE_FAILPOINTS', z.string().regex(/^[A-Za-z]+(,[A-Za-z]+)*$/, 'expected comma-separated failpoint names')) ?? '')
    .split(',')
    .filter(Boolean);
  const enabled = read(env, 'DURABLE_COMPUTE_ENABLE_FAILPOINTS', booleanText) ?? false;
  if (names.length > 0 && !enabled) {
    throw new UserFacingError(
      'DURABLE_COMPUTE_FAILPOINTS is set but failpoints are a test feature: also set DURABLE_COMPUTE_ENABLE_FAILPOINTS=1 to arm them, or unset DURABLE_COMPUTE_FAILPOINTS',
    );
  }
  return names;
}

function loadImportConfig(env: Env, stackDir: string): ImportConfig {
  const localKeyFile = read(env, 'DURABLE_COMPUTE_IMPORT_KEY_FILE', z.string().min(1).transform((p) => path.resolve(p)));
  const file = localKeyFile ?? path.join(stackDir, 'import.key');
  const kmsKeyId = read(env, 'DURABLE_COMPUTE_IMPORT_KMS_KEY_ID', z.string().min(1).max(2048));
  const region = z.string().regex(/^[a-z0-9-]{2,32}$/, 'not a valid region');
  return {
    key: kmsKeyId
      ? { kind: 'KMS', keyId: kmsKeyId }
      : {
          kind: 'Local',
          keyId: read(env, 'DURABLE_COMPUTE_IMPORT_KEY_ID', z.string().regex(/^[A-Za-z0-9._:-]{1,128}$/, 'expected 1-128 letters, digits, . _ : -')) ?? 'durable-compute-local',
          file,
          isDefaultFile: localKeyFile === undefined,
        },
    localKeyFile: file,
    kms: {
      region: read(env, 'DURABLE_COMPUTE_IMPORT_KMS_REGION', region) ?? read(env, 'AWS_REGION', region) ?? 'us-east-1',
      endpoint: read(env, 'AWS_ENDPOINT_URL_KMS', httpUrl),
    },
    importer: {
      workdirRoot:
        read(env, 'DURABLE_COMPUTE_IMPORTER_WORKDIR', z.string().refine((p) => path.isAbsolute(p), 'expected an absolute path').transform((p) => path.normalize(p))) ??
        path.join(stackDir, 'importer'),
      hostId: read(env, 'DURABLE_COMPUTE_IMPORTER_HOST_ID', z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$/, 'expected 1-100 letters, digits, . _ -')),
      sharedTaskQueue:
        read(env, 'DURABLE_COMPUTE_IMPORTER_TASK_QUEUE', z.string().regex(/^[A-Za-z0-9._:-]{1,150}$/, 'not a valid task queue name')) ?? 'durable-compute-importer',
      uploadConcurrency: read(env, 'DURABLE_COMPUTE_IMPORTER_UPLOAD_CONCURRENCY', positiveInt(64)),
      multipartThresholdMb: read(env, 'DURABLE_COMPUTE_IMPORTER_MULTIPART_THRESHOLD_MB', positiveInt(5 * 1024)),
      // S3 parts are 5 MiB to 5 GiB; a part is held in memory while it is sent.
      uploadPartSizeMb: read(env, 'DURABLE_COMPUTE_IMPORTER_UPLOAD_PART_SIZE_MB', positiveInt(1024).refine((n) => n >= 5, 'S3 parts are at least 5 MiB')),
      memoryMb: read(env, 'DURABLE_COMPUTE_IMPORTER_MEMORY_MB', positiveInt(16 * 1024 * 1024)),
      cpus: read(env, 'DURABLE_COMPUTE_IMPORTER_CPUS', positiveInt(1024)),
    },
  };
}

/** Reads a TLS file named by the configuration; only called once a connection is made. */
export function readTlsFile(p: string | undefined): Buffer | undefined {
  return p === undefined ? undefined : readFileSync(p);
}
