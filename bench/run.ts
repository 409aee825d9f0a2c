/**
 * `npm run bench`: runs each benchmark in its own process (so one's memory and servers never
 * disturb the next), then writes bench/results/README.md with every results table.
 * BENCH=basebackup,prewarm,import picks a subset; each benchmark documents its own knobs.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { tsNodeArgs } from '../common/paths';

const here = path.dirname(fileURLToPath(import.meta.url));
const ALL = ['basebackup', 'prewarm', 'import', 'fleet'] as const;
const chosen = (process.env.BENCH ?? ALL.join(','))
  .split(',')
  .map((b) => b.trim())
  .filter(Boolean);
for (const name of chosen) {
  if (!(ALL as readonly string[]).includes(name)) throw new Error(`unknown benchmark ${name}; choose from ${ALL.join(', ')}`);
}

const failed: string[] = [];
for (const name of chosen) {
  console.log(`\n=== benchmark: ${name}`);
  const started = Date.now();
  const result = spawnSync(process.execPath, [...tsNodeArgs(), path.join(here, `${name}.ts`)], { stdio: 'inherit' });
  console.log(`=== ${name}: ${result.status === 0 ? 'done' : `FAILED (${result.status ?? result.signal})`} in ${Math.round((Date.now() - started) / 1000)} s`);
  if (result.status !== 0) failed.push(name);
}

const sections = ALL.map((name) => path.join(here, 'results', `${name}.md`))
  .filter((file) => existsSync(file))
  .map((file) => readFileSync(file, 'utf8').trim());
writeFileSync(
  path.join(here, 'results', 'README.md'),
  [
    '# Benchmark results',
    '',
    `Last full or partial run: ${new Date().toISOString()} on ${os.cpus().length} cores, ${(os.totalmem() / 1024 ** 3).toFixed(0)} GiB (\`npm run bench\`).`,
    '',
    ...sections.flatMap((s) => [s, '']),
  ].join('\n'),
);
if (failed.length) {
  console.error(`benchmarks failed: ${failed.join(', ')}`);
  process.exit(1);
}
