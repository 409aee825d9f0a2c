/** What every part of the fast-import benchmark shares: its settings, its context, timing and checking a copy. */
import { execFile } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { promisify } from 'node:util';
import type { S3Client } from '@aws-sdk/client-s3';
import pg from 'pg';
import { projectRoot } from '../common/paths';
import type { PgInstallation } from '../common/pg-binaries';
import type { HostResources } from '../drivers/importer/bulk-load-settings';
import { listObjects } from '../drivers/s3/objects';
import type { ComputeClient } from '../client/compute-client';
import type { ImportClient } from '../client/import-client';
import type { StackEndpoints } from '../dev/stack';
import type { ThrowawayPostgres } from '../dev/throwaway-postgres';

const run = promisify(execFile);
export const DATABASE = 'bench';
export const MiB = 1024 * 1024;

export const scale = Number(process.env.BENCH_IMPORT_SCALE ?? 100);
export const jobs = Number(process.env.BENCH_IMPORT_JOBS ?? 2);
export const outFile = process.env.BENCH_IMPORT_OUT ?? path.join(projectRoot, 'bench', 'results', 'import.md');
export const skip = new Set((process.env.BENCH_IMPORT_SKIP ?? '').split(',').filter(Boolean));

export interface Step {
  name: string;
  seconds: number;
}

export interface MethodResult {
  method: string;
  steps: Step[];
  totalSeconds: number;
  objects: number;
  bytes: number;
  note?: string;
  /** 1/5/15-minute load average when the method started and when it ended. */
  load?: string;
}

export interface Bench {
  root: string;
  install: PgInstallation;
  resources: HostResources;
  source: ThrowawayPostgres;
  sourceFingerprint: string;
  s3: S3Client;
  bucket: string;
  endpoints: StackEndpoints;
  stackDir: string;
  /** Environment of every child process (importer, compute worker): the private stack and the import key. */
  env: Record<string, string>;
  /** The private stack's storage token, for compute specs. */
  storageAuthToken?: string;
  imports: ImportClient;
  computes: ComputeClient;
}

export function log(line: string): void {
  console.log(`[bench ${new Date().toISOString().slice(11, 19)}] ${line}`);
}

export async function timed<T>(steps: Step[], name: string, fn: () => Promise<T>): Promise<T> {
  const start = performance.now();
  log(`${name}...`);
  const result = await fn();
  const seconds = (performance.now() - start) / 1000;
  steps.push({ name, seconds });
  log(`${name}: ${seconds.toFixed(1)} s`);
  return result;
}

/** Runs a command with an argument array; output is kept for the error message only. */
export async function exec(command: string, args: string[], env: Record<string, string> = {}): Promise<string> {
  try {
    const { stdout } = await run(command, args, { env: { ...process.env, ...env }, maxBuffer: 256 * MiB });
    return stdout;
  } catch (err) {
    const e = err as { stderr?: string; stdout?: string; message: string };
    throw new Error(`${command} ${args.join(' ')} failed: ${e.message}\n${(e.stderr ?? '').slice(-4000)}`);
  }
}

export async function prefixSize(ctx: Bench, prefix: string): Promise<{ objects: number; bytes: number }> {
  let objects = 0;
  let bytes = 0;
  for await (const o of listObjects(ctx.s3, ctx.bucket, `${prefix}/pgdata/`)) {
    objects++;
    bytes += o.size;
  }
  return { objects, bytes };
}

/** Rows and a cheap checksum of the pgbench tables, to check every copy is complete. */
export async function pgbenchFingerprint(client: pg.Client): Promise<string> {
  const { rows } = await client.query<{ f: string }>(`
    SELECT (SELECT count(*) FROM pgbench_accounts) || '/' || (SELECT sum(abalance) + sum(aid) FROM pgbench_accounts)
      || '/' || (SELECT count(*) FROM pgbench_branches) || '/' || (SELECT count(*) FROM pgbench_tellers)
      || '/' || (SELECT count(*) FROM pg_indexes WHERE tablename LIKE 'pgbench_%') AS f`);
  return rows[0]!.f;
}

export function finish(method: string, steps: Step[], size: { objects: number; bytes: number }, fingerprint: string | undefined, ctx: Bench, totalSeconds?: number): MethodResult {
  const note = fingerprint === undefined ? 'not checked' : fingerprint === ctx.sourceFingerprint ? 'rows and checksum match' : `MISMATCH: ${fingerprint}`;
  if (fingerprint !== undefined && fingerprint !== ctx.sourceFingerprint) log(`WARNING: ${method} copied ${fingerprint}, source has ${ctx.sourceFingerprint}`);
  return { method, steps, totalSeconds: totalSeconds ?? steps.reduce((n, s) => n + s.seconds, 0), ...size, note };
}

export function loadAverage(): string {
  return os.loadavg().map((l) => l.toFixed(2)).join(' ');
}
