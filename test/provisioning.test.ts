import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { findPostgres } from '../common/pg-binaries';
import { provisionTemporalCli, TEMPORAL_CLI_VERSION } from '../dev/temporal-cli';

const scratchDirs: string[] = [];
afterAll(() => {
  for (const dir of scratchDirs) rmSync(dir, { recursive: true, force: true });
});

function tmp(prefix: string): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), prefix));
  scratchDirs.push(dir);
  return dir;
}

function fakeExecutable(dir: string, name: string, script: string): string {
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, name);
  writeFileSync(file, `#!/bin/sh\n${script}\n`);
  chmodSync(file, 0o755);
  return file;
}

describe('Temporal CLI provisioning', () => {
  it('fails fast, listing every step tried, without a binary and without Go', async () => {
    const emptyPath = tmp('dc-nopath-');
    const started = Date.now();
    const attempt = provisionTemporalCli({ env: { PATH: emptyPath }, cacheDir: tmp('dc-cache-') });
    await expect(attempt).rejects.toThrow(/No Temporal CLI v1\.5\.1 could be found or built/);
    const message = await attempt.catch((e: Error) => e.message);
    expect(message).toContain('TEMPORAL_CLI_PATH: not set');
    expect(message).toContain('`temporal` on PATH: not found');
    expect(message).toMatch(/project cache .*: not built yet/);
    expect(message).toContain('go install: no `go` on PATH');
    expect(message).toContain('SDK download: not attempted');
    expect(message).toMatch(/install Go .* or set TEMPORAL_CLI_PATH/);
    expect(Date.now() - started).toBeLessThan(5000);
  });

  it('takes TEMPORAL_CLI_PATH first and rejects a path that is not executable', async () => {
    const bin = fakeExecutable(tmp('dc-cli-'), 'temporal', 'echo fake');
    await expect(provisionTemporalCli({ env: { TEMPORAL_CLI_PATH: bin, PATH: '' } })).resolves.toEqual({ path: bin, source: 'TEMPORAL_CLI_PATH' });
    await expect(provisionTemporalCli({ env: { TEMPORAL_CLI_PATH: '/nonexistent/temporal', PATH: '' } })).rejects.toThrow(
      /TEMPORAL_CLI_PATH=\/nonexistent\/temporal is not an executable file/,
    );
  });

  it('then `temporal` on PATH, then the project cache', async () => {
    const onPath = tmp('dc-path-');
    const bin = fakeExecutable(onPath, 'temporal', 'echo fake');
    await expect(provisionTemporalCli({ env: { PATH: onPath } })).resolves.toEqual({ path: bin, source: 'PATH' });
    const cacheDir = tmp('dc-cache-');
    const cached = fakeExecutable(path.join(cacheDir, 'temporal', `v${TEMPORAL_CLI_VERSION}`), 'temporal', 'echo fake');
    await expect(provisionTemporalCli({ env: { PATH: tmp('dc-empty-') }, cacheDir })).resolves.toEqual({ path: cached, source: 'cache' });
  });

  it('reports a failing go build with its output instead of hanging', async () => {
    const goDir = tmp('dc-go-');
    fakeExecutable(goDir, 'go', 'echo "go: module lookup disabled" >&2; exit 1');
    const attempt = provisionTemporalCli({ env: { PATH: goDir }, cacheDir: tmp('dc-cache-') });
    await expect(attempt).rejects.toThrow(/go install github\.com\/temporalio\/cli\/cmd\/temporal@v1\.5\.1: go install exited with 1/);
  });
});

describe('PostgreSQL discovery', () => {
  it('finds PostgreSQL 15 with its contrib modules', () => {
    const pg = findPostgres({ pgBinDir: process.env.PG_BIN_DIR });
    expect(pg.major).toBe(15);
    expect(pg.version).toMatch(/^15\./);
  });

  it('names the Debian packages when PG_BIN_DIR holds no server', () => {
    expect(() => findPostgres({ pgBinDir: tmp('dc-nopg-') })).toThrow(/no postgres executable.*postgresql-15 and postgresql-contrib/);
  });

  it('refuses another major version', () => {
    const dir = tmp('dc-pg14-');
    fakeExecutable(dir, 'postgres', 'echo "postgres (PostgreSQL) 14.11"');
    expect(() => findPostgres({ pgBinDir: dir })).toThrow(/holds PostgreSQL 14\.11, not 15/);
  });

  it('names the missing contrib modules', () => {
    const dir = tmp('dc-pgnocontrib-');
    fakeExecutable(dir, 'postgres', 'echo "postgres (PostgreSQL) 15.4"');
    for (const b of ['initdb', 'pg_ctl', 'psql', 'pg_dump', 'pg_restore', 'pg_controldata']) fakeExecutable(dir, b, 'exit 0');
    const share = tmp('dc-share-');
    fakeExecutable(dir, 'pg_config', `case "$1" in --sharedir) echo ${share};; --pkglibdir) echo ${share};; esac`);
    expect(() => findPostgres({ pgBinDir: dir })).toThrow(/lacks the contrib modules pg_buffercache, pg_prewarm.*postgresql-contrib/);
  });
});
