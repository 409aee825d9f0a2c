/**
 * Child processes get only what they need. Real children are started with a poisoned parent
 * environment (the payload key, cloud credentials, the Temporal API key and TLS key path, the
 * storage token), and each running child's /proc/<pid>/environ is read: none of the secrets.
 */
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dumpPaths, dumpSource } from '../drivers/importer/dump-restore';
import { runInitdb } from '../drivers/postgres/initdb';
import { startPostmaster } from '../drivers/postgres/process';
import { resolveServerUser } from '../drivers/postgres/server-user';
import { runSyncSafekeepers } from '../drivers/safekeepers/sync-safekeepers';
import { livePusherPid } from '../drivers/storage-backend/stock/pusher-files';
import { childEnv } from '../common/child-env';
import { findPostgres } from '../common/pg-binaries';
import { chownForPostgres, systemUser } from '../common/pg-identity';
import { tsNodeArgs } from '../common/paths';
import { cleanupComputes, createTestTimeline, exampleSpecFor, testComputeClient, testPgdata, TEST_WORKFLOW_OPTIONS } from './helpers/compute';
import { uniqueId } from './helpers/ids';
import { killAllProcesses, startProcess } from '../dev/child-processes';
import { testConfig, testEnv } from './helpers/stack';
import { waitFor } from './helpers/wait';

const install = findPostgres({ pgBinDir: process.env.PG_BIN_DIR });
const poison = (label: string) => `poison-${label}-${randomBytes(8).toString('hex')}`;
const POISONED: Record<string, string> = {
  DURABLE_COMPUTE_PAYLOAD_KEY: randomBytes(32).toString('base64'),
  DURABLE_COMPUTE_PAYLOAD_PREVIOUS_KEYS: randomBytes(32).toString('base64'),
  AWS_ACCESS_KEY_ID: poison('aws-id'),
  AWS_SECRET_ACCESS_KEY: poison('aws-secret'),
  AWS_SESSION_TOKEN: poison('aws-session'),
  TEMPORAL_API_KEY: poison('temporal-api-key'),
  TEMPORAL_TLS_CLIENT_KEY_PATH: `/nonexistent/${poison('tls-key')}.pem`,
  STORAGE_AUTH_TOKEN: poison('storage-token'),
};

function environOf(pid: number): Record<string, string> {
  const raw = readFileSync(`/proc/${pid}/environ`, 'utf8');
  return Object.fromEntries(
    raw
      .split('\0')
      .filter(Boolean)
      .map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]),
  );
}

/** No poisoned name and no poisoned value anywhere in the child's environment. */
function expectClean(pid: number, what: string, secrets: Record<string, string> = POISONED): Record<string, string> {
  const env = environOf(pid);
  const text = Object.entries(env)
    .map(([k, v]) => `${k}=${v}`)
    .join('\n');
  for (const [name, value] of Object.entries(secrets)) {
    expect(Object.keys(env), `${what} has ${name}`).not.toContain(name);
    expect(text.includes(value), `${what} holds the value of ${name}`).toBe(false);
  }
  expect(env.PATH, `${what} has PATH`).toBeTruthy();
  return env;
}

describe('childEnv', () => {
  it('keeps only the allow-list and what the call adds, and refuses a secret by name', () => {
    const parent = { ...POISONED, PATH: '/usr/bin', LANG: 'C.UTF-8', LC_ALL: 'C', TZ: 'UTC', HOME: '/root', USER: 'root', PGHOST: 'evil', PGPASSWORD: 'leak', NODE_OPTIONS: '--require x' };
    expect(childEnv({ extra: { PGDATA: '/d', NEON_AUTH_TOKEN: undefined } }, parent)).toEqual({
      PATH: '/usr/bin',
      LANG: 'C.UTF-8',
      LC_ALL: 'C',
      TZ: 'UTC',
      HOME: '/root',
      USER: 'root',
      PGDATA: '/d',
    });
    const postgres = systemUser('postgres');
    if (postgres) {
      const asPostgres = childEnv({ runAs: { user: 'postgres' } }, parent);
      expect(asPostgres.USER).toBe('postgres');
      expect(asPostgres.HOME).not.toBe('/root');
    }
    expect(() => childEnv({ extra: { AWS_SECRET_ACCESS_KEY: 'x' } }, parent)).toThrow(/refusing to hand AWS_SECRET_ACCESS_KEY/);
    expect(() => childEnv({ extra: { DURABLE_COMPUTE_PAYLOAD_KEY: 'x' } }, parent)).toThrow(/DURABLE_COMPUTE_PAYLOAD_KEY/);
  });
});

describe('children started by a worker with secrets in its environment see none of them', () => {
  const saved: Record<string, string | undefined> = {};
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'dc-child-env-'));
    chmodSync(dir, 0o755);
    for (const [k, v] of Object.entries(POISONED)) {
      saved[k] = process.env[k];
      process.env[k] = v;
    }
  });
  afterAll(async () => {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
    await killAllProcesses();
    await cleanupComputes();
    rmSync(dir, { recursive: true, force: true });
  });

  it('initdb and the postmaster', async () => {
    const pgdata = path.join(dir, 'pgdata');
    const owner = resolveServerUser();
    mkdirSync(pgdata, { mode: 0o700 });
    chownForPostgres(pgdata);
    await runInitdb({ pgBinDir: install.binDir, pgdata, superuser: 'cloud_admin', owner });
    writeFileSync(path.join(pgdata, 'postgresql.conf'), `listen_addresses = ''\nunix_socket_directories = '${pgdata}'\n`, { flag: 'a' });
    const started = await startPostmaster({ pgBinDir: install.binDir, pgdata, owner, env: { NEON_AUTH_TOKEN: 'spec-token' } });
    try {
      const env = expectClean(started.pid, 'the postmaster');
      // What it was given for this call, it has.
      expect(env.NEON_AUTH_TOKEN).toBe('spec-token');
    } finally {
      process.kill(started.pid, 'SIGQUIT');
    }
  });

  it('a running sync-safekeepers', async () => {
    const pgdata = path.join(dir, 'sync');
    mkdirSync(pgdata);
    writeFileSync(path.join(pgdata, 'postgresql.conf'), '');
    const abort = new AbortController();
    const standin = path.resolve('test/fixtures/sync-safekeepers-standin.ts');
    const running = runSyncSafekeepers({ command: [process.execPath, ...tsNodeArgs(), standin, 'hang'], pgdata, timeoutMs: 60_000, token: 'spec-token', signal: abort.signal }).catch(
      (err: unknown) => err,
    );
    try {
      const pids = await waitFor('the stand-in to record its pids', async () => {
        const file = path.join(pgdata, 'pids');
        return existsSync(file) && readFileSync(file, 'utf8').trim() ? readFileSync(file, 'utf8').trim().split(/\s+/).map(Number) : undefined;
      });
      const env = expectClean(pids[0]!, 'sync-safekeepers');
      expect(env.PGDATA).toBe(pgdata);
      expect(env.NEON_AUTH_TOKEN).toBe('spec-token');
      // And what it starts in turn.
      expectClean(pids[1]!, "sync-safekeepers' child");
    } finally {
      abort.abort();
      await running;
    }
  });

  it('a running pg_dump (against a source that never answers)', async () => {
    const stall = net.createServer(() => undefined);
    await new Promise<void>((resolve) => stall.listen(0, '127.0.0.1', resolve));
    const port = (stall.address() as net.AddressInfo).port;
    const workdir = path.join(dir, 'import');
    const abort = new AbortController();
    const running = dumpSource({
      install,
      workdir,
      sourceConnstring: `postgresql://reader:source-password@127.0.0.1:${port}/db`,
      jobs: 1,
      ctx: { heartbeat: () => undefined, signal: abort.signal, previousDetails: undefined, attempt: 1, warn: () => undefined },
    }).catch((err: unknown) => err);
    try {
      const pid = await waitFor('pg_dump to start', async () => {
        const file = dumpPaths(workdir).dumpPidFile;
        return existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as { pid: number }).pid : undefined;
      });
      const env = expectClean(pid, 'pg_dump');
      // Its own password, for this call only.
      expect(env.PGPASSWORD).toBe('source-password');
    } finally {
      abort.abort();
      await running;
      stall.close();
    }
  });

  it('the postmaster and the WAL pusher of a compute started by a compute worker process', async () => {
    const computeId = uniqueId('env');
    const pgdata = testPgdata();
    // The worker's environment: the stack's, with every secret given in the variable itself.
    const config = testConfig();
    const { DURABLE_COMPUTE_PAYLOAD_KEY_FILE: _keyFile, STORAGE_AUTH_TOKEN_FILE: _tokenFile, ...stack } = testEnv();
    const workerSecrets: Record<string, string> = {
      DURABLE_COMPUTE_PAYLOAD_KEY: config.payloadKeys!.current.toString('base64'),
      AWS_SECRET_ACCESS_KEY: config.s3.credentials!.secretAccessKey,
      AWS_SESSION_TOKEN: POISONED.AWS_SESSION_TOKEN!,
      STORAGE_AUTH_TOKEN: config.storage.authToken!,
    };
    // The worker cannot hold a Temporal API key here (it implies TLS, which the dev server lacks).
    const { TEMPORAL_API_KEY: _apiKey, TEMPORAL_TLS_CLIENT_KEY_PATH: _tlsKey, ...inherited } = POISONED;
    await startProcess('bin/durable-compute.mjs', ['worker', 'compute', '--compute-id', computeId, '--pgdata', pgdata, '--http-port', '0', '--http-host', '127.0.0.1'], {
      env: {
        ...inherited,
        ...stack,
        ...workerSecrets,
        // Set empty: this test process's own (poisoned) values would otherwise reach the worker.
        TEMPORAL_API_KEY: '',
        TEMPORAL_TLS_CLIENT_KEY_PATH: '',
        DURABLE_COMPUTE_PAYLOAD_PREVIOUS_KEYS: '',
        AWS_ACCESS_KEY_ID: config.s3.credentials!.accessKeyId,
      },
      readyLine: /compute worker ready/,
    });
    const { computes, close } = await testComputeClient();
    try {
      const { spec } = await exampleSpecFor(await createTestTimeline());
      await computes.start(computeId, spec, TEST_WORKFLOW_OPTIONS);
      expect((await computes.waitForRunning(computeId, 180_000)).status).toBe('running');
      const postmaster = Number(readFileSync(path.join(pgdata, 'postmaster.pid'), 'utf8').split('\n')[0]);
      // The stock backend's Postgres does not need the storage token at all.
      expectClean(postmaster, 'the compute postmaster', workerSecrets);
      const pusher = livePusherPid(pgdata)!;
      // The pusher does: under its own name (NEON_AUTH_TOKEN), the one secret it is given.
      const { STORAGE_AUTH_TOKEN: token, ...others } = workerSecrets;
      const env = expectClean(pusher, 'the WAL pusher', others);
      expect(Object.keys(env)).not.toContain('STORAGE_AUTH_TOKEN');
      expect(env.NEON_AUTH_TOKEN).toBe(token);
      await computes.terminate(computeId);
    } finally {
      await close();
    }
  });
});
