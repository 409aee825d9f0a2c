import { readFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findPostgres } from '../common/pg-binaries';
import { startThrowawayPostgres, type ThrowawayPostgres } from '../dev/throwaway-postgres';
import { auditSettings, installedExtensionLookup, requireAuditSupport } from '../drivers/postgres/audit';
import { handleAuditExtension, handleNeonExtension, type CatalogSession } from '../drivers/postgres/catalog-extensions';
import { renderPostgresqlConf } from '../drivers/postgres/config';
import { parseComputeConfig, type ComputeSpec } from '../model/compute-spec';

/** The apply's session over a throwaway server: catalog reads, and changes recorded as the apply records them. */
function sessionOn(server: ThrowawayPostgres, database = 'postgres'): CatalogSession & { changes: string[]; statements: string[] } {
  const changes: string[] = [];
  const statements: string[] = [];
  return {
    changes,
    statements,
    query: async <T extends Record<string, unknown>>(sql: string, params?: unknown[]) => (await server.query<T>(sql, params, database)).rows,
    async change(sql, change) {
      await server.query(sql, undefined, database);
      statements.push(sql);
      changes.push(change);
    },
  };
}

function parseWith(extra: Record<string, unknown>) {
  return parseComputeConfig({
    spec: {
      format_version: 1,
      suspend_timeout_seconds: -1,
      mode: 'Primary',
      tenant_id: '3aa8fcc61f6d357410b7de754b1d9001',
      timeline_id: 'de200bd42b49cc1814412c7e592dd6e9',
      pageserver_connstring: 'postgresql://127.0.0.1:1',
      safekeeper_connstrings: ['127.0.0.1:2'],
      cluster: { roles: [], databases: [], settings: [{ name: 'shared_preload_libraries', value: 'pg_stat_statements', vartype: 'string' }] },
      ...extra,
    },
    compute_ctl_config: { jwks: { keys: [] } },
  });
}

function specWith(extra: Record<string, unknown>): ComputeSpec {
  const parsed = parseWith(extra);
  if (!parsed.ok) throw new Error(parsed.errors.join('; '));
  return parsed.config.spec;
}

describe('CREATE/ALTER EXTENSION neon (the Neon backend\'s catalog phase), on a real PostgreSQL', () => {
  let server: ThrowawayPostgres;
  beforeAll(async () => {
    server = await startThrowawayPostgres();
    await server.query('CREATE SCHEMA neon');
  });
  afterAll(async () => server?.stop());

  // Stock PostgreSQL has no `neon` extension. hstore (a contrib extension with several versions)
  // STANDS IN for it: the same statements, run on a real catalog. Untested against Neon's Postgres.
  it('installs it in schema neon, then changes nothing on a second run', async () => {
    const first = sessionOn(server);
    await handleNeonExtension(first, 'hstore');
    expect(first.statements).toEqual(['CREATE EXTENSION IF NOT EXISTS "hstore" WITH SCHEMA neon']);
    const again = sessionOn(server);
    await handleNeonExtension(again, 'hstore');
    expect(again.changes).toEqual([]);
    const { rows } = await server.query<{ nspname: string; extversion: string }>(
      "SELECT n.nspname, e.extversion FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE extname = 'hstore'",
    );
    expect(rows).toEqual([{ nspname: 'neon', extversion: '1.8' }]);
  });

  it('moves an old, non-relocatable install into schema neon and updates it to the default version', async () => {
    await server.query('DROP EXTENSION hstore');
    await server.query("CREATE EXTENSION hstore WITH SCHEMA public VERSION '1.7'");
    // What old installs of neon looked like: not relocatable (compute_ctl's compat fix flips the flag).
    await server.query("UPDATE pg_extension SET extrelocatable = false WHERE extname = 'hstore'");
    const session = sessionOn(server);
    await handleNeonExtension(session, 'hstore');
    expect(session.statements).toEqual([
      `UPDATE pg_catalog.pg_extension SET extrelocatable = true WHERE extname OPERATOR(pg_catalog.=) 'hstore'`,
      'ALTER EXTENSION "hstore" SET SCHEMA neon',
      'ALTER EXTENSION "hstore" UPDATE',
    ]);
    expect(session.changes).toEqual([
      'make extension "hstore" relocatable',
      'move extension "hstore" from schema "public" to neon',
      'update extension "hstore" from 1.7 to 1.8',
    ]);
    const { rows } = await server.query("SELECT n.nspname, e.extversion FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE extname = 'hstore'");
    expect(rows).toEqual([{ nspname: 'neon', extversion: '1.8' }]);
    // hstore's functions now resolve in schema neon.
    expect((await server.query("SELECT neon.hstore('a', 'b')::text AS h")).rows).toEqual([{ h: '"a"=>"b"' }]);
  });

  it('names the missing extension when the Postgres is not Neon\'s', async () => {
    await expect(handleNeonExtension(sessionOn(server))).rejects.toThrow(/the neon extension is not installed in this compute's PostgreSQL .*Neon's Postgres/);
  });
});

describe('audit_log_level: pgaudit as compute_ctl configures it', () => {
  it('writes pgaudit\'s settings after the spec\'s, adding pgaudit to shared_preload_libraries; nothing when Disabled', () => {
    const conf = renderPostgresqlConf(specWith({ audit_log_level: 'Log' }));
    const lines = conf.split('\n');
    expect(lines).toContain("shared_preload_libraries = 'pg_stat_statements,pgaudit'");
    expect(lines).toContain("pgaudit.log = 'ddl,role'");
    expect(lines).toContain('pgaudit.log_catalog = off');
    // The spec's own shared_preload_libraries line gives way to the audit one (one line per setting).
    expect(lines.filter((l) => l.startsWith('shared_preload_libraries'))).toHaveLength(1);
    expect(lines.indexOf('# Managed by compute_ctl base audit settings: start')).toBeGreaterThan(lines.indexOf('# Managed by compute_ctl: end'));
    expect(auditSettings(specWith({ audit_log_level: 'Disabled' }))).toEqual([]);
    expect(auditSettings(specWith({}))).toEqual([]);
    expect(parseWith({ audit_log_level: 'Loud' })).toEqual({ ok: false, errors: [expect.stringMatching(/^spec\.audit_log_level: must be one of "Disabled", "Log", "Base", "Hipaa", "Extended", "Full"/)] });
  });

  it('refuses clearly when pgaudit is missing, and refuses the compliance levels', async () => {
    const missing = async () => false;
    await expect(requireAuditSupport({ audit_log_level: 'Log' }, missing)).rejects.toMatchObject({
      type: 'AuditLogUnavailable',
      nonRetryable: true,
      message: expect.stringMatching(/audit_log_level Log needs the pgaudit extension.*apt-get install postgresql-15-pgaudit/),
    });
    await expect(requireAuditSupport({ audit_log_level: 'Hipaa' }, async () => true)).rejects.toThrow(/audit_log_level Hipaa is not supported.*pgauditlogtofile.*AUDIT_LOGGING_ENDPOINT/);
    await expect(requireAuditSupport({ audit_log_level: 'Disabled' }, missing)).resolves.toBeUndefined();
    await expect(requireAuditSupport({}, missing)).resolves.toBeUndefined();
  });

  it('finds what this machine\'s PostgreSQL has installed (pgaudit: .ci/run installs it), and not neon', async () => {
    const lookup = installedExtensionLookup(findPostgres({ pgBinDir: process.env.PG_BIN_DIR }).binDir);
    expect(await lookup('pgaudit')).toBe(true);
    expect(await lookup('neon')).toBe(false);
    await expect(requireAuditSupport({ audit_log_level: 'Base' }, lookup)).resolves.toBeUndefined();
  });

  it('with pgaudit loaded: creates the extension, keeps the system database quiet, and DDL elsewhere is audited in the log', async () => {
    const settings = Object.fromEntries(auditSettings(specWith({ audit_log_level: 'Log' })).map((s) => [s.name, typeof s.value === 'boolean' ? (s.value ? 'on' : 'off') : `'${s.value}'`]));
    const server = await startThrowawayPostgres(settings);
    try {
      const session = sessionOn(server);
      await handleAuditExtension(session, 'postgres');
      expect(session.changes).toEqual(['create extension pgaudit', 'turn pgaudit off in database "postgres"']);
      const again = sessionOn(server);
      await handleAuditExtension(again, 'postgres');
      expect(again.changes).toEqual([]);
      await server.query('CREATE DATABASE app');
      await server.query('CREATE TABLE audited_here (id int)', undefined, 'app');
      await server.query('CREATE TABLE quiet_here (id int)', undefined, 'postgres');
      const log = path.join(path.dirname(server.dataDir), 'log');
      let text = '';
      for (let i = 0; i < 50 && !text.includes('audited_here'); i++, await sleep(100)) text = readFileSync(log, 'utf8');
      expect(text).toMatch(/AUDIT: SESSION,\d+,\d+,DDL,CREATE TABLE,,,CREATE TABLE audited_here/);
      expect(text).not.toMatch(/AUDIT: .*quiet_here/);
    } finally {
      await server.stop();
    }
  });
});
