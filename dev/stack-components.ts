import { createHash } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { Connection } from '@temporalio/client';
import proto from '@temporalio/proto';
import { projectRoot, tsNodeArgs } from '../common/paths';
import { SEARCH_ATTRIBUTES } from '../model/search-attributes';
import { CONTROL_PLANE_TASK_QUEUE_DEFAULT } from '../common/config';
import { MAX_WORKDIR_ROOT_BYTES } from '../common/paths';
import { IMPORTER_SHARED_TASK_QUEUE } from '../model/import-status';
import { canConnect, spawnDetached, type TrackedProcess } from './processes';
import { devEndpointStoragePublicKeyFile } from './endpoint-storage/keys';
import { DEV_S3_CREDENTIALS, devPayloadKeyFile, devStorageTokenFile, type StackSettings } from './stack-settings';

type PortKey = keyof StackSettings['ports'];

/** One long-running process of the embedded stack. */
export interface StackComponent {
  name: string;
  /** The ports it binds, checked before it starts so a clash is an error rather than a hang. */
  ports(s: StackSettings): { port: number; key: PortKey }[];
  start(s: StackSettings, ctx: { temporalCli: string }): TrackedProcess;
  /** Resolves once the component accepts work; rejects with the reason otherwise. */
  probe(s: StackSettings): Promise<void>;
  readyTimeoutMs: number;
}

async function httpOk(url: string): Promise<void> {
  const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
  await res.arrayBuffer();
  if (res.status !== 200) throw new Error(`${url} answered ${res.status}`);
}

async function tcpOpen(host: string, port: number): Promise<void> {
  if (!(await canConnect(host, port))) throw new Error(`nothing accepts connections on ${host}:${port}`);
}

function runTs(s: StackSettings, name: string, script: string, args: string[], env?: NodeJS.ProcessEnv, nodeFlags: string[] = []): TrackedProcess {
  return spawnDetached(process.execPath, [...nodeFlags, ...tsNodeArgs(), path.join(projectRoot, script), ...args], {
    log: path.join(s.dir, `${name}.log`),
    cwd: projectRoot,
    env,
  });
}

/** Where the browser reaches the stack's codec server (the UI calls it from the page, not from its server). */
export function codecEndpoint(s: StackSettings): string {
  return `http://${s.host}:${s.ports.codecServer}`;
}

/** The origins the stack's Web UI is opened at: its address, and localhost for a loopback stack. */
function uiOrigins(s: StackSettings): string[] {
  const origins = [`http://${s.host}:${s.ports.temporalUi}`];
  if (s.host === '127.0.0.1') origins.push(`http://localhost:${s.ports.temporalUi}`);
  return origins;
}

export function safekeeperPorts(s: StackSettings, index: number): { pg: number; http: number } {
  return { pg: s.ports.safekeeperPg + index - 1, http: s.ports.safekeeperHttp + index - 1 };
}

const temporalComponent: StackComponent = {
  name: 'temporal',
  ports: (s) => [
    { port: s.ports.temporal, key: 'temporal' },
    { port: s.ports.temporalUi, key: 'temporalUi' },
  ],
  start(s, { temporalCli }) {
    const args = [
      'server',
      'start-dev',
      '--ip',
      s.host,
      '--port',
      String(s.ports.temporal),
      '--ui-port',
      String(s.ports.temporalUi),
      // A file, so running workflows survive a stack restart.
      '--db-filename',
      path.join(s.dir, 'temporal.db'),
      '--namespace',
      s.namespace,
      '--log-level',
      'warn',
      // The UI decodes payloads in the browser through the stack's codec server.
      '--ui-codec-endpoint',
      codecEndpoint(s),
      ...Object.entries(SEARCH_ATTRIBUTES).flatMap(([name, type]) => ['--search-attribute', `${name}=${type}`]),
    ];
    return spawnDetached(temporalCli, args, { log: path.join(s.dir, 'temporal.log') });
  },
  async probe(s) {
    const connection = await Connection.connect({ address: `${s.host}:${s.ports.temporal}`, connectTimeout: '2s' });
    try {
      await connection.workflowService.describeNamespace({ namespace: s.namespace });
    } finally {
      await connection.close();
    }
    await httpOk(`http://${s.host}:${s.ports.temporalUi}/`);
  },
  readyTimeoutMs: 90_000,
};

const s3Component: StackComponent = {
  name: 's3',
  ports: (s) => [{ port: s.ports.s3, key: 's3' }],
  // s3rver makes ListObjectsV2 continuation tokens with DES, which OpenSSL 3 only offers through
  // its legacy provider: without it, any paged V2 listing (aws s3 sync, the SDK's paginator) fails.
  start: (s) =>
    runTs(s, 's3', 'dev/s3-server-main.ts', ['--host', s.host, '--port', String(s.ports.s3), '--dir', path.join(s.dir, 's3'), '--bucket', s.bucket], undefined, [
      '--openssl-legacy-provider',
    ]),
  probe: (s) => httpOk(`http://${s.host}:${s.ports.s3}/`),
  readyTimeoutMs: 30_000,
};

/** The endpoint storage stand-in, keeping its objects in the stack's bucket under endpoint-storage/. */
const endpointStorageComponent: StackComponent = {
  name: 'endpoint-storage',
  ports: (s) => [{ port: s.ports.endpointStorage, key: 'endpointStorage' }],
  start: (s) =>
    runTs(
      s,
      'endpoint-storage',
      'dev/endpoint-storage/main.ts',
      [
        '--listen',
        `${s.host}:${s.ports.endpointStorage}`,
        '--pemfile',
        devEndpointStoragePublicKeyFile(s.dir),
        '--s3-endpoint',
        `http://${s.host}:${s.ports.s3}`,
        '--s3-bucket',
        s.bucket,
        '--s3-region',
        s.region,
      ],
      // The credentials travel in the environment, not argv.
      { ...process.env, AWS_ACCESS_KEY_ID: DEV_S3_CREDENTIALS.accessKeyId, AWS_SECRET_ACCESS_KEY: DEV_S3_CREDENTIALS.secretAccessKey },
    ),
  probe: (s) => httpOk(`http://${s.host}:${s.ports.endpointStorage}/status`),
  readyTimeoutMs: 30_000,
};

function safekeeperComponent(index: number): StackComponent {
  return {
    name: `safekeeper-${index}`,
    ports: (s) => [
      { port: safekeeperPorts(s, index).pg, key: 'safekeeperPg' },
      { port: safekeeperPorts(s, index).http, key: 'safekeeperHttp' },
    ],
    start(s) {
      const p = safekeeperPorts(s, index);
      return runTs(s, `safekeeper-${index}`, 'dev/storage/safekeeper/main.ts', [
        '--id',
        String(index),
        '--dir',
        path.join(s.dir, 'storage', `safekeeper-${index}`),
        '--host',
        s.host,
        '--pg-port',
        String(p.pg),
        '--http-port',
        String(p.http),
        // A file, so the token is not in the process listing.
        '--auth-token-file',
        devStorageTokenFile(s.dir),
      ]);
    },
    async probe(s) {
      const p = safekeeperPorts(s, index);
      await tcpOpen(s.host, p.pg);
      await tcpOpen(s.host, p.http);
    },
    readyTimeoutMs: 30_000,
  };
}

const pageserverComponent: StackComponent = {
  name: 'pageserver',
  ports: (s) => [
    { port: s.ports.pageserverPg, key: 'pageserverPg' },
    { port: s.ports.pageserverHttp, key: 'pageserverHttp' },
  ],
  start(s) {
    const safekeepers = Array.from({ length: s.safekeepers }, (_, i) => `http://${s.host}:${safekeeperPorts(s, i + 1).http}`);
    return runTs(s, 'pageserver', 'dev/storage/pageserver/main.ts', [
      '--dir',
      path.join(s.dir, 'storage', 'pageserver'),
      '--host',
      s.host,
      '--pg-port',
      String(s.ports.pageserverPg),
      '--http-port',
      String(s.ports.pageserverHttp),
      '--safekeepers',
      safekeepers.join(','),
      '--auth-token-file',
      devStorageTokenFile(s.dir),
      // import_pgdata reads the stack's bucket; the credentials travel in the environment, not argv.
      '--s3-endpoint',
      `http://${s.host}:${s.ports.s3}`,
      '--s3-buckets',
      s.bucket,
      '--s3-region',
      s.region,
      // A GET of one small object: cheap enough to notice the commit marker within a quarter second.
      '--import-poll-ms',
      '250',
      // Finished imports are reported to the stack's import-callback, which signals the import workflow.
      ...(s.ports.importCallback ? ['--import-complete-url', `http://${s.host}:${s.ports.importCallback}`] : []),
    ], { ...process.env, AWS_ACCESS_KEY_ID: DEV_S3_CREDENTIALS.accessKeyId, AWS_SECRET_ACCESS_KEY: DEV_S3_CREDENTIALS.secretAccessKey }, [
      // An import streams gigabytes through 64 KiB socket buffers: a young generation large enough
      // for them to die young saves the full collections they would otherwise cause (about 20%
      // of an import's download time and CPU, measured on the import bench's data directory).
      '--max-semi-space-size=64',
    ]);
  },
  async probe(s) {
    await tcpOpen(s.host, s.ports.pageserverPg);
    await httpOk(`http://${s.host}:${s.ports.pageserverHttp}/v1/status`).catch(async () => tcpOpen(s.host, s.ports.pageserverHttp));
  },
  readyTimeoutMs: 30_000,
};

/** Environment of the stack's own CLI processes (workers, callback endpoint): this stack, its key. */
function stackEnv(s: StackSettings, extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return {
    ...process.env,
    DURABLE_COMPUTE_STACK_DIR: s.dir,
    TEMPORAL_ADDRESS: `${s.host}:${s.ports.temporal}`,
    TEMPORAL_NAMESPACE: s.namespace,
    DURABLE_COMPUTE_PAYLOAD_KEY_FILE: devPayloadKeyFile(s.dir),
    STORAGE_AUTH_TOKEN_FILE: devStorageTokenFile(s.dir),
    ...extra,
  };
}

async function expectPollers(s: StackSettings, taskQueue: string, type: 'workflow' | 'activity', who: string): Promise<void> {
  const connection = await Connection.connect({ address: `${s.host}:${s.ports.temporal}`, connectTimeout: '2s' });
  try {
    const types = proto.temporal.api.enums.v1.TaskQueueType;
    const queue = await connection.workflowService.describeTaskQueue({
      namespace: s.namespace,
      taskQueue: { name: taskQueue },
      taskQueueType: type === 'workflow' ? types.TASK_QUEUE_TYPE_WORKFLOW : types.TASK_QUEUE_TYPE_ACTIVITY,
    });
    if (!queue.pollers?.length) throw new Error(`the ${who} is not polling yet`);
  } finally {
    await connection.close();
  }
}

/** The control-plane worker, so `dev up` alone is enough to run computes with the CLI. */
const controlPlaneWorkerComponent: StackComponent = {
  name: 'control-plane-worker',
  ports: () => [],
  start: (s) => runTs(s, 'control-plane-worker', 'bin/durable-compute.mjs', ['worker', 'control-plane'], stackEnv(s)),
  probe: (s) => expectPollers(s, process.env.DURABLE_COMPUTE_TASK_QUEUE || CONTROL_PLANE_TASK_QUEUE_DEFAULT, 'workflow', 'control-plane worker'),
  readyTimeoutMs: 90_000,
};

/**
 * The control plane's `PUT /import_complete` endpoint: the pageserver calls it when an import
 * ends and it signals the import's workflow, which then stops waiting at once (it still polls
 * the pageserver now and then, should a call never arrive).
 */
const importCallbackComponent: StackComponent = {
  name: 'import-callback',
  ports: (s) => (s.ports.importCallback ? [{ port: s.ports.importCallback, key: 'importCallback' }] : []),
  start: (s) =>
    runTs(s, 'import-callback', 'bin/durable-compute.mjs', ['import', 'callback-server', '--listen', `${s.host}:${s.ports.importCallback}`], stackEnv(s)),
  probe: (s) => httpOk(`http://${s.host}:${s.ports.importCallback}/status`),
  readyTimeoutMs: 60_000,
};

/**
 * The codec server the Web UI decodes payloads through, with the stack's payload key. Without a
 * bearer token (`--dev-no-auth`, which it accepts only on loopback): the dev UI has no login
 * whose token it could forward.
 */
const codecServerComponent: StackComponent = {
  name: 'codec-server',
  ports: (s) => [{ port: s.ports.codecServer, key: 'codecServer' }],
  start(s) {
    const env = stackEnv(s);
    delete env.DURABLE_COMPUTE_CODEC_TOKEN;
    delete env.DURABLE_COMPUTE_CODEC_TOKEN_FILE;
    delete env.DURABLE_COMPUTE_CODEC_ALLOWED_ORIGINS;
    return runTs(
      s,
      'codec-server',
      'bin/durable-compute.mjs',
      ['codec-server', '--listen', `${s.host}:${s.ports.codecServer}`, '--dev-no-auth', '--allow-origin', ...uiOrigins(s)],
      env,
    );
  },
  probe: (s) => httpOk(`${codecEndpoint(s)}/health`),
  readyTimeoutMs: 60_000,
};

/**
 * Where the stack's importer keeps its imports' working directories: in the stack directory,
 * unless that path is too long for the scratch Postgres sockets below it (then a short one in
 * the temp directory, named after the stack so two stacks never share it).
 */
export function devImporterWorkdir(s: StackSettings): string {
  const inStack = path.join(s.dir, 'importer');
  if (Buffer.byteLength(inStack) <= MAX_WORKDIR_ROOT_BYTES) return inStack;
  return path.join(os.tmpdir(), `dc-importer-${createHash('sha256').update(s.dir).digest('hex').slice(0, 12)}`);
}

/** One importer host, so `durable-compute import start` works against the dev stack alone. */
const importerWorkerComponent: StackComponent = {
  name: 'importer-worker',
  ports: () => [],
  start: (s) => runTs(s, 'importer-worker', 'bin/durable-compute.mjs', ['worker', 'importer'], stackEnv(s, { DURABLE_COMPUTE_IMPORTER_WORKDIR: devImporterWorkdir(s) })),
  probe: (s) => expectPollers(s, process.env.DURABLE_COMPUTE_IMPORTER_TASK_QUEUE || IMPORTER_SHARED_TASK_QUEUE, 'activity', 'importer worker'),
  readyTimeoutMs: 90_000,
};

/** In start order: the pageserver reads WAL from the safekeepers; the workers and the callback endpoint need Temporal. */
export function stackComponents(s: StackSettings): StackComponent[] {
  return [
    // The production server on PostgreSQL is two processes with its own state: stack.ts runs it through dev/temporal-server.
    ...(s.temporalServer === 'sql' ? [] : [temporalComponent]),
    s3Component,
    endpointStorageComponent,
    ...Array.from({ length: s.safekeepers }, (_, i) => safekeeperComponent(i + 1)),
    pageserverComponent,
    controlPlaneWorkerComponent,
    importCallbackComponent,
    importerWorkerComponent,
    codecServerComponent,
  ];
}
