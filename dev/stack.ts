import { writeFileAtomicSync } from '../common/atomic-write';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { UserFacingError } from '../common/errors';
import { defaultStackDir } from '../common/paths';
import { assertPortFree, freePort, isTrackedAlive, stopTracked, waitUntilReady, type TrackedProcess } from './processes';
import { withDirLock } from './dir-lock';
import { ensureEndpointStorageKeys } from './endpoint-storage/keys';
import { codecEndpoint, safekeeperPorts, stackComponents } from './stack-components';
import { DEFAULT_PORTS, DEV_S3_CREDENTIALS, devPayloadKeyFile, devStorageTokenFile, PORT_VARIABLES, type StackSettings } from './stack-settings';
import { sqlTemporalServerStatus, startSqlTemporalServer, stopSqlTemporalServer } from './temporal-server/server';

/** What `dev up --json` and `dev status --json` print. Keys are only ever added, never renamed. */
export interface StackEndpoints {
  temporal: { address: string; namespace: string; ui: string };
  s3: { endpoint: string; bucket: string; region: string };
  pageserver: { pg: string; http: string };
  safekeepers: { pg: string; http: string }[];
  /** Fast import: where the pageserver reports finished imports (null on a stack started before it had one). */
  imports: { callbackUrl: string | null };
  /** The codec server the Web UI decodes payloads through (no bearer token: dev only, loopback). */
  codec: { endpoint: string };
  /** The endpoint storage stand-in: `addr` is what a spec's endpoint_storage_addr names. */
  endpointStorage: { url: string; addr: string };
  stackDir: string;
}

export interface StackStatus extends StackEndpoints {
  running: boolean;
  processes: Record<string, { pid: number; running: boolean; log: string }>;
}

interface StackState {
  version: 1;
  settings: StackSettings;
  processes: Record<string, TrackedProcess>;
}

const STATE_FILE = 'stack.json';

export { devPayloadKeyFile, devStorageTokenFile };

/** The payload encryption key and the storage token: random, made once, then kept. */
function ensureStackSecrets(dir: string): void {
  const secrets: [string, string][] = [
    [devPayloadKeyFile(dir), randomBytes(32).toString('base64')],
    // Hex: it also travels as a libpq password, where base64's + and / would need escaping.
    [devStorageTokenFile(dir), randomBytes(32).toString('hex')],
  ];
  for (const [file, value] of secrets) if (!existsSync(file)) writeFileSync(file, `${value}\n`, { mode: 0o600, flag: 'wx' });
}

/** Where the production Temporal server (DURABLE_COMPUTE_TEMPORAL_SERVER=sql) keeps its state, config, logs and PostgreSQL. */
export const sqlTemporalServerDir = (stackDir: string): string => path.join(stackDir, 'temporal-server');

export function endpointsOf(s: StackSettings): StackEndpoints {
  // The production server comes without the Web UI.
  const ui = s.temporalServer === 'sql' ? '' : `http://${s.host}:${s.ports.temporalUi}`;
  return {
    temporal: { address: `${s.host}:${s.ports.temporal}`, namespace: s.namespace, ui },
    s3: { endpoint: `http://${s.host}:${s.ports.s3}`, bucket: s.bucket, region: s.region },
    pageserver: { pg: `${s.host}:${s.ports.pageserverPg}`, http: `http://${s.host}:${s.ports.pageserverHttp}` },
    safekeepers: Array.from({ length: s.safekeepers }, (_, i) => {
      const p = safekeeperPorts(s, i + 1);
      return { pg: `${s.host}:${p.pg}`, http: `http://${s.host}:${p.http}` };
    }),
    imports: { callbackUrl: s.ports.importCallback ? `http://${s.host}:${s.ports.importCallback}/import_complete` : null },
    codec: { endpoint: codecEndpoint(s) },
    endpointStorage: { url: `http://${s.host}:${s.ports.endpointStorage}`, addr: `${s.host}:${s.ports.endpointStorage}` },
    stackDir: s.dir,
  };
}

/** Dev S3 credentials go with the endpoints for clients of the dev stack, never into printed output. */
export function devS3Credentials(): { accessKeyId: string; secretAccessKey: string } {
  return { ...DEV_S3_CREDENTIALS };
}

function readState(dir: string): StackState | undefined {
  const file = path.join(dir, STATE_FILE);
  if (!existsSync(file)) return undefined;
  try {
    const state = JSON.parse(readFileSync(file, 'utf8')) as StackState;
    if (state.version !== 1 || typeof state.settings !== 'object') throw new Error('unknown format');
    return state;
  } catch (err) {
    throw new UserFacingError(`The stack state file ${file} is unreadable (${(err as Error).message}); remove it after checking no stack process runs.`);
  }
}

function writeState(state: StackState): void {
  const file = path.join(state.settings.dir, STATE_FILE);
  writeFileAtomicSync(file, JSON.stringify(state, null, 2), { mode: 0o600 });
}

/** The settings a stack in `dir` last ran with, if it ever ran. */
export function previousStackSettings(dir: string): StackSettings | undefined {
  return readState(dir)?.settings;
}

/** The stack in `dir` if its state file says it was started and at least one process still runs. */
export function runningStack(dir: string): { settings: StackSettings; endpoints: StackEndpoints } | undefined {
  const state = readState(dir);
  if (!state) return undefined;
  if (!Object.values(state.processes).some(isTrackedAlive)) return undefined;
  return { settings: state.settings, endpoints: endpointsOf(state.settings) };
}

/**
 * Starts whatever part of the stack is not running and returns once every part accepts
 * connections. Idempotent: on a running stack it changes nothing and returns the same endpoints.
 */
export async function stackUp(
  requested: StackSettings,
  ctx: { resolveTemporalCli: () => Promise<string>; onProgress?: (line: string) => void },
): Promise<StackEndpoints> {
  return withDirLock(requested.dir, 'The stack', async () => {
    const previous = readState(requested.dir);
    const sqlServerAlive =
      previous?.settings.temporalServer === 'sql' &&
      Object.values(sqlTemporalServerStatus(sqlTemporalServerDir(requested.dir))?.processes ?? {}).some((p) => p.running);
    const anyAlive = previous ? Object.values(previous.processes).some(isTrackedAlive) || sqlServerAlive : false;
    // A running stack keeps the ports it was started with; a stopped one takes the requested settings.
    const settings: StackSettings = structuredClone(anyAlive && previous ? previous.settings : requested);
    // No fixed default for the import callback: a free port, kept in the state from then on.
    settings.ports.importCallback ??= await freePort(settings.host);
    // A stack started before the codec server existed gets it on the default port.
    settings.ports.codecServer ??= DEFAULT_PORTS.codecServer;
    settings.ports.endpointStorage ??= DEFAULT_PORTS.endpointStorage;
    const state: StackState = { version: 1, settings, processes: anyAlive && previous ? previous.processes : {} };
    mkdirSync(settings.dir, { recursive: true, mode: 0o755 });
    // PostgreSQL runs as an unprivileged user when we are root; the dev storage below must be reachable.
    chmodSync(settings.dir, 0o755);
    // So must the default directory's parent, the project's own .durable-compute (older versions
    // created it 0700 when an import key was made before the stack first started).
    if (path.resolve(settings.dir) === defaultStackDir) chmodSync(path.dirname(defaultStackDir), 0o755);
    ensureStackSecrets(settings.dir);
    ensureEndpointStorageKeys(settings.dir);

    if (settings.temporalServer === 'sql') {
      await startSqlTemporalServer({
        dir: sqlTemporalServerDir(settings.dir),
        host: settings.host,
        frontendPort: settings.ports.temporal,
        namespace: settings.namespace,
        onProgress: ctx.onProgress,
      });
    }
    for (const component of stackComponents(settings)) {
      const existing = state.processes[component.name];
      if (existing && isTrackedAlive(existing)) {
        await component.probe(settings);
        continue;
      }
      for (const { port, key } of component.ports(settings)) {
        const v = PORT_VARIABLES[key];
        await assertPortFree(settings.host, port, v.what, `choose another with ${[v.option, v.env].filter(Boolean).join(' or ')}`);
      }
      const temporalCli = component.name === 'temporal' ? await ctx.resolveTemporalCli() : '';
      ctx.onProgress?.(`starting ${component.name}...`);
      const proc = component.start(settings, { temporalCli });
      state.processes[component.name] = proc;
      writeState(state);
      try {
        await waitUntilReady(component.name, proc, () => component.probe(settings), component.readyTimeoutMs);
      } catch (err) {
        await stopTracked(proc);
        delete state.processes[component.name];
        writeState(state);
        throw new UserFacingError((err as Error).message);
      }
    }
    writeState(state);
    return endpointsOf(settings);
  });
}

export async function stackStatus(dir: string): Promise<StackStatus | undefined> {
  const state = readState(dir);
  if (!state) return undefined;
  const processes: StackStatus['processes'] = {};
  for (const [name, proc] of Object.entries(state.processes)) {
    processes[name] = { pid: proc.pid, running: isTrackedAlive(proc), log: proc.log };
  }
  const sqlServer = state.settings.temporalServer === 'sql' ? sqlTemporalServerStatus(sqlTemporalServerDir(dir)) : undefined;
  Object.assign(processes, sqlServer?.processes);
  const running =
    stackComponents(state.settings).every((c) => processes[c.name]?.running) &&
    (state.settings.temporalServer !== 'sql' || processes['temporal-server']?.running === true);
  return { ...endpointsOf(state.settings), running, processes };
}

/** Stops exactly the processes this stack started (pid and start time must match), in reverse start order. */
export async function stackDown(dir: string): Promise<string[]> {
  return withDirLock(dir, 'The stack', async () => {
    const state = readState(dir);
    if (!state) return [];
    const stopped: string[] = [];
    for (const name of Object.keys(state.processes).reverse()) {
      const proc = state.processes[name]!;
      if (isTrackedAlive(proc)) {
        await stopTracked(proc);
        stopped.push(name);
      }
    }
    state.processes = {};
    writeState(state);
    // After the workers: they drain against a live server.
    if (state.settings.temporalServer === 'sql') stopped.push(...(await stopSqlTemporalServer(sqlTemporalServerDir(dir))));
    return stopped;
  });
}
