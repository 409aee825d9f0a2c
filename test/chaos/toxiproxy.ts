/**
 * Shopify's toxiproxy (a maintained TCP fault-injection proxy), built from source with `go install`
 * into the git-ignored project cache like the Temporal CLI, and driven over its HTTP API. The chaos
 * table puts it in front of S3 for the faults it has a toxic for: a stall (`timeout` with 0: data
 * is held until the toxic goes) and a connection reset (`reset_peer`).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { projectCacheDir } from '../../common/paths';
import { findOnPath, goInstall, isExecutableFile } from '../../dev/go-install';
import { canConnect, freePort } from '../../dev/processes';

export const TOXIPROXY_VERSION = '2.12.0';
const TOXIPROXY_PACKAGE = `github.com/Shopify/toxiproxy/v2/cmd/server@v${TOXIPROXY_VERSION}`;

/** The toxiproxy server binary: TOXIPROXY_SERVER_PATH, else the project cache, else built there now. */
export async function provisionToxiproxy(onProgress: (line: string) => void = console.log): Promise<string> {
  const explicit = process.env.TOXIPROXY_SERVER_PATH;
  if (explicit) {
    if (!isExecutableFile(explicit)) throw new Error(`TOXIPROXY_SERVER_PATH=${explicit} is not an executable file`);
    return explicit;
  }
  const binDir = path.join(projectCacheDir, 'toxiproxy', `v${TOXIPROXY_VERSION}`);
  const binary = path.join(binDir, 'server');
  if (isExecutableFile(binary)) return binary;
  const go = findOnPath('go', process.env.PATH) ?? (isExecutableFile('/usr/local/go/bin/go') ? '/usr/local/go/bin/go' : undefined);
  if (!go) throw new Error(`toxiproxy v${TOXIPROXY_VERSION} is not built and no \`go\` is on PATH to build it (or set TOXIPROXY_SERVER_PATH)`);
  await goInstall({ goBinary: go, binDir, packages: [TOXIPROXY_PACKAGE], what: `toxiproxy v${TOXIPROXY_VERSION}`, env: process.env, onProgress });
  if (!isExecutableFile(binary)) throw new Error(`go install left no toxiproxy server at ${binary}`);
  return binary;
}

export type ToxicType = 'timeout' | 'reset_peer';

export interface Toxiproxy {
  /** Where clients connect: the proxy in front of `upstream`. */
  listen: string;
  addToxic(name: string, type: ToxicType, attributes: Record<string, number>): Promise<void>;
  removeToxic(name: string): Promise<void>;
  stop(): Promise<void>;
}

/** Starts a toxiproxy server on a free loopback port with one proxy `name` in front of `upstream` (host:port). */
export async function startToxiproxy(binary: string, name: string, upstream: string): Promise<Toxiproxy> {
  const apiPort = await freePort();
  const listenPort = await freePort();
  const child: ChildProcess = spawn(binary, ['-host', '127.0.0.1', '-port', String(apiPort)], { stdio: ['ignore', 'ignore', 'pipe'] });
  // Never outlives the suite, even one that dies.
  process.once('exit', () => child.kill('SIGKILL'));
  let log = '';
  child.stderr!.on('data', (d: Buffer) => (log = (log + d.toString()).slice(-4000)));
  const api = `http://127.0.0.1:${apiPort}`;
  const deadline = Date.now() + 15_000;
  while (!(await canConnect('127.0.0.1', apiPort))) {
    if (Date.now() > deadline || child.exitCode !== null) throw new Error(`toxiproxy did not start:\n${log}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  const call = async (method: string, urlPath: string, body?: unknown): Promise<void> => {
    const res = await fetch(`${api}${urlPath}`, { method, body: body === undefined ? undefined : JSON.stringify(body), headers: { 'content-type': 'application/json' } });
    const text = await res.text();
    if (!res.ok) throw new Error(`toxiproxy ${method} ${urlPath}: ${res.status} ${text}`);
  };
  const listen = `127.0.0.1:${listenPort}`;
  await call('POST', '/proxies', { name, listen, upstream, enabled: true });
  return {
    listen,
    addToxic: (toxic, type, attributes) => call('POST', `/proxies/${name}/toxics`, { name: toxic, type, stream: 'downstream', toxicity: 1, attributes }),
    removeToxic: (toxic) => call('DELETE', `/proxies/${name}/toxics/${toxic}`),
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGKILL');
        await new Promise((r) => child.once('exit', r));
      }
    },
  };
}
