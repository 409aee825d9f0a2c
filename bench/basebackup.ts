/**
 * Base backup of a fresh timeline: the dev pageserver runs in its own process, as under `dev up`,
 * and the compute's client fetches (libpq COPY OUT, gzip'd tar) and unpacks it into an empty
 * PGDATA, N times. Beside it, in the same rounds, the stock tools do the same job:
 * `psql -c "basebackup ..." | tar -xz`. Writes bench/results/basebackup.md.
 *   node --import tsx bench/basebackup.ts   (BENCH_BASEBACKUP_RUNS=20)
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { createPageserverClient, fetchBasebackup } from '../drivers/pageserver';
import { postgresIdentity } from '../common/pg-identity';
import { percentile } from './stats';
import { canConnect, freePort, spawnDetached, stopTracked, waitUntilReady } from '../dev/processes';

const repoRoot = path.dirname(path.dirname(fileURLToPath(import.meta.url)));


/** `psql -XAtq -c "basebackup ..." | tar -xz -C target`, with argument arrays and no shell. */
function stockFetch(pgPort: number, command: string, target: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const psql = spawn('psql', ['-h', '127.0.0.1', '-p', String(pgPort), '-U', 'cloud_admin', '-XAtq', '-c', command], { stdio: ['ignore', 'pipe', 'inherit'] });
    const tar = spawn('tar', ['-xz', '-C', target], { stdio: ['pipe', 'ignore', 'inherit'] });
    psql.stdout.pipe(tar.stdin);
    let pending = 2;
    const exited = (what: string) => (code: number | null) => {
      if (code !== 0) reject(new Error(`${what} exited with ${code}`));
      else if (--pending === 0) resolve();
    };
    psql.on('exit', exited('psql'));
    tar.on('exit', exited('tar'));
  });
}

export async function runBasebackupBench(runs = Number(process.env.BENCH_BASEBACKUP_RUNS ?? 20)): Promise<string> {
  const root = mkdtempSync(path.join(os.tmpdir(), 'dc-bench-bb-'));
  chmodSync(root, 0o755);
  const [pgPort, httpPort] = [await freePort(), await freePort()];
  const pageserver = spawnDetached(
    process.execPath,
    ['--import', 'tsx', path.join(repoRoot, 'dev/storage/pageserver/main.ts'), '--dir', path.join(root, 'ps'), '--pg-port', String(pgPort), '--http-port', String(httpPort)],
    { log: path.join(root, 'pageserver.log'), cwd: repoRoot },
  );
  try {
    await waitUntilReady('dev pageserver', pageserver, async () => {
      if (!(await canConnect('127.0.0.1', httpPort))) throw new Error(`nothing listens on ${httpPort} yet`);
    }, 60_000);
    const tenant = randomBytes(16).toString('hex');
    const timeline = randomBytes(16).toString('hex');
    await createPageserverClient({ httpUrl: `http://127.0.0.1:${httpPort}` }).createTimeline(tenant, { new_timeline_id: timeline, pg_version: 15 });
    const owner = postgresIdentity();
    const ours: number[] = [];
    const oursCpu: number[] = [];
    const stock: number[] = [];
    let bytes = 0;
    let files = 0;
    for (let i = 0; i < runs; i++) {
      const target = path.join(root, `pgdata-${i}`);
      mkdirSync(target, { mode: 0o700 });
      const cpuBefore = process.cpuUsage();
      const started = performance.now();
      const result = await fetchBasebackup({
        connstring: `postgresql://cloud_admin@127.0.0.1:${pgPort}`,
        tenantId: tenant,
        timelineId: timeline,
        targetDir: target,
        ...(owner ? { owner: { uid: owner.uid, gid: owner.gid } } : {}),
      });
      ours.push(performance.now() - started);
      const cpu = process.cpuUsage(cpuBefore);
      oursCpu.push((cpu.user + cpu.system) / 1000);
      bytes = result.metrics.basebackup_bytes;
      files = result.files;
      rmSync(target, { recursive: true, force: true });

      const stockTarget = path.join(root, `stock-${i}`);
      mkdirSync(stockTarget, { mode: 0o700 });
      const stockStarted = performance.now();
      await stockFetch(pgPort, `basebackup ${tenant} ${timeline} --gzip`, stockTarget);
      stock.push(performance.now() - stockStarted);
      rmSync(stockTarget, { recursive: true, force: true });
    }
    for (const xs of [ours, oursCpu, stock]) xs.sort((a, b) => a - b);
    const row = (name: string, xs: number[]) =>
      `| ${name} | ${percentile(xs, 50).toFixed(0)} | ${percentile(xs, 90).toFixed(0)} | ${percentile(xs, 99).toFixed(0)} | ${xs[0]!.toFixed(0)} |`;
    return [
      '# Base backup of a fresh timeline (dev pageserver process → compute client)',
      '',
      `${runs} rounds on ${os.cpus().length} cores, load average ${os.loadavg()[0]!.toFixed(1)} at the end; archive ${(bytes / 1024 / 1024).toFixed(1)} MiB gzip'd, ${files} files unpacked${owner ? ' and handed to the postgres user' : ''}.`,
      'Each round runs both, ours first; the pageserver is a separate process, as under `dev up`.',
      '',
      '| measure (ms) | p50 | p90 | p99 | min |',
      '|---|---:|---:|---:|---:|',
      row('ours: fetch + gunzip + unpack into PGDATA (wall)', ours),
      row('ours: CPU time of the client (user + system)', oursCpu),
      row('stock: psql basebackup piped into tar -xz (wall)', stock),
      '',
    ].join('\n');
  } finally {
    await stopTracked(pageserver);
    rmSync(root, { recursive: true, force: true });
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const markdown = await runBasebackupBench();
  const out = path.join(repoRoot, 'bench', 'results', 'basebackup.md');
  writeFileSync(out, markdown);
  process.stdout.write(markdown);
}
