/**
 * `npm run build`: compiles what runs in production into dist/, so no process there needs tsx or
 * (for the compute worker) node_modules.
 *
 *   dist/compute-worker/  the VM agent, self-contained: copy the folder to a VM and run
 *                         `node compute-worker.cjs` (see durable-compute-compute-worker.service)
 *   dist/cli/             the whole CLI (`node dist/cli/durable-compute.cjs ...`): clients, the
 *                         control-plane worker with a workflow bundle made here, the importer
 *                         and compute workers. Also self-contained; `dev` commands still need the
 *                         source checkout (they run the dev stack's TypeScript).
 *
 * Every bundle is CommonJS: the Temporal SDK's native bridge finds its binary through `__dirname`
 * and `require()`s it, which only a CommonJS file does as written. `import.meta.url` becomes the
 * bundle file's own URL, so paths the sources compute next to themselves (the failure converter,
 * the WAL pusher's entry point) land next to the bundle, where this script puts those files.
 */
import { copyFileSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';
import { COMPUTE_WORKER_ENV, COMPUTE_WORKER_NODE_FLAGS } from './compute-worker-runtime';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);

/** The SDK worker's workflow machinery (webpack, the workflow sandboxes) that an activities-only worker never runs. */
const WORKFLOW_ONLY_SDK_MODULES = /^\.\.?\/(workflow\/bundler|debug-replayer|workflow\/vm|workflow\/reusable-vm|workflow\/threaded-vm)$/;

const stubSource = `
const unavailable = () => {
  throw new Error('this bundle runs activities only: workflow bundling and sandboxes are not in it');
};
class Unavailable {
  constructor() { unavailable(); }
  static create() { unavailable(); }
}
module.exports = {
  bundleWorkflowCode: unavailable,
  startDebugReplayer: unavailable,
  WorkflowCodeBundler: Unavailable,
  defaultWorkflowInterceptorModules: [],
  VMWorkflowCreator: Unavailable,
  ReusableVMWorkflowCreator: Unavailable,
  ThreadedVMWorkflowCreator: Unavailable,
};
`;

/** Replaces the SDK's workflow-only modules with stubs that throw if ever used. */
const activitiesOnlySdk: esbuild.Plugin = {
  name: 'activities-only-sdk',
  setup(build) {
    build.onResolve({ filter: WORKFLOW_ONLY_SDK_MODULES }, (args) =>
      args.importer.includes(`${path.sep}@temporalio${path.sep}worker${path.sep}lib${path.sep}`) ? { path: args.path, namespace: 'workflow-only-stub' } : undefined,
    );
    build.onLoad({ filter: /.*/, namespace: 'workflow-only-stub' }, () => ({ contents: stubSource, loader: 'js' }));
  },
};

/**
 * @temporalio/client loads @grpc/grpc-js for its own Connection, which the worker never uses: it
 * talks to Temporal through the SDK's native (Rust) connection. The client code still reads gRPC
 * status codes and builds Metadata on errors, so those two are the real ones; anything else
 * throws if called.
 */
const grpcStubSource = `
const { Status } = require('@grpc/grpc-js/build/src/constants');
const { Metadata } = require('@grpc/grpc-js/build/src/metadata');
const unavailable = (name) => function () {
  throw new Error('@grpc/grpc-js ' + name + ' is not in this bundle: the worker reaches Temporal through the native connection');
};
const unavailableNamespace = (name) => new Proxy({}, { get: (_, key) => (typeof key === 'string' ? unavailable(name + '.' + key) : undefined) });
module.exports = {
  status: Status,
  Metadata,
  credentials: unavailableNamespace('credentials'),
  // The client's Connection class builds its client class when it is defined; using it throws.
  makeGenericClientConstructor: () => unavailable('Client'),
  InterceptingCall: unavailable('InterceptingCall'),
  RequesterBuilder: unavailable('RequesterBuilder'),
  ListenerBuilder: unavailable('ListenerBuilder'),
  Client: unavailable('Client'),
  ChannelCredentials: unavailable('ChannelCredentials'),
};
`;

const nativeConnectionOnly: esbuild.Plugin = {
  name: 'native-connection-only',
  setup(build) {
    build.onResolve({ filter: /^@grpc\/grpc-js$/ }, () => ({ path: '@grpc/grpc-js', namespace: 'grpc-stub' }));
    build.onLoad({ filter: /.*/, namespace: 'grpc-stub' }, () => ({ contents: grpcStubSource, loader: 'js', resolveDir: root }));
  },
};

/** The cache code and the AWS SDK stay out of the compute worker's main file (see cache-runtime.ts). */
const cacheRuntimeApart: esbuild.Plugin = {
  name: 'cache-runtime-apart',
  setup(build) {
    build.onResolve({ filter: /^\.\/cache-runtime$/ }, (args) =>
      args.importer.endsWith(path.join('activities', 'compute', 'cache-node-activities.ts')) ? { path: './cache-runtime.cjs', external: true } : undefined,
    );
  },
};

const shared: esbuild.BuildOptions = {
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  outExtension: { '.js': '.cjs' },
  define: { 'import.meta.url': '__bundleFileUrl', __DURABLE_COMPUTE_BUNDLED__: 'true' },
  banner: { js: "const __bundleFileUrl = require('node:url').pathToFileURL(__filename).href;" },
  // Smaller files parse faster at every start; names are kept for error messages and stack traces.
  minify: true,
  keepNames: true,
  sourcemap: 'linked',
  legalComments: 'linked',
  logLevel: 'warning',
  // require.resolve() of SDK files the stubs make unreachable.
  logOverride: { 'require-resolve-not-external': 'silent' },
  metafile: true,
  // Only a worker running from the sources bundles its sidecars with esbuild (sidecars.ts).
  external: ['esbuild'],
};

/** Copies the SDK's native bridge where @temporalio/core-bridge looks for it: `<dir of the bundle>/releases/<target>/index.node`. */
function copyNativeBridge(outDir: string): string {
  const bridgeDir = path.dirname(require.resolve('@temporalio/core-bridge/package.json'));
  const { getPrebuiltPath, getPrebuiltTargetName } = require(path.join(bridgeDir, 'common.js')) as {
    getPrebuiltPath: () => string;
    getPrebuiltTargetName: () => string;
  };
  const target = path.join(outDir, 'releases', getPrebuiltTargetName(), 'index.node');
  mkdirSync(path.dirname(target), { recursive: true });
  copyFileSync(getPrebuiltPath(), target);
  return target;
}

/** The unit file with the runtime settings filled in. */
function systemdUnit(): string {
  const template = readFileSync(path.join(root, 'deploy', 'durable-compute-compute-worker.service'), 'utf8');
  const environment = Object.entries(COMPUTE_WORKER_ENV)
    .map(([name, value]) => `Environment=${name}=${value}`)
    .join('\n');
  return template.replace('@ENVIRONMENT@', environment).replace('@NODE_FLAGS@', COMPUTE_WORKER_NODE_FLAGS.join(' '));
}

/**
 * A container's entrypoint: `ENTRYPOINT ["/opt/durable-compute/compute-worker/entrypoint.sh"]`
 * with `CMD ["--pool", "--pgdata", "/var/lib/durable-compute/pgdata"]`. `exec` makes node the
 * container's main process, so the runtime's SIGTERM (`docker stop`) reaches the worker, which
 * drains.
 */
function containerEntrypoint(): string {
  const env = Object.entries(COMPUTE_WORKER_ENV)
    .map(([name, value]) => `export ${name}=${value}`)
    .join('\n');
  return `#!/bin/sh
# Container entrypoint of the compute worker; arguments are the worker's (--pool or --compute-id, --pgdata).
${env}
exec node ${COMPUTE_WORKER_NODE_FLAGS.join(' ')} "$(dirname "$0")/compute-worker.cjs" "$@"
`;
}

/** The zstd codec of Neon's cache-state format reads its wasm beside itself (__dirname): beside the bundle. */
function copyZstdWasm(outDir: string): void {
  // The package exports only its entry (dist/common/index.node.js), which sits beside the wasm.
  copyFileSync(path.join(path.dirname(require.resolve('@bokuweb/zstd-wasm')), 'zstd.wasm'), path.join(outDir, 'zstd.wasm'));
}

/**
 * A bundle of an activities-only worker: the SDK without its workflow machinery or gRPC, the native
 * bridge beside it. The compute worker is one; the agent benchmark builds its floor (a worker with
 * one no-op activity) the same way, so the two differ only in what our code loads.
 */
export async function buildActivitiesOnlyBundle(outDir: string, options: Pick<esbuild.BuildOptions, 'entryPoints' | 'external' | 'plugins'>): Promise<esbuild.Metafile> {
  rmSync(outDir, { recursive: true, force: true });
  const result = await esbuild.build({
    ...shared,
    entryPoints: options.entryPoints,
    outdir: outDir,
    external: [...shared.external!, ...(options.external ?? [])],
    plugins: [activitiesOnlySdk, nativeConnectionOnly, ...(options.plugins ?? [])],
  });
  copyNativeBridge(outDir);
  return result.metafile!;
}

export async function buildComputeWorker(distDir = path.join(root, 'dist')): Promise<string> {
  const outDir = path.join(distDir, 'compute-worker');
  const metafile = await buildActivitiesOnlyBundle(outDir, {
    entryPoints: {
      'compute-worker': path.join(root, 'client/compute-worker-main.ts'),
      'cache-runtime': path.join(root, 'activities/compute/cache-runtime.ts'),
      // Children the stock storage backend starts (nodeEntryArgs finds them beside the bundle).
      'wal-pusher-main': path.join(root, 'drivers/storage-backend/stock/wal-pusher-main.ts'),
      'sync-safekeepers-main': path.join(root, 'drivers/storage-backend/stock/sync-safekeepers-main.ts'),
      // The SDK require()s the failure converter by path (data-converter.ts points beside the bundle).
      'failure-converter': path.join(root, 'common/codec/failure-converter.cjs'),
    },
    // A VM's worker never writes to a terminal: its logs stay JSON (common/logger.ts falls back).
    external: ['pino-pretty'],
    plugins: [cacheRuntimeApart],
  });
  writeFileSync(path.join(outDir, 'meta.json'), JSON.stringify(metafile));
  copyZstdWasm(outDir);
  copyFileSync(path.join(root, 'deploy', 'compute-worker.env.example'), path.join(outDir, 'compute-worker.env.example'));
  writeFileSync(path.join(outDir, 'durable-compute-compute-worker.service'), systemdUnit());
  writeFileSync(path.join(outDir, 'entrypoint.sh'), containerEntrypoint(), { mode: 0o755 });
  return outDir;
}

/** Only webpack stays out of the CLI: its workflow code is bundled here, once. */
const prebuiltWorkflows: esbuild.Plugin = {
  name: 'prebuilt-workflows',
  setup(build) {
    build.onResolve({ filter: /^\.\.?\/(workflow\/bundler|debug-replayer)$/ }, (args) =>
      args.importer.includes(`${path.sep}@temporalio${path.sep}worker${path.sep}lib${path.sep}`) ? { path: args.path, namespace: 'workflow-only-stub' } : undefined,
    );
    build.onLoad({ filter: /.*/, namespace: 'workflow-only-stub' }, () => ({ contents: stubSource, loader: 'js' }));
  },
};

export async function buildCli(distDir = path.join(root, 'dist')): Promise<string> {
  const outDir = path.join(distDir, 'cli');
  rmSync(outDir, { recursive: true, force: true });
  await esbuild.build({
    ...shared,
    entryPoints: {
      'durable-compute': path.join(root, 'client/cli.ts'),
      'wal-pusher-main': path.join(root, 'drivers/storage-backend/stock/wal-pusher-main.ts'),
      'sync-safekeepers-main': path.join(root, 'drivers/storage-backend/stock/sync-safekeepers-main.ts'),
      'failure-converter': path.join(root, 'common/codec/failure-converter.cjs'),
    },
    outdir: outDir,
    // s3rver and the dev stack's servers are dev-only and run from the sources.
    external: ['s3rver', 'esbuild'],
    plugins: [prebuiltWorkflows],
  });
  // The SDK starts its workflow thread with `require.resolve('./workflow-worker-thread')` beside
  // the bundle: a .js name, and a package.json that makes .js CommonJS here.
  const workerLib = path.dirname(require.resolve('@temporalio/worker/package.json'));
  await esbuild.build({
    ...shared,
    entryPoints: { 'workflow-worker-thread': path.join(workerLib, 'lib/workflow/workflow-worker-thread.js') },
    outExtension: { '.js': '.js' },
    outdir: outDir,
  });
  writeFileSync(path.join(outDir, 'package.json'), '{ "type": "commonjs" }\n');
  const { bundleWorkflowCode } = await import('@temporalio/worker');
  const { code } = await bundleWorkflowCode({
    workflowsPath: path.join(root, 'workflows/index.ts'),
    failureConverterPath: path.join(root, 'common/codec/failure-converter.cjs'),
    logger: { log() {}, trace() {}, debug() {}, info() {}, warn: console.warn, error: console.error },
  });
  writeFileSync(path.join(outDir, 'workflow-bundle.js'), code);
  copyNativeBridge(outDir);
  copyZstdWasm(outDir);
  // The workflow sandbox maps stack traces with source-map, which reads its wasm beside itself (__dirname).
  const sourceMapLib = path.dirname(require.resolve('source-map/package.json', { paths: [workerLib] }));
  copyFileSync(path.join(sourceMapLib, 'lib', 'mappings.wasm'), path.join(outDir, 'mappings.wasm'));
  return outDir;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  for (const build of [buildComputeWorker, buildCli]) {
    const outDir = await build();
    console.log(`built ${path.relative(process.cwd(), outDir)}/`);
  }
}
