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
const ALL = ['basebackup', 'prewarm', 'import', 'import-dump-restore', 'compute-start', 'compute-burst', 'agent', 'fleet', 'replica-lag'] as const;
/** Run only when named in BENCH (long): the chaos table (also `npm run chaos`). */
const ON_REQUEST = ['chaos'];
/** The chaos table is a fault-injection suite over the activities, so it lives with the tests. */
const SCRIPT: Record<string, string> = { chaos: path.join(here, '..', 'test', 'chaos', 'run.ts') };
/** Benchmarks whose module (and results file) is not named after them. */
const MODULE: Partial<Record<(typeof ALL)[number], string>> = { agent: 'compute-agent' };
const moduleOf = (name: string) => MODULE[name as (typeof ALL)[number]] ?? name;

/** The baseline tools each benchmark compares against: command and the Debian package that has it. */
const BASELINES: Partial<Record<(typeof ALL)[number], { command: string; pkg: string }[]>> = {
  basebackup: [
    { command: 'psql', pkg: 'postgresql-client-15' },
    { command: 'tar', pkg: 'tar' },
  ],
  import: [
    { command: 'pgcopydb', pkg: 'pgcopydb' },
    { command: 'aws', pkg: 'awscli' },
    { command: 'pg_dump', pkg: 'postgresql-client-15' },
  ],
  'import-dump-restore': [{ command: 'pg_dump', pkg: 'postgresql-client-15' }],
};

function onPath(command: string): boolean {
  return spawnSync('sh', ['-c', 'command -v "$1"', 'sh', command], { stdio: 'ignore' }).status === 0;
}

/**
 * Installs the missing baseline tools with apt-get when this runs as root (a fresh machine of
 * ours), else names each one with the command that installs it: better than dying minutes in
 * with `spawn pgcopydb ENOENT`.
 */
function ensureBaselines(names: readonly string[]): void {
  const missing = names.flatMap((n) => BASELINES[n as keyof typeof BASELINES] ?? []).filter((t) => !onPath(t.command));
  if (missing.length === 0) return;
  const pkgs = [...new Set(missing.map((t) => t.pkg))];
  const canInstall = process.getuid?.() === 0 && onPath('apt-get');
  if (canInstall) {
    console.log(`installing the baseline tools ${missing.map((t) => t.command).join(', ')}: apt-get install ${pkgs.join(' ')}`);
    const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
    spawnSync('apt-get', ['update'], { stdio: 'inherit', env });
    const installed = spawnSync('apt-get', ['install', '-y', '--no-install-recommends', ...pkgs], { stdio: 'inherit', env });
    if (installed.status === 0 && missing.every((t) => onPath(t.command))) return;
  }
  console.error('the benchmarks compare against tools this machine lacks:');
  for (const t of missing) console.error(`  ${t.command}: sudo apt-get install ${t.pkg}`);
  process.exit(2);
}
const chosen = (process.env.BENCH ?? ALL.join(','))
  .split(',')
  .map((b) => b.trim())
  .filter(Boolean);
for (const name of chosen) {
  if (![...ALL, ...ON_REQUEST].includes(name)) throw new Error(`unknown benchmark ${name}; choose from ${[...ALL, ...ON_REQUEST].join(', ')}`);
}

ensureBaselines(chosen);

const failed: string[] = [];
for (const name of chosen) {
  console.log(`\n=== benchmark: ${name}`);
  const started = Date.now();
  const result = spawnSync(process.execPath, [...tsNodeArgs(), SCRIPT[name] ?? path.join(here, `${moduleOf(name)}.ts`)], { stdio: 'inherit' });
  console.log(`=== ${name}: ${result.status === 0 ? 'done' : `FAILED (${result.status ?? result.signal})`} in ${Math.round((Date.now() - started) / 1000)} s`);
  if (result.status !== 0) failed.push(name);
}

const sections = [...ALL, ...ON_REQUEST].map((name) => path.join(here, 'results', `${moduleOf(name)}.md`))
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
