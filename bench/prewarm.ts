/**
 * Prewarm benchmark: time to load a hot set into a cold shared_buffers with our stock backend
 * (state captured by pg_buffercache, loaded with batched pg_prewarm calls, never evicting)
 * versus contrib pg_prewarm loading exactly the same blocks: the whole hot relations in one call
 * each, and the same 64 MiB pieces our backend requests, one call each.
 *
 *   node --import tsx bench/prewarm.ts
 *
 * BENCH_PREWARM_MB       hot-set size in MiB (default 1024)
 * BENCH_PREWARM_ROUNDS   rounds per OS-cache mode; each runs both methods, order alternating (default 5)
 * BENCH_PREWARM_OS_CACHE warm | drop | both (default: both where /proc/sys/vm/drop_caches is
 *                        writable, else warm). "drop" empties the OS page cache before every run
 *                        (machine-wide, so it slows other work on the host for a moment).
 * BENCH_PREWARM_OUT      results file (default bench/results/prewarm.md)
 */
import { execFile } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import pg from 'pg';
import { findPostgres, pgBin } from '../common/pg-binaries';
import { pgSpawnIdentity } from '../common/pg-identity';
import { cacheStatePages, type CacheState } from '../model/cache-state';
import { decodeCacheState, encodeCacheState } from '../drivers/cache/state-codec';
import { createStockCacheBackend } from '../drivers/cache/stock-backend';
import type { ConnectFn } from '../drivers/cache/pg-session';
import { startThrowawayPostgres, type ThrowawayPostgres } from '../dev/throwaway-postgres';
import { canDropCaches, DROP_CACHES, dropOsCache } from './os-cache';

const run = promisify(execFile);
const TABLES = ['bench_hot_a', 'bench_hot_b'];

type OsCacheMode = 'warm' | 'drop';
const METHODS = ['stock backend', 'contrib pg_prewarm (whole tables)', 'contrib pg_prewarm (64 MiB calls)'] as const;
type Method = (typeof METHODS)[number];
const PIECE_BLOCKS = 8192; // the stock backend's default batch

interface RunResult {
  mode: OsCacheMode;
  round: number;
  method: Method;
  seconds: number;
  /** CPU seconds used by the server's processes and by this client during the run. */
  cpuSeconds: number;
  blocks: number;
  mbPerSecond: number;
}

// ------------------------------------------------------------------------------------------
// CPU accounting. On a shared host wall time mostly measures the neighbours; the CPU time the
// server spent (postmaster's children, live or already reaped into its cutime/cstime) plus this
// process's is what each method costs.

let clockTicks = 100;

function statTimes(pid: number): { own: number; children: number; ppid: number } | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
    // After "(comm)": state ppid ... utime(12th) stime cutime cstime.
    return { ppid: Number(fields[1]), own: Number(fields[11]) + Number(fields[12]), children: Number(fields[13]) + Number(fields[14]) };
  } catch {
    return undefined;
  }
}

function serverChildren(postmaster: number): number[] {
  return readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .map(Number)
    .filter((pid) => statTimes(pid)?.ppid === postmaster);
}

/** CPU seconds the server has used so far: postmaster, its live children, and reaped ones. */
function serverCpu(postmaster: number): number {
  const pm = statTimes(postmaster);
  if (!pm) throw new Error(`postmaster ${postmaster} is gone`);
  let ticks = pm.own + pm.children;
  for (const child of serverChildren(postmaster)) ticks += statTimes(child)?.own ?? 0;
  return ticks / clockTicks;
}

function clientCpu(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

/** Waits until the backends of the run have exited, so their CPU time is in the postmaster's. */
async function waitForBackendsToExit(postmaster: number, baseline: number): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (serverChildren(postmaster).length > baseline) {
    if (Date.now() > deadline) throw new Error('backends of the benchmark run did not exit within 10 s');
    await sleep(20);
  }
}

export interface PrewarmBenchOptions {
  hotMb: number;
  rounds: number;
  modes: OsCacheMode[];
  out: string;
  log?: (line: string) => void;
}

function intFromEnv(name: string, fallback: number, min: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min) throw new Error(`${name} must be an integer >= ${min}, got ${JSON.stringify(raw)}`);
  return n;
}

export function optionsFromEnv(): PrewarmBenchOptions {
  const hotMb = intFromEnv('BENCH_PREWARM_MB', 1024, 8);
  const rounds = intFromEnv('BENCH_PREWARM_ROUNDS', 5, 1);
  const modeEnv = process.env.BENCH_PREWARM_OS_CACHE ?? (canDropCaches() ? 'both' : 'warm');
  const modes: OsCacheMode[] = modeEnv === 'both' ? ['warm', 'drop'] : modeEnv === 'warm' || modeEnv === 'drop' ? [modeEnv] : [];
  if (modes.length === 0) throw new Error(`BENCH_PREWARM_OS_CACHE must be warm, drop or both, got ${JSON.stringify(modeEnv)}`);
  if (modes.includes('drop') && !canDropCaches()) throw new Error(`BENCH_PREWARM_OS_CACHE=${modeEnv} needs a writable ${DROP_CACHES} (root outside a read-only /proc)`);
  const here = path.dirname(fileURLToPath(import.meta.url));
  return { hotMb, rounds, modes, out: process.env.BENCH_PREWARM_OUT ?? path.join(here, 'results', 'prewarm.md') };
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
};

export async function runPrewarmBench(opts: PrewarmBenchOptions): Promise<{ results: RunResult[]; markdown: string }> {
  const log = opts.log ?? ((l: string) => console.log(l));
  const sharedBuffersMb = opts.hotMb + 128;
  const server: ThrowawayPostgres = await startThrowawayPostgres({
    shared_buffers: `'${sharedBuffersMb}MB'`,
    autovacuum: 'off',
    wal_level: 'minimal',
    max_wal_senders: '0',
    max_wal_size: "'4GB'",
  });
  const connect: ConnectFn = async (database) => {
    const c = new pg.Client({ host: '127.0.0.1', port: server.port, user: 'postgres', database });
    await c.connect();
    return c;
  };
  // Ctrl-C must not leave a server with a GiB of shared memory behind.
  const stopOnSignal = () => {
    void server.stop().finally(() => process.exit(130));
  };
  process.once('SIGINT', stopOnSignal);
  process.once('SIGTERM', stopOnSignal);
  const install = findPostgres({ pgBinDir: process.env.PG_BIN_DIR });
  const restart = () =>
    run(pgBin(install, 'pg_ctl'), ['-D', server.dataDir, '-l', path.join(path.dirname(server.dataDir), 'log'), '-w', '-t', '120', '-m', 'fast', 'restart'], pgSpawnIdentity());
  const sql = async <T extends pg.QueryResultRow>(text: string, values: unknown[] = []) => {
    const c = await connect('postgres');
    try {
      return (await c.query<T>(text, values)).rows;
    } finally {
      await c.end();
    }
  };

  try {
    const version = (await sql<{ v: string }>(`select current_setting('server_version') as v`))[0]!.v;
    // ~34 tuples of ~236 bytes per 8 KiB page; each table gets half the hot set.
    const rowsPerTable = Math.ceil(((opts.hotMb * 1024 * 1024) / 8192 / 2) * 34);
    log(`prewarm bench: PostgreSQL ${version}, hot set ${opts.hotMb} MiB in ${TABLES.length} tables, shared_buffers ${sharedBuffersMb} MB`);
    const loadStart = performance.now();
    await sql('create extension pg_buffercache; create extension pg_prewarm');
    for (const t of TABLES) {
      await sql(`create table ${pg.escapeIdentifier(t)} as select g as id, repeat('x', 200) as filler from generate_series(1, ${rowsPerTable}) g`);
    }
    await sql('vacuum analyze');
    await sql('checkpoint');
    log(`  loaded data in ${((performance.now() - loadStart) / 1000).toFixed(1)} s`);

    // Make the hot set hot, then capture it with our backend and keep only the bench tables'
    // blocks, so both methods load exactly the same set.
    await restart();
    await sql(TABLES.map((t) => `select pg_prewarm(${pg.escapeLiteral(t)});`).join(' '));
    const rel = await sql<{ rel: string }>(`select pg_relation_filenode(t)::int8 as rel from unnest($1::regclass[]) t`, [TABLES]);
    const hotFilenodes = new Set(rel.map((r) => Number(r.rel)));
    const backend = createStockCacheBackend({ connect });
    let t = performance.now();
    const captured = (await backend.capture({}))!;
    const captureMs = performance.now() - t;
    if (captured.kind !== 'block-ranges') throw new Error('expected block ranges');
    const hotState: CacheState = { ...captured, ranges: captured.ranges.filter((r) => hotFilenodes.has(r.relfilenode) && r.fork === 0) };
    t = performance.now();
    const blob = encodeCacheState(hotState);
    const encodeMs = performance.now() - t;
    const state = decodeCacheState(blob);
    const blocks = cacheStatePages(state);
    const relationBlocks = Number(
      (await sql<{ n: string }>(`select sum(pg_relation_size(t) / current_setting('block_size')::int8)::int8 as n from unnest($1::regclass[]) t`, [TABLES]))[0]!.n,
    );
    if (blocks !== relationBlocks) throw new Error(`captured ${blocks} blocks of the hot tables, they have ${relationBlocks}: shared_buffers too small?`);
    const mb = (blocks * 8192) / (1024 * 1024);
    const ranges = state.kind === 'block-ranges' ? state.ranges.length : 0;
    log(`  captured ${blocks} blocks (${mb.toFixed(0)} MiB) as ${ranges} ranges in ${captureMs.toFixed(0)} ms; state ${blob.length} bytes`);

    const cachedHotBlocks = async () =>
      Number(
        (
          await sql<{ n: string }>(
            `select count(*) as n from pg_buffercache where relforknumber = 0 and relfilenode = any($1::oid[]) and reldatabase = (select oid from pg_database where datname = current_database())`,
            [[...hotFilenodes]],
          )
        )[0]!.n,
      );

    const tableOf = new Map(rel.map((r, i) => [Number(r.rel), TABLES[i]!]));
    const pieces: [table: string, first: number, last: number][] = [];
    for (const r of state.kind === 'block-ranges' ? state.ranges : []) {
      for (let f = r.firstBlock; f < r.firstBlock + r.blockCount; f += PIECE_BLOCKS) pieces.push([tableOf.get(r.relfilenode)!, f, Math.min(f + PIECE_BLOCKS, r.firstBlock + r.blockCount) - 1]);
    }
    const methods: Record<Method, () => Promise<void>> = {
      'stock backend': async () => {
        const counts = await backend.prewarm(state, { onProgress: () => undefined, signal: new AbortController().signal });
        if (counts.prewarmed !== blocks) throw new Error(`stock backend prewarmed ${counts.prewarmed} of ${blocks} blocks (skipped ${counts.skipped})`);
      },
      'contrib pg_prewarm (whole tables)': async () => {
        await sql(TABLES.map((tb) => `select pg_prewarm(${pg.escapeLiteral(tb)}, 'buffer', 'main');`).join(' '));
      },
      'contrib pg_prewarm (64 MiB calls)': async () => {
        const c = await connect('postgres');
        try {
          for (const [table, first, last] of pieces) await c.query(`select pg_prewarm($1::regclass, 'buffer', 'main', $2, $3)`, [table, first, last]);
        } finally {
          await c.end();
        }
      },
    };

    clockTicks = Number((await run('getconf', ['CLK_TCK'])).stdout.trim()) || 100;
    const postmasterPid = () => Number(readFileSync(path.join(server.dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
    const results: RunResult[] = [];
    for (const mode of opts.modes) {
      for (let round = 1; round <= opts.rounds; round++) {
        // Rotate the order so no method always runs first after the previous round.
        const order = METHODS.map((_, i) => METHODS[(i + round - 1) % METHODS.length]!);
        for (const method of order) {
          await restart();
          if (mode === 'drop') await dropOsCache();
          const pm = postmasterPid();
          const baseline = serverChildren(pm).length;
          const cpuBefore = serverCpu(pm) + clientCpu();
          const start = performance.now();
          await methods[method]();
          const seconds = (performance.now() - start) / 1000;
          await waitForBackendsToExit(pm, baseline);
          const cpuSeconds = serverCpu(pm) + clientCpu() - cpuBefore;
          const loaded = await cachedHotBlocks();
          if (loaded !== blocks) throw new Error(`${method} left ${loaded} of ${blocks} hot blocks cached`);
          const r: RunResult = { mode, round, method, seconds, cpuSeconds, blocks, mbPerSecond: mb / seconds };
          results.push(r);
          log(`  [OS cache ${mode}] round ${round} ${method}: ${seconds.toFixed(3)} s, ${r.mbPerSecond.toFixed(0)} MB/s, CPU ${cpuSeconds.toFixed(2)} s`);
        }
      }
    }

    const lines: string[] = [
      '# Prewarm benchmark',
      '',
      `Generated by \`node --import tsx bench/prewarm.ts\` on ${new Date().toISOString()}.`,
      '',
      `- PostgreSQL ${version}, shared_buffers ${sharedBuffersMb} MB, ${os.cpus().length} CPUs, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB RAM (shared host)`,
      `- Hot set: ${blocks} blocks = ${mb.toFixed(0)} MiB in ${TABLES.length} tables, ${ranges} ranges; state ${blob.length} bytes compressed, captured in ${captureMs.toFixed(0)} ms, encoded in ${encodeMs.toFixed(0)} ms`,
      '- Every run starts from a restarted server (cold shared_buffers). "warm" OS cache: the data files are in the kernel page cache for both methods; "drop": the page cache is emptied (`echo 1 > /proc/sys/vm/drop_caches`) before each run.',
      '- stock backend: connects, lists shared_buffers through pg_buffercache, resolves relations, loads the state ranges with batched `pg_prewarm(rel, \'buffer\', fork, first, last)` calls, counting unused buffers so it never evicts.',
      '- contrib pg_prewarm (whole tables): `pg_prewarm(table, \'buffer\', \'main\')` on each hot table, i.e. exactly the same blocks.',
      `- contrib pg_prewarm (64 MiB calls): \`pg_prewarm(table, 'buffer', 'main', first, last)\` for the same ${PIECE_BLOCKS}-block pieces the stock backend requests, one statement each: the same work minus our bookkeeping.`,
      '- Every run is verified afterwards through pg_buffercache (all hot blocks cached). The order rotates between rounds.',
      '- CPU: seconds of CPU the server processes (live and exited backends) and the benchmark client used during the run. On a busy shared host this, not wall time, is the stable measure of what each method costs.',
      '',
      '| OS cache | round | method | wall s | MB/s | CPU s |',
      '|---|---|---|---|---|---|',
      ...results.map((r) => `| ${r.mode} | ${r.round} | ${r.method} | ${r.seconds.toFixed(3)} | ${r.mbPerSecond.toFixed(0)} | ${r.cpuSeconds.toFixed(2)} |`),
      '',
      '| OS cache | method | MB/s median | MB/s best | CPU s median | throughput ratio stock / this (median; target >= 0.9) | CPU efficiency ratio (this CPU / stock CPU) |',
      '|---|---|---|---|---|---|---|',
    ];
    for (const mode of opts.modes) {
      const stats = (method: Method) => {
        const rs = results.filter((r) => r.mode === mode && r.method === method);
        return { median: median(rs.map((r) => r.mbPerSecond)), best: Math.max(...rs.map((r) => r.mbPerSecond)), cpu: median(rs.map((r) => r.cpuSeconds)) };
      };
      const ours = stats('stock backend');
      for (const method of METHODS) {
        const m = stats(method);
        const vs = method === 'stock backend' ? ['', ''] : [(ours.median / m.median).toFixed(2), (m.cpu / ours.cpu).toFixed(2)];
        lines.push(`| ${mode} | ${method} | ${m.median.toFixed(0)} | ${m.best.toFixed(0)} | ${m.cpu.toFixed(2)} | ${vs[0]} | ${vs[1]} |`);
        log(`  [OS cache ${mode}] ${method}: median ${m.median.toFixed(0)} MB/s, best ${m.best.toFixed(0)} MB/s, CPU ${m.cpu.toFixed(2)} s${vs[0] ? `; stock/this ${vs[0]}, CPU efficiency ${vs[1]}` : ''}`);
      }
    }
    lines.push('', `Host load average when the runs ended: ${os.loadavg().map((l) => l.toFixed(1)).join(', ')} (1, 5, 15 min) on ${os.cpus().length} CPUs.`);
    const markdown = `${lines.join('\n')}\n`;
    mkdirSync(path.dirname(opts.out), { recursive: true });
    writeFileSync(opts.out, markdown);
    log(`  wrote ${opts.out}`);
    return { results, markdown };
  } finally {
    process.off('SIGINT', stopOnSignal);
    process.off('SIGTERM', stopOnSignal);
    await server.stop();
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  runPrewarmBench(optionsFromEnv()).catch((err: unknown) => {
    console.error(err instanceof Error ? err.message : err);
    process.exitCode = 1;
  });
}
