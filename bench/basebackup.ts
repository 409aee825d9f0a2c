/**
 * Base backup of a fresh timeline from the dev pageserver: fetch (libpq COPY OUT, gzip'd tar) and
 * unpack into an empty PGDATA with the compute's own client, N times. Writes
 * bench/results/basebackup.md.   node --import tsx bench/basebackup.ts   (BENCH_BASEBACKUP_RUNS=20)
 */
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { fetchBasebackup } from '../activities/pageserver';
import { createPageserverClient } from '../activities/pageserver';
import { startPageserver } from '../dev/storage/pageserver/pageserver';
import { randomBytes } from 'node:crypto';

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

export async function runBasebackupBench(runs = Number(process.env.BENCH_BASEBACKUP_RUNS ?? 20)): Promise<string> {
  const root = mkdtempSync(path.join(os.tmpdir(), 'dc-bench-bb-'));
  chmodSync(root, 0o755);
  const ps = await startPageserver({ dir: path.join(root, 'ps'), host: '127.0.0.1', pgPort: 0, httpPort: 0, safekeepers: [], log: () => {} });
  try {
    const tenant = randomBytes(16).toString('hex');
    const timeline = randomBytes(16).toString('hex');
    await createPageserverClient({ httpUrl: `http://127.0.0.1:${ps.httpPort}` }).createTimeline(tenant, { new_timeline_id: timeline, pg_version: 15 });
    const totals: number[] = [];
    const fetches: number[] = [];
    let bytes = 0;
    let files = 0;
    for (let i = 0; i < runs; i++) {
      const target = path.join(root, `pgdata-${i}`);
      mkdirSync(target, { mode: 0o700 });
      const started = performance.now();
      const result = await fetchBasebackup({ connstring: `postgresql://cloud_admin@127.0.0.1:${ps.pgPort}`, tenantId: tenant, timelineId: timeline, targetDir: target });
      totals.push(performance.now() - started);
      fetches.push(result.metrics.basebackup_ms);
      bytes = result.metrics.basebackup_bytes;
      files = result.files;
      rmSync(target, { recursive: true, force: true });
    }
    totals.sort((a, b) => a - b);
    fetches.sort((a, b) => a - b);
    const row = (name: string, xs: number[]) =>
      `| ${name} | ${percentile(xs, 50).toFixed(0)} | ${percentile(xs, 90).toFixed(0)} | ${percentile(xs, 99).toFixed(0)} | ${xs[0]!.toFixed(0)} |`;
    const markdown = [
      '# Base backup of a fresh timeline (dev pageserver → compute client)',
      '',
      `${runs} runs on ${os.cpus().length} cores, load average ${os.loadavg()[0]!.toFixed(1)}; archive ${(bytes / 1024 / 1024).toFixed(1)} MiB gzip'd, ${files} files unpacked.`,
      '',
      '| measure (ms) | p50 | p90 | p99 | min |',
      '|---|---:|---:|---:|---:|',
      row('fetch + gunzip + unpack into PGDATA (wall)', totals),
      row("basebackup_ms (compute_ctl's metric)", fetches),
      '',
    ].join('\n');
    return markdown;
  } finally {
    await ps.close();
    rmSync(root, { recursive: true, force: true });
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const markdown = await runBasebackupBench();
  const out = path.join(path.dirname(fileURLToPath(import.meta.url)), 'results', 'basebackup.md');
  writeFileSync(out, markdown);
  process.stdout.write(markdown);
}
