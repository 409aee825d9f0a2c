import { randomBytes } from 'node:crypto';
import { chmodSync, closeSync, existsSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { UserFacingError } from '../common/errors';
import { assertPortFree, freePort, isTrackedAlive, stopTracked, waitUntilReady, type TrackedProcess } from './processes';
import { codecEndpoint, safekeeperPorts, stackComponents } from './stack-components';
import { DEFAULT_PORTS, DEV_S3_CREDENTIALS, devPayloadKeyFile, devStorageTokenFile, PORT_VARIABLES, type StackSettings } from './stack-settings';

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

export function endpointsOf(s: StackSettings): StackEndpoints {
  return {
    temporal: { address: `${s.host}:${s.ports.temporal}`, namespace: s.namespace, ui: `http://${s.host}:${s.ports.temporalUi}` },
    s3: { endpoint: `http://${s.host}:${s.ports.s3}`, bucket: s.bucket, region: s.region },
    pageserver: { pg: `${s.host}:${s.ports.pageserverPg}`, http: `http://${s.host}:${s.ports.pageserverHttp}` },
    safekeepers: Array.from({ length: s.safekeepers }, (_, i) => {
      const p = safekeeperPorts(s, i + 1);
      return { pg: `${s.host}:${p.pg}`, http: `http://${s.host}:${p.http}` };
    }),
    imports: { callbackUrl: s.ports.importCallback ? `http://${s.host}:${s.ports.importCallback}/import_complete` : null },
    codec: { endpoint: codecEndpoint(s) },
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
  const tmp = `${file}.tmp`;
  writeFileSync(tmp, JSON.stringify(state, null, 2), { mode: 0o600 });
  renameSync(tmp, file);
}

/** Serializes concurrent `dev up`/`dev down` on one stack directory. */
async function withStackLock<T>(dir: string, fn: () => Promise<T>): Promise<T> {
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  const lock = path.join(dir, 'stack.lock');
  const deadline = Date.now() + 120_000;
  for (;;) {
    try {
      closeSync(openSync(lock, 'wx'));
      writeFileSync(lock, String(process.pid));
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const holder = Number(readFileSync(lock, 'utf8') || '0');
      let holderAlive = false;
      try {
        if (holder > 0) process.kill(holder, 0);
        holderAlive = holder > 0;
      } catch {
        holderAlive = false;
      }
      if (!holderAlive) {
        rmSync(lock, { force: true });
        continue;
      }
      if (Date.now() > deadline) throw new UserFacingError(`The stack in ${dir} is locked by process ${holder}`);
      await sleep(200);
    }
  }
  try {
    return await fn();
  } finally {
    rmSync(lock, { force: true });
  }
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
  return withStackLock(requested.dir, async () => {
    const previous = readState(requested.dir);
    const anyAlive = previous ? Object.values(previous.processes).some(isTrackedAlive) : false;
    // A running stack keeps the ports it was started with; a stopped one takes the requested settings.
    const settings: StackSettings = structuredClone(anyAlive && previous ? previous.settings : requested);
    // No fixed default for the import callback: a free port, kept in the state from then on.
    settings.ports.importCallback ??= await freePort(settings.host);
    // A stack started before the codec server existed gets it on the default port.
    settings.ports.codecServer ??= DEFAULT_PORTS.codecServer;
    const state: StackState = { version: 1, settings, processes: anyAlive && previous ? previous.processes : {} };
    mkdirSync(settings.dir, { recursive: true, mode: 0o755 });
    // PostgreSQL runs as an unprivileged user when we are root; the dev storage below must be reachable.
    chmodSync(settings.dir, 0o755);
    ensureStackSecrets(settings.dir);

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
  const running = stackComponents(state.settings).every((c) => processes[c.name]?.running);
  return { ...endpointsOf(state.settings), running, processes };
}

/** Stops exactly the processes this stack started (pid and start time must match), in reverse start order. */
export async function stackDown(dir: string): Promise<string[]> {
  return withStackLock(dir, async () => {
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
    return stopped;
  });
}
