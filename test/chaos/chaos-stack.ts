/**
 * The chaos table's private stack: the benchmarks' embedded stack on free ports (dev/private-stack.ts),
 * with S3 reached through toxiproxy and the HTTP fault layer, and with its own control-plane
 * worker (so its S3 traffic goes through the proxy too, and it can be killed). Components can be
 * SIGKILLed and started again on their data (Temporal on its database file).
 */
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Client } from '@temporalio/client';
import { ComputeClient } from '../../client/compute-client';
import { openClient } from '../../client/context';
import { ImportClient } from '../../client/import-client';
import { generateLocalKey } from '../../drivers/secrets/local-aes';
import type { AppConfig } from '../../common/config';
import { stackDown, type StackEndpoints } from '../../dev/stack';
import { stackComponents } from '../../dev/stack-components';
import type { StackSettings } from '../../dev/stack-settings';
import { isTrackedAlive, stopTracked, waitUntilReady, type TrackedProcess } from '../../dev/processes';
import { provisionTemporalCli } from '../../dev/temporal-cli';
import { startProcess, type WorkerProcess } from '../../dev/child-processes';
import { startPrivateStack, stackConfig, stackEnv } from '../../dev/private-stack';
import { startHttpFaultLayer, type HttpFaultLayer } from './http-faults';
import { provisionToxiproxy, startToxiproxy, type Toxiproxy } from './toxiproxy';

interface StackState {
  version: 1;
  settings: StackSettings;
  processes: Record<string, TrackedProcess>;
}

export interface ChaosStack {
  dir: string;
  endpoints: StackEndpoints;
  /** Configuration with S3 through the fault proxy. */
  config: AppConfig;
  /** Environment for the workers the suite starts: the stack, S3 through the fault proxy. */
  env: Record<string, string>;
  toxiproxy: Toxiproxy;
  http: HttpFaultLayer;
  temporal: Client;
  computes: ComputeClient;
  imports: ImportClient;
  /** Our control-plane worker (S3 through the proxy); none on a shared stack. */
  controlPlane(): WorkerProcess;
  restartControlPlane(): Promise<void>;
  /** SIGKILLs a stack component's process group (temporal, pageserver, safekeeper-1, ...). */
  killComponent(name: string): Promise<void>;
  /** Starts a killed component again on its data and waits until it answers. */
  startComponent(name: string): Promise<void>;
  stop(): Promise<void>;
}

function readState(dir: string): StackState {
  return JSON.parse(readFileSync(path.join(dir, 'stack.json'), 'utf8')) as StackState;
}

export interface ChaosStackOptions {
  log?: (line: string) => void;
  /**
   * A running stack to use instead of a private one, left running afterwards. `shared`: other
   * suites use it too (the vitest stack), so its components are never killed and its control-plane
   * worker stays (ours would take only some of the workflow tasks).
   */
  existing?: { endpoints: StackEndpoints; shared: boolean };
}

export async function startChaosStack(opts: ChaosStackOptions = {}): Promise<ChaosStack> {
  const log = opts.log ?? console.log;
  const toxiproxyBinary = await provisionToxiproxy(log);
  const endpoints = opts.existing?.endpoints ?? (await startStackOnFreePorts());
  try {
    return await attach(endpoints, toxiproxyBinary, opts);
  } catch (err) {
    if (!opts.existing) await stackDown(endpoints.stackDir).catch(() => undefined);
    throw err;
  }
}

async function attach(endpoints: StackEndpoints, toxiproxyBinary: string, opts: ChaosStackOptions): Promise<ChaosStack> {
  const dir = endpoints.stackDir;
  const shared = opts.existing?.shared ?? false;
  const s3Url = new URL(endpoints.s3.endpoint);
  const http = await startHttpFaultLayer(s3Url);
  const toxiproxy = await startToxiproxy(toxiproxyBinary, 's3', http.address);
  const proxied = `http://${toxiproxy.listen}`;

  const env: Record<string, string> = {
    ...stackEnv(endpoints),
    S3_ENDPOINT: proxied,
    // Under the 15 s stall (faults.ts), so a stalled S3 request fails and is retried in the step.
    S3_REQUEST_TIMEOUT_MS: '5000',
    DURABLE_COMPUTE_STACK_DIR: dir,
    PAGESERVER_HTTP_URL: endpoints.pageserver.http,
    PAGESERVER_PG: endpoints.pageserver.pg,
    SAFEKEEPERS: endpoints.safekeepers.map((sk) => sk.pg).join(','),
    SAFEKEEPERS_HTTP_URLS: endpoints.safekeepers.map((sk) => sk.http).join(','),
    ...(process.env.PG_BIN_DIR ? { PG_BIN_DIR: process.env.PG_BIN_DIR } : {}),
  };
  // The import spec's key (a local AES key, as the import tests use), made once per stack.
  const importKeyFile = path.join(dir, 'chaos-import.key');
  if (!existsSync(importKeyFile)) writeFileSync(importKeyFile, `${generateLocalKey()}\n`, { mode: 0o600 });
  env.DURABLE_COMPUTE_IMPORT_KEY_FILE = importKeyFile;
  const base = stackConfig(endpoints, { DURABLE_COMPUTE_IMPORT_KEY_FILE: importKeyFile });
  const config: AppConfig = { ...base, s3: { ...base.s3, endpoint: proxied, requestTimeoutMs: 5000 } };

  // The stack's own control-plane worker reaches S3 directly: ours goes through the proxy.
  const state = readState(dir);
  // Its workflow bundle takes minutes to build on a loaded 2-core machine.
  const startControlPlane = () => startProcess('bin/durable-compute.mjs', ['worker', 'control-plane'], { env, readyLine: /control-plane worker ready/, timeoutMs: 600_000 });
  let controlPlane: WorkerProcess | undefined;
  if (!shared) {
    for (const name of ['control-plane-worker', 'importer-worker']) {
      const proc = state.processes[name];
      if (proc) await stopTracked(proc);
    }
    controlPlane = await startControlPlane();
  }
  const refuseShared = (what: string) => {
    if (shared) throw new Error(`${what} would disturb the other suites on this shared stack`);
  };

  const { client: temporal, close: closeClient } = await openClient(config);
  const computes = new ComputeClient(temporal, config.temporal.controlPlaneTaskQueue);
  const imports = new ImportClient(temporal, config.temporal.controlPlaneTaskQueue, config.imports);

  const settings = state.settings;
  const components = new Map(stackComponents(settings).map((c) => [c.name, c]));
  const component = (name: string) => {
    const c = components.get(name);
    if (!c) throw new Error(`no stack component ${name}; there are ${[...components.keys()].join(', ')}`);
    return c;
  };

  return {
    dir,
    endpoints,
    config,
    env,
    toxiproxy,
    http,
    temporal,
    computes,
    imports,
    controlPlane: () => {
      if (!controlPlane) throw new Error('a shared stack runs its own control-plane worker');
      return controlPlane;
    },
    async restartControlPlane() {
      refuseShared('restarting the control-plane worker');
      await controlPlane?.kill('SIGKILL');
      controlPlane = await startControlPlane();
    },
    async killComponent(name) {
      refuseShared(`killing ${name}`);
      const proc = readState(dir).processes[name];
      if (!proc || !isTrackedAlive(proc)) throw new Error(`stack component ${name} is not running`);
      process.kill(-proc.pid, 'SIGKILL');
      const deadline = Date.now() + 10_000;
      while (isTrackedAlive(proc) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    },
    async startComponent(name) {
      refuseShared(`starting ${name}`);
      const c = component(name);
      const temporalCli = name === 'temporal' ? (await provisionTemporalCli()).path : '';
      const proc = c.start(settings, { temporalCli });
      // Recorded, so stackDown stops the new process too.
      const current = readState(dir);
      current.processes[name] = proc;
      writeFileSync(path.join(dir, 'stack.json'), JSON.stringify(current, null, 2), { mode: 0o600 });
      await waitUntilReady(name, proc, () => c.probe(settings), c.readyTimeoutMs);
    },
    async stop() {
      await controlPlane?.kill('SIGKILL');
      await closeClient().catch(() => undefined);
      await toxiproxy.stop();
      await http.close();
      if (opts.existing) return;
      await stackDown(dir);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

async function startStackOnFreePorts(): Promise<StackEndpoints> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'dc-chaos-stack-'));
  chmodSync(dir, 0o755);
  return startPrivateStack(dir);
}
