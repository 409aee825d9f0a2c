import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { canConnect, freePort } from '../dev/processes';
import { renderPgbouncerIni, tunePgbouncer, type PgbouncerTarget } from '../drivers/postgres/pgbouncer';
import { resolveServerUser } from '../drivers/postgres/server-user';
import { parseComputeConfig } from '../model/compute-spec';
import { privilegedSpecFields } from '../model/spec-trust';

/** Debian's pgbouncer (.ci/run installs it). pgbouncer refuses to run as root: it runs as postgres. */
const PGBOUNCER = '/usr/sbin/pgbouncer';
const owner = resolveServerUser();

const INI = (port: number, dir: string) => `;; the operator's own file: comments and other sections stay
[databases]
* = host=127.0.0.1 port=1

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = ${port}
unix_socket_dir =
auth_type = trust
auth_file = ${dir}/users.txt
admin_users = cloud_admin
max_client_conn = 100

[users]
`;

describe('pgbouncer_settings: written into a real pgbouncer ini and reloaded', () => {
  let dir: string;
  let iniPath: string;
  let target: PgbouncerTarget;
  let child: ChildProcess;

  const showConfig = async (): Promise<Map<string, string>> => {
    const client = new pg.Client({ host: '127.0.0.1', port: target.port, user: 'cloud_admin', database: 'pgbouncer' });
    await client.connect();
    try {
      const { rows } = await client.query<{ key: string; value: string }>('SHOW CONFIG');
      return new Map(rows.map((r) => [r.key, r.value]));
    } finally {
      await client.end();
    }
  };

  beforeAll(async () => {
    expect(existsSync(PGBOUNCER), `${PGBOUNCER} missing: install Debian's pgbouncer (bash .ci/run does)`).toBe(true);
    dir = mkdtempSync(path.join(os.tmpdir(), 'dc-pgbouncer-'));
    chmodSync(dir, 0o755);
    const port = await freePort();
    iniPath = path.join(dir, 'pgbouncer.ini');
    writeFileSync(iniPath, INI(port, dir));
    writeFileSync(path.join(dir, 'users.txt'), '"cloud_admin" ""\n');
    if (owner) for (const f of [dir, iniPath, path.join(dir, 'users.txt')]) chownSync(f, owner.uid, owner.gid);
    child = spawn(PGBOUNCER, [iniPath], { stdio: 'ignore', ...(owner && { uid: owner.uid, gid: owner.gid }) });
    target = { iniPath, host: '127.0.0.1', port, user: 'cloud_admin' };
    for (let i = 0; i < 100 && !(await canConnect('127.0.0.1', port)); i++) await new Promise((r) => setTimeout(r, 50));
    expect(await canConnect('127.0.0.1', port)).toBe(true);
  });

  afterAll(async () => {
    if (child?.pid !== undefined && child.exitCode === null) {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
    }
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('writes the settings into the [pgbouncer] section, keeps the rest of the file, and SHOW CONFIG shows them after RELOAD', async () => {
    const settings = { max_client_conn: '150', server_reset_query: 'DISCARD ALL; SELECT 1', application_name_add_host: '1' };
    const { changed } = await tunePgbouncer(target, settings);
    expect(changed).toEqual(Object.keys(settings));
    const config = await showConfig();
    expect(config.get('max_client_conn')).toBe('150');
    expect(config.get('server_reset_query')).toBe('DISCARD ALL; SELECT 1');
    expect(config.get('application_name_add_host')).toBe('1');
    const ini = readFileSync(iniPath, 'utf8');
    expect(ini).toContain(";; the operator's own file");
    expect(ini).toContain('* = host=127.0.0.1 port=1');
    expect(ini.match(/^max_client_conn = /gm)).toHaveLength(1); // replaced in place, not added twice
    // Added inside [pgbouncer], before [users].
    expect(ini.indexOf('application_name_add_host = 1')).toBeLessThan(ini.indexOf('[users]'));
  });

  it('applies a changed value again (configure), and an unchanged one changes nothing in the file', async () => {
    await tunePgbouncer(target, { max_client_conn: '175' });
    expect((await showConfig()).get('max_client_conn')).toBe('175');
    expect((await tunePgbouncer(target, { max_client_conn: '175' })).changed).toEqual([]);
  });

  it('refuses an unknown setting, with its name, and a value with a line break, before writing anything', async () => {
    const before = readFileSync(iniPath, 'utf8');
    await expect(tunePgbouncer(target, { max_client_conn: '10', no_such_setting: '1' })).rejects.toThrow(/unknown pgbouncer setting "no_such_setting"/);
    expect(() => renderPgbouncerIni(before, { server_reset_query: 'DISCARD ALL\nlisten_port = 1' })).toThrow(/line break/);
    expect(readFileSync(iniPath, 'utf8')).toBe(before);
  });

  it('fails clearly when no pgbouncer answers on the admin console', async () => {
    const nobody = { ...target, port: await freePort() };
    await expect(tunePgbouncer(nobody, { max_client_conn: '150' })).rejects.toThrow(/pgbouncer did not reload/);
  });
});

describe('pgbouncer_settings in the spec', () => {
  const spec = (pgbouncer_settings: unknown) => ({
    spec: {
      format_version: 1,
      suspend_timeout_seconds: 0,
      tenant_id: '3aa8fcc61f6d357410b7de754b1d9001',
      timeline_id: 'de200bd42b49cc1814412c7e592dd6e9',
      pageserver_connstring: 'postgresql://127.0.0.1:1',
      safekeeper_connstrings: ['127.0.0.1:2'],
      cluster: { roles: [], databases: [] },
      pgbouncer_settings,
    },
  });

  it('keeps documented settings and refuses an unknown one by name, and control characters', () => {
    const ok = parseComputeConfig(spec({ default_pool_size: '20', pool_mode: 'transaction' }));
    expect(ok.ok && ok.config.spec.pgbouncer_settings).toEqual({ default_pool_size: '20', pool_mode: 'transaction' });
    const bad = parseComputeConfig(spec({ default_pool_size: '20', max_client_connections: '5', pool_mode: 'a\nb' }));
    expect(bad.ok).toBe(false);
    const errors = bad.ok ? [] : bad.errors;
    expect(errors.join('\n')).toMatch(/unknown pgbouncer setting "max_client_connections"/);
    expect(errors.join('\n')).toMatch(/pool_mode.*line break/);
    expect(errors).toHaveLength(2);
  });

  it('names the settings that open pgbouncer or its files as privileged (refused under restricted spec trust)', () => {
    const parsed = parseComputeConfig(spec({ default_pool_size: '20', auth_type: 'trust', admin_users: 'mallory' }));
    if (!parsed.ok) throw new Error(parsed.errors.join('; '));
    const found = privilegedSpecFields(parsed.config.spec);
    expect(found).toEqual([expect.stringMatching(/^pgbouncer_settings\.auth_type: /), expect.stringMatching(/^pgbouncer_settings\.admin_users: /)]);
  });
});
