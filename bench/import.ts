/**
 * Fast-import benchmark: a pgbench database imported end to end by the durable workflow on the
 * embedded stack, against two hand-run pipelines that stop once the data directory is in S3,
 * and the same workflow with its importer SIGKILLed half way through the upload.
 *
 *   node --import tsx bench/import.ts
 *
 *   (a) pg_dump -Fd -jN + pg_restore -jN + `aws s3 sync`, by hand
 *   (b) pgcopydb clone (N table jobs, N index jobs) + `aws s3 sync`
 *   (c) `import start`: the import workflow (Temporal, control-plane worker, one importer worker
 *       process) up to the commit marker, then the dev pageserver's import until the timeline is
 *       active; checked by starting a compute on the new timeline
 *   (d) (c) again with the importer worker SIGKILLed once half the bytes are uploaded (by its
 *       heartbeats) and restarted at once: the resumed upload sends only what was missing
 *
 * (a) and (b) restore into the same kind of target as the importer: a fresh initdb started with
 * the importer's bulk-load settings, so the comparison is of the pipelines, not of the tuning.
 * Everything runs on this machine: a private dev stack on free ports (s3rver with
 * --openssl-legacy-provider, which `aws s3 sync`'s ListObjectsV2 paging needs).
 *
 * BENCH_IMPORT_SCALE  pgbench scale factor (default 100, about 1.5 GB)
 * BENCH_IMPORT_JOBS   parallel jobs for every tool (default 2)
 * BENCH_IMPORT_OUT    results file (default bench/results/import.md)
 * BENCH_IMPORT_SKIP   comma-separated parts to leave out: pgdump,pgcopydb,kill,verify
 */
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import pg from 'pg';
import { findPostgres, pgBin } from '../common/pg-binaries';
import { chownForPostgres } from '../common/pg-identity';
import { loadConfig, type AppConfig } from '../common/config';
import { detectHostResources, type HostResources } from '../drivers/importer/bulk-load-settings';
import { destroyScratch } from '../drivers/importer/scratch-postgres';
import { createS3Client } from '../drivers/s3/client';
import { generateLocalKey } from '../drivers/secrets/local-aes';
import { ComputeClient } from '../client/compute-client';
import { openClient } from '../client/context';
import { ImportClient } from '../client/import-client';
import { freePort, freePortRange } from '../dev/processes';
import { devPayloadKeyFile, devS3Credentials, devStorageTokenFile, stackDown, stackUp, type StackEndpoints } from '../dev/stack';
import { resolveStackSettings } from '../dev/stack-settings';
import { provisionTemporalCli } from '../dev/temporal-cli';
import { startThrowawayPostgres, type ThrowawayPostgres } from '../dev/throwaway-postgres';
import { canDropCaches, dropOsCache } from './os-cache';
import { type Bench, DATABASE, exec, loadAverage, log, type MethodResult, MiB, outFile, pgbenchFingerprint, scale, skip } from './import-common';
import { methodPgcopydb, methodPgDump } from './import-by-hand';
import { methodWorkflow, pageserverImportOf, type PageserverPhases, type WorkflowRun } from './import-workflow-run';
import { report, stepSeconds } from './import-report';

async function startStack(root: string): Promise<{ endpoints: StackEndpoints; dir: string }> {
  const dir = path.join(root, 'stack');
  mkdirSync(dir, { recursive: true, mode: 0o755 });
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
    },
    {},
  );
  log('starting a private dev stack...');
  const endpoints = await stackUp(settings, { resolveTemporalCli: async () => (await provisionTemporalCli({ onProgress: log })).path, onProgress: log });
  return { endpoints, dir };
}

async function main(): Promise<void> {
  const install = findPostgres({ pgBinDir: process.env.PG_BIN_DIR });
  const detected = detectHostResources();
  // A shared machine: size the targets for at most 8 GiB whatever the host has.
  const resources: HostResources = { cpus: detected.cpus, totalMemoryBytes: Math.min(detected.totalMemoryBytes, 8 * 1024 ** 3) };
  const root = mkdtempSync(path.join(os.tmpdir(), 'dc-bench-import-'));
  chownForPostgres(root, false);
  let stackDir: string | undefined;
  let source: ThrowawayPostgres | undefined;
  const closers: (() => Promise<void>)[] = [];
  try {
    const stack = await startStack(root);
    stackDir = stack.dir;
    const keyFile = path.join(root, 'import.key');
    writeFileSync(keyFile, `${generateLocalKey()}\n`, { mode: 0o600 });
    const env: Record<string, string> = {
      DURABLE_COMPUTE_STACK_DIR: stack.dir,
      // The stack runs an importer of its own on the default queue; the bench's importers (sized,
      // killed and restarted by it) take the imports on a queue of their own.
      DURABLE_COMPUTE_IMPORTER_TASK_QUEUE: 'bench-importers',
      DURABLE_COMPUTE_PAYLOAD_KEY_FILE: devPayloadKeyFile(stack.dir),
      STORAGE_AUTH_TOKEN_FILE: devStorageTokenFile(stack.dir),
      DURABLE_COMPUTE_IMPORT_KEY_FILE: keyFile,
      ...(process.env.PG_BIN_DIR ? { PG_BIN_DIR: process.env.PG_BIN_DIR } : {}),
    };
    const config: AppConfig = loadConfig(env, {
      temporal: stack.endpoints.temporal,
      s3: { ...stack.endpoints.s3, ...devS3Credentials() },
      pageserver: stack.endpoints.pageserver,
      safekeepers: stack.endpoints.safekeepers,
      payloadKeyFile: devPayloadKeyFile(stack.dir),
      storageAuthTokenFile: devStorageTokenFile(stack.dir),
    });
    const opened = await openClient(config);
    closers.push(opened.close);
    const s3 = createS3Client(config.s3);
    closers.push(async () => s3.destroy());

    source = await startThrowawayPostgres({ shared_buffers: "'512MB'", max_wal_size: "'4GB'", checkpoint_timeout: "'30min'" });
    await source.query(`CREATE DATABASE ${DATABASE}`);
    const setupStart = performance.now();
    log(`pgbench -i -s ${scale}...`);
    await exec(pgBin(install, 'pgbench'), ['-i', '-q', '-s', String(scale), '-h', '127.0.0.1', '-p', String(source.port), '-U', 'postgres', DATABASE]);
    const setupSeconds = (performance.now() - setupStart) / 1000;
    const client = new pg.Client({ connectionString: source.url(DATABASE) });
    await client.connect();
    const sourceFingerprint = await pgbenchFingerprint(client);
    const sourceBytes = Number((await client.query<{ n: string }>('SELECT pg_database_size(current_database()) AS n')).rows[0]!.n);
    await client.end();
    log(`source ready: ${(sourceBytes / MiB).toFixed(0)} MiB, fingerprint ${sourceFingerprint}`);
    const ctx: Bench = {
      root,
      install,
      resources,
      source,
      sourceFingerprint,
      s3,
      bucket: config.s3.bucket,
      endpoints: stack.endpoints,
      stackDir: stack.dir,
      env,
      storageAuthToken: config.storage.authToken,
      imports: new ImportClient(opened.client, config.temporal.controlPlaneTaskQueue, config.imports),
      computes: new ComputeClient(opened.client, config.temporal.controlPlaneTaskQueue),
    };

    const methods: MethodResult[] = [];
    const runs: WorkflowRun[] = [];
    const cleanup = async (dir: string) => {
      await destroyScratch(install, path.join(root, dir)).catch(() => undefined);
    };
    // Every method starts with the previous one's dirty pages written back and the page cache
    // empty (where root may), so none pays for another's writeback or reads what another cached.
    const settled = canDropCaches();
    const withLoad = async <T extends { load?: string }>(fn: () => Promise<T>): Promise<T> => {
      if (settled) await dropOsCache();
      const before = loadAverage();
      const r = await fn();
      r.load = `${before} → ${loadAverage()}`;
      return r;
    };
    let reference: { seconds: number; phases?: PageserverPhases } | undefined;
    if (!skip.has('pgdump')) {
      methods.push(await withLoad(() => methodPgDump(ctx)));
      reference = await pageserverImportOf(ctx, 'bench/a');
      await cleanup('a');
    }
    if (!skip.has('pgcopydb')) {
      methods.push(await withLoad(() => methodPgcopydb(ctx)));
      await cleanup('b');
    }
    if (settled) await dropOsCache();
    const plain = await methodWorkflow(ctx);
    methods.push(plain.result);
    runs.push(plain);
    if (!skip.has('kill')) {
      if (settled) await dropOsCache();
      const killed = await methodWorkflow(ctx, stepSeconds(plain, 'uploadPgdata') / 2);
      methods.push(killed.result);
      runs.push(killed);
    }
    mkdirSync(path.dirname(outFile), { recursive: true });
    writeFileSync(outFile, report(ctx, setupSeconds, sourceBytes, methods, runs, reference));
    log(`results written to ${outFile}`);
  } finally {
    for (const close of closers.reverse()) await close().catch(() => undefined);
    // Scratch servers a failed run may have left (the workflow removes its own on success).
    for (const dir of readdirSync(root)) {
      if (dir === 'a' || dir === 'b') await destroyScratch(install, path.join(root, dir)).catch(() => undefined);
      if (dir.startsWith('importer-')) {
        for (const work of readdirSync(path.join(root, dir), { withFileTypes: true }).filter((d) => d.isDirectory())) {
          await destroyScratch(install, path.join(root, dir, work.name)).catch(() => undefined);
        }
      }
    }
    await source?.stop();
    if (stackDir) await stackDown(stackDir);
    rmSync(root, { recursive: true, force: true });
  }
}

await main();
