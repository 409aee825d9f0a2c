import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ensureLines, ensurePgHba, ensureStandbySignal, escapeConfValue, PG_HBA_ALL_MD5, renderPostgresqlConf, TEMP_OVERRIDE_INCLUDE } from '../drivers/postgres/config';
import { parseComputeConfig, type ComputeSpec } from '../model/compute-spec';

const TENANT = '3aa8fcc61f6d357410b7de754b1d9001';
const TIMELINE = 'de200bd42b49cc1814412c7e592dd6e9';

function parse(over: Record<string, unknown> = {}): ComputeSpec {
  const result = parseComputeConfig({
    format_version: 1,
    suspend_timeout_seconds: 300,
    tenant_id: TENANT,
    timeline_id: TIMELINE,
    pageserver_connstring: 'postgresql://ps:64000',
    safekeeper_connstrings: ['sk1:5454', 'sk2:5454'],
    endpoint_id: "ep-it's",
    cluster: {
      roles: [],
      databases: [],
      postgresql_conf: '# verbatim\nmax_worker_processes = 8',
      settings: [
        { name: 'port', value: '55432', vartype: 'integer' },
        { name: 'listen_addresses', value: '127.0.0.1', vartype: 'string' },
        { name: 'log_line_prefix', value: "it's a \\ prefix ", vartype: 'string' },
      ],
    },
    ...over,
  });
  if (!result.ok) throw new Error(result.errors.join('; '));
  return result.config.spec;
}

const tmpRoots: string[] = [];
function tmp(): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'dc-pgconf-'));
  tmpRoots.push(dir);
  return dir;
}
afterAll(() => tmpRoots.forEach((d) => rmSync(d, { recursive: true, force: true })));

describe('renderPostgresqlConf', () => {
  it("writes compute_ctl's lines in compute_ctl's order, with the temp-override include last", () => {
    const text = renderPostgresqlConf(parse(), { backendSettings: [{ name: 'neon_stock.backend', value: 1 }] });
    const lines = text.trimEnd().split('\n');
    expect(lines.slice(0, 2)).toEqual(['# verbatim', 'max_worker_processes = 8']);
    const order = [
      "neon.pageserver_connstring='postgresql://ps:64000'",
      "neon.safekeepers='sk1:5454,sk2:5454'",
      `neon.tenant_id='${TENANT}'`,
      `neon.timeline_id='${TIMELINE}'`,
      "neon.endpoint_id='ep-it''s'",
      "lc_messages='C.UTF-8'",
      'neon.compute_mode=primary',
      "neon.privileged_role_name='neon_superuser'",
      '# Managed by compute_ctl: begin',
      'port = 55432',
      "listen_addresses = '127.0.0.1'",
      "log_line_prefix = 'it''s a \\\\ prefix '",
      '# Managed by compute_ctl: end',
      'neon.disable_logical_replication_subscribers=false',
      'neon_stock.backend = 1',
    ];
    const positions = order.map((l) => lines.indexOf(l));
    expect(positions.every((p) => p >= 0), `missing: ${order.filter((_, i) => positions[i]! < 0).join(' | ')}`).toBe(true);
    expect([...positions].sort((a, b) => a - b)).toEqual(positions);
    expect(lines[lines.length - 1]).toBe(TEMP_OVERRIDE_INCLUDE);
    expect(text.match(/include_if_exists/g)).toHaveLength(1);
  });

  it('prefixes the safekeepers with the generation and writes the stripe size of a sharded tenant first', () => {
    const text = renderPostgresqlConf(
      parse({ safekeepers_generation: 7, pageserver_connstring: 'postgresql://a:1,postgresql://b:1', shard_stripe_size: 2048 }),
    );
    expect(text).toContain("neon.safekeepers='g#7:sk1:5454,sk2:5454'");
    expect(text.indexOf('neon.stripe_size=2048')).toBeLessThan(text.indexOf("neon.pageserver_connstring='postgresql://a:1,postgresql://b:1'"));
  });

  it('adds hot_standby and recovery_target_lsn for a Static compute, hot_standby for a Replica', () => {
    const statik = renderPostgresqlConf(parse({ mode: { Static: '0/16B5A50' } }));
    expect(statik).toContain('neon.compute_mode=static\nhot_standby=on\nrecovery_target_lsn=\'0/16B5A50\'\n');
    const replica = renderPostgresqlConf(parse({ mode: 'Replica', safekeeper_connstrings: [] }));
    expect(replica).toContain('neon.compute_mode=replica\nhot_standby=on\n');
    expect(replica).not.toContain('neon.safekeepers');
    expect(replica).not.toContain('recovery_target_lsn');
  });

  it('leaves out the locale lines on request and omits the managed block without settings', () => {
    const text = renderPostgresqlConf(parse({ cluster: { roles: [], databases: [] } }), { locale: null, privilegedRoleName: 'my_su' });
    expect(text).not.toContain('lc_messages');
    expect(text).not.toContain('Managed by compute_ctl');
    expect(text).toContain("neon.privileged_role_name='my_su'");
  });

  it('escapes postgresql.conf strings as compute_ctl does', () => {
    expect(escapeConfValue("a'b\\c")).toBe("'a''b\\\\c'");
  });
});

describe('pg_hba.conf and standby.signal', () => {
  it("puts the storage backend's lines first, then appends compute_ctl's md5 line, once", async () => {
    const dir = tmp();
    const hba = path.join(dir, 'pg_hba.conf');
    writeFileSync(hba, 'local all all trust'); // no trailing newline
    const first = await ensurePgHba(dir, { extraLines: ['host all cloud_admin 127.0.0.1/32 trust'] });
    expect(first.added).toEqual(['host all cloud_admin 127.0.0.1/32 trust', PG_HBA_ALL_MD5]);
    // The storage backend's lines go first: pg_hba is first-match, and the image's own lines must not win.
    expect(readFileSync(hba, 'utf8')).toBe(`host all cloud_admin 127.0.0.1/32 trust\nlocal all all trust\n${PG_HBA_ALL_MD5}\n`);
    const again = await ensurePgHba(dir, { extraLines: ['host all cloud_admin 127.0.0.1/32 trust'] });
    expect(again.added).toEqual([]);
    await expect(ensurePgHba(dir, { extraLines: ['host all all all trust\nlocal all all trust'] })).rejects.toThrow(/line breaks/);
  });

  it('moves a storage backend line found further down to the top', async () => {
    const dir = tmp();
    const hba = path.join(dir, 'pg_hba.conf');
    writeFileSync(hba, `local all all trust\nlocal replication all reject\n${PG_HBA_ALL_MD5}\n`);
    const result = await ensurePgHba(dir, { extraLines: ['local replication pusher scram-sha-256', 'local replication all reject'] });
    expect(result.added).toEqual(['local replication pusher scram-sha-256']);
    expect(readFileSync(hba, 'utf8')).toBe(`local replication pusher scram-sha-256\nlocal replication all reject\nlocal all all trust\n${PG_HBA_ALL_MD5}\n`);
  });

  it('creates pg_hba.conf when the base backup had none', async () => {
    const dir = tmp();
    await ensurePgHba(dir);
    expect(readFileSync(path.join(dir, 'pg_hba.conf'), 'utf8')).toBe(`${PG_HBA_ALL_MD5}\n`);
  });

  it('ensureLines keeps existing text and adds only what is missing', () => {
    expect(ensureLines('a\nb\n', ['b', 'c', 'c'])).toEqual({ text: 'a\nb\nc\n', added: ['c'] });
    expect(ensureLines('', [])).toEqual({ text: '', added: [] });
  });

  it('creates standby.signal for Replica and Static, removes it for a Primary', async () => {
    const dir = tmp();
    const signal = path.join(dir, 'standby.signal');
    expect(await ensureStandbySignal(dir, { mode: { kind: 'Replica' } })).toEqual({ standby: true, changed: true });
    expect(existsSync(signal)).toBe(true);
    expect(await ensureStandbySignal(dir, { mode: { kind: 'Static', lsn: '0/1' } })).toEqual({ standby: true, changed: false });
    expect(await ensureStandbySignal(dir, { mode: { kind: 'Primary' } })).toEqual({ standby: false, changed: true });
    expect(existsSync(signal)).toBe(false);
  });
});
