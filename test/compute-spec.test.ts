import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { projectRoot } from '../common/paths';
import { parseComputeConfig, parseComputeSpec, shard0PageserverConnstring, type ComputeSpec } from '../model/compute-spec';

const TENANT = '3aa8fcc61f6d357410b7de754b1d9001';
const TIMELINE = 'de200bd42b49cc1814412c7e592dd6e9';

function exampleJson(): { spec: Record<string, unknown>; compute_ctl_config: unknown } {
  return JSON.parse(readFileSync(path.join(projectRoot, 'examples', 'compute-spec.json'), 'utf8'));
}

function filledExample() {
  const json = exampleJson();
  Object.assign(json.spec, {
    tenant_id: TENANT,
    timeline_id: TIMELINE,
    pageserver_connstring: 'postgresql://127.0.0.1:64000',
    safekeeper_connstrings: ['127.0.0.1:5454', '127.0.0.1:5455', '127.0.0.1:5456'],
  });
  return json;
}

/** A minimal valid bare spec; `over` replaces fields (undefined deletes them). */
function spec(over: Record<string, unknown> = {}): Record<string, unknown> {
  const base: Record<string, unknown> = {
    format_version: 1.0,
    suspend_timeout_seconds: 300,
    tenant_id: TENANT,
    timeline_id: TIMELINE,
    pageserver_connstring: 'postgresql://no_user@127.0.0.1:64000',
    safekeeper_connstrings: ['127.0.0.1:5454'],
    cluster: { roles: [], databases: [], settings: [] },
  };
  for (const [k, v] of Object.entries(over)) {
    if (v === undefined) delete base[k];
    else base[k] = v;
  }
  return base;
}

function errorsOf(json: unknown): string[] {
  const result = parseComputeConfig(json);
  if (result.ok) throw new Error(`expected the spec to be rejected, got ${JSON.stringify(result.config.spec)}`);
  return result.errors;
}

function ok(json: unknown): ComputeSpec {
  const result = parseComputeConfig(json);
  if (!result.ok) throw new Error(`expected the spec to parse: ${result.errors.join('; ')}`);
  return result.config.spec;
}

describe('the example spec', () => {
  it('refuses to parse until the run-time placeholders are filled, naming each of them', () => {
    const errors = errorsOf(exampleJson());
    expect(errors).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^spec\.tenant_id: must be 32 hex/),
        expect.stringMatching(/^spec\.timeline_id: must be 32 hex/),
        expect.stringMatching(/^spec\.pageserver_connstring: not a libpq connection string/),
        expect.stringMatching(/^spec\.safekeeper_connstrings\[0\]: .*must be host:port/),
      ]),
    );
    expect(errors).toHaveLength(4);
  });

  it('parses once filled: roles, owners, settings and the delete_role delta', () => {
    const s = ok(filledExample());
    expect(s.mode).toEqual({ kind: 'Primary' });
    expect(s.cluster.roles.map((r) => r.name)).toEqual(['alice', 'bob']);
    expect(s.cluster.roles[0]!.encrypted_password).toMatch(/^md5[0-9a-f]{32}$/);
    expect(s.cluster.roles[1]!.encrypted_password).toMatch(/^SCRAM-SHA-256\$4096:/);
    expect(s.cluster.databases.map((d) => [d.name, d.owner])).toEqual([
      ['app', 'alice'],
      ['analytics', 'bob'],
    ]);
    expect(s.cluster.settings?.find((x) => x.name === 'listen_addresses')?.value).toBe('127.0.0.1');
    expect(s.cluster.settings?.find((x) => x.name === 'port')?.value).toBe('55432');
    expect(s.delta_operations).toEqual([{ action: 'delete_role', name: 'legacy_reporter' }]);
    expect(shard0PageserverConnstring(s)).toBe('postgresql://127.0.0.1:64000');
  });
});

describe('parseComputeConfig accepts', () => {
  it('a ComputeConfig and a bare ComputeSpec alike', () => {
    const bare = ok(spec());
    const wrapped = parseComputeConfig({ spec: spec(), compute_ctl_config: { jwks: { keys: [{ kty: 'OKP', crv: 'Ed25519', x: '11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo', kid: 'cp-1' }] } } });
    expect(wrapped.ok && wrapped.config.spec).toEqual(bare);
    expect(wrapped.ok && wrapped.config.compute_ctl_config.jwks.keys).toHaveLength(1);
    const bareConfig = parseComputeConfig(spec());
    expect(bareConfig.ok && bareConfig.config.compute_ctl_config).toEqual({ jwks: { keys: [] } });
  });

  it('the legacy pageserver_connstring, unsharded and sharded (with shard_stripe_size)', () => {
    const one = ok(spec());
    expect(one.pageserver_connection_info.shard_count).toBe(0);
    expect(shard0PageserverConnstring(one)).toBe('postgresql://no_user@127.0.0.1:64000');
    const sharded = ok(spec({ pageserver_connstring: 'postgresql://ps-a:6400,postgresql://ps-b:6400', shard_stripe_size: 2048 }));
    expect(sharded.pageserver_connection_info).toMatchObject({
      shard_count: 2,
      stripe_size: 2048,
      shards: { '0002': { pageservers: [{ libpq_url: 'postgresql://ps-a:6400' }] }, '0102': { pageservers: [{ libpq_url: 'postgresql://ps-b:6400' }] } },
    });
    expect(shard0PageserverConnstring(sharded)).toBe('postgresql://ps-a:6400');
  });

  it('pageserver_connection_info, unsharded and sharded; shard 0 first pageserver wins', () => {
    const unsharded = ok(
      spec({
        pageserver_connstring: undefined,
        pageserver_connection_info: {
          shard_count: 0,
          stripe_size: null,
          shards: { '0000': { pageservers: [{ id: 1, libpq_url: 'postgresql://ps-1:6400', grpc_url: 'grpc://ps-1:51051' }, { id: 2, libpq_url: 'postgresql://ps-2:6400' }] } },
        },
      }),
    );
    expect(unsharded.pageserver_connection_info.prefer_protocol).toBe('libpq');
    expect(shard0PageserverConnstring(unsharded)).toBe('postgresql://ps-1:6400');
    const sharded = ok(
      spec({
        pageserver_connstring: undefined,
        pageserver_connection_info: {
          shard_count: 2,
          stripe_size: 32768,
          prefer_protocol: 'grpc',
          shards: {
            '0102': { pageservers: [{ id: 5, libpq_url: 'postgresql://ps-5:6400', grpc_url: 'grpc://ps-5:51051' }] },
            '0002': { pageservers: [{ id: 4, libpq_url: 'postgresql://ps-4:6400', grpc_url: 'grpc://ps-4:51051' }] },
          },
        },
      }),
    );
    expect(sharded.pageserver_connection_info.prefer_protocol).toBe('grpc');
    expect(shard0PageserverConnstring(sharded)).toBe('postgresql://ps-4:6400');
  });

  it("compute_ctl's fallback to neon.* settings for old control planes", () => {
    const s = ok(
      spec({
        tenant_id: undefined,
        timeline_id: undefined,
        pageserver_connstring: undefined,
        safekeeper_connstrings: undefined,
        cluster: {
          roles: [],
          databases: [],
          settings: [
            { name: 'neon.tenant_id', value: TENANT.toUpperCase(), vartype: 'string' },
            { name: 'neon.timeline_id', value: TIMELINE, vartype: 'string' },
            { name: 'neon.pageserver_connstring', value: 'postgresql://ps:6400', vartype: 'string' },
            { name: 'neon.safekeepers', value: '127.0.0.1:5454,127.0.0.1:5455', vartype: 'string' },
          ],
        },
      }),
    );
    expect(s.tenant_id).toBe(TENANT);
    expect(s.timeline_id).toBe(TIMELINE);
    expect(shard0PageserverConnstring(s)).toBe('postgresql://ps:6400');
    expect(s.safekeeper_connstrings).toEqual(['127.0.0.1:5454', '127.0.0.1:5455']);
  });

  it('every mode form, normalized; Primary by default', () => {
    expect(ok(spec()).mode).toEqual({ kind: 'Primary' });
    expect(ok(spec({ mode: 'Primary' })).mode).toEqual({ kind: 'Primary' });
    expect(ok(spec({ mode: 'Replica', safekeeper_connstrings: [] })).mode).toEqual({ kind: 'Replica' });
    expect(ok(spec({ mode: { Static: '0/16b5a50' }, safekeeper_connstrings: [] })).mode).toEqual({ kind: 'Static', lsn: '0/16B5A50' });
  });

  it('and ignores unknown fields at every level', () => {
    const s = ok(
      spec({
        timestamp: '2021-05-23T18:25:43.511Z',
        some_future_field: { default_pool_size: '42' },
        cluster: {
          roles: [{ name: 'r', encrypted_password: null, options: null, comment: 'x' }],
          databases: [{ name: 'd', owner: 'r', options: null, restrict_conn: true }],
          settings: [{ name: 'fsync', value: 'off', vartype: 'bool', extra: 1 }],
          whatever: [1, 2, 3],
        },
      }),
    );
    expect(s).not.toHaveProperty('timestamp');
    expect(s).not.toHaveProperty('some_future_field');
    expect(s.cluster).not.toHaveProperty('whatever');
    expect(s.cluster.roles[0]).toEqual({ name: 'r' });
    expect(s.cluster.databases[0]).toEqual({ name: 'd', owner: 'r' });
    expect(s.cluster.settings).toEqual([{ name: 'fsync', value: 'off', vartype: 'bool' }]);
  });

  it("a bare 32-hex md5 (compute_ctl's historical form) as md5<hex>, the form pg_authid stores", () => {
    const s = ok(spec({ cluster: { roles: [{ name: 'postgres', encrypted_password: '6b1d16b78004bbd51fa06af9eda75972', options: null }], databases: [] } }));
    expect(s.cluster.roles[0]!.encrypted_password).toBe('md56b1d16b78004bbd51fa06af9eda75972');
  });

  it('its own output again, unchanged (parsing is idempotent, also through JSON)', () => {
    const once = parseComputeConfig(filledExample());
    expect(once.ok).toBe(true);
    if (!once.ok) return;
    const twice = parseComputeConfig(JSON.parse(JSON.stringify(once.config)));
    expect(twice).toEqual(once);
    const sharded = ok(spec({ mode: { Static: '1/0' }, safekeeper_connstrings: [], pageserver_connstring: 'postgresql://a:1,postgresql://b:1', shard_stripe_size: 8 }));
    expect(ok(JSON.parse(JSON.stringify(sharded)))).toEqual(sharded);
  });
});

describe('parseComputeConfig rejects, naming the field', () => {
  const cases: [string, Record<string, unknown>, RegExp][] = [
    [
      'no pageserver information',
      spec({ pageserver_connstring: undefined }),
      /^pageserver_connection_info: no pageserver information/,
    ],
    [
      'several legacy pageservers without a stripe size',
      spec({ pageserver_connstring: 'postgresql://a:1,postgresql://b:1' }),
      /^shard_stripe_size: 2 pageservers \(a sharded tenant\) but no stripe size/,
    ],
    [
      'a sharded pageserver_connection_info without a stripe size',
      spec({
        pageserver_connstring: undefined,
        pageserver_connection_info: {
          shard_count: 2,
          shards: { '0002': { pageservers: [{ libpq_url: 'postgresql://a:1' }] }, '0102': { pageservers: [{ libpq_url: 'postgresql://b:1' }] } },
        },
      }),
      /^pageserver_connection_info\.stripe_size: required for a sharded tenant/,
    ],
    ['an empty connection string', spec({ pageserver_connstring: '' }), /^pageserver_connstring: empty connection string/],
    ['a non-libpq connection string', spec({ pageserver_connstring: 'http://ps:9898' }), /^pageserver_connstring: not a libpq connection string/],
    [
      'a non-libpq libpq_url',
      spec({ pageserver_connstring: undefined, pageserver_connection_info: { shard_count: 0, shards: { '0000': { pageservers: [{ libpq_url: 'grpc://ps:51051' }] } } } }),
      /^pageserver_connection_info\.shards\.0000\.pageservers\[0\]\.libpq_url: not a libpq connection string/,
    ],
    [
      'a missing shard',
      spec({
        pageserver_connstring: undefined,
        pageserver_connection_info: { shard_count: 2, stripe_size: 8, shards: { '0002': { pageservers: [{ libpq_url: 'postgresql://a:1' }] } } },
      }),
      /^pageserver_connection_info\.shards: shard 0102 is missing/,
    ],
    ['a Primary without safekeepers', spec({ safekeeper_connstrings: [] }), /^safekeeper_connstrings: a Primary compute needs at least one safekeeper/],
    ['duplicate safekeepers', spec({ safekeeper_connstrings: ['sk:1', 'sk:2', 'sk:1'] }), /^safekeeper_connstrings\[2\]: duplicate entry sk:1/],
    ['a missing tenant id', spec({ tenant_id: undefined }), /^tenant_id: required/],
    ['a malformed tenant id', spec({ tenant_id: 'xyz' }), /^tenant_id: must be 32 hex characters/],
    ['a missing timeline id', spec({ timeline_id: undefined }), /^timeline_id: required/],
    ['a malformed timeline id', spec({ timeline_id: `${TIMELINE}00` }), /^timeline_id: must be 32 hex characters/],
    ['a Static LSN that is not X/Y', spec({ mode: { Static: '16B5A50' }, safekeeper_connstrings: [] }), /^mode\.Static: not an LSN/],
    ['an unknown mode', spec({ mode: 'Secondary' }), /^mode: must be "Primary", "Replica" or \{"Static": "X\/Y"\}/],
    ['a string where a number belongs', spec({ suspend_timeout_seconds: '300' }), /^suspend_timeout_seconds: .*expected number/],
    ['a missing format_version', spec({ format_version: undefined }), /^format_version: .*expected number/],
    ['a missing cluster', spec({ cluster: undefined }), /^cluster: .*expected object/],
    ['a role name of the wrong type', spec({ cluster: { roles: [{ name: 5 }], databases: [] } }), /^cluster\.roles\[0\]\.name: .*expected string/],
    [
      'a password that is neither md5 nor SCRAM',
      spec({ cluster: { roles: [{ name: 'r', encrypted_password: 'hunter2-cleartext' }], databases: [] } }),
      /^cluster\.roles\[0\]\.encrypted_password: must be an md5 hash .* or a SCRAM-SHA-256\$… verifier$/,
    ],
    [
      'a SCRAM verifier with truncated keys (PostgreSQL would take it as a clear-text password)',
      spec({ cluster: { roles: [{ name: 'r', encrypted_password: 'SCRAM-SHA-256$4096:c2FsdA==$YWJj:ZGVm' }], databases: [] } }),
      /^cluster\.roles\[0\]\.encrypted_password: must be/,
    ],
    [
      'a rename delta without new_name',
      spec({ delta_operations: [{ action: 'delete_role', name: 'x' }, { action: 'rename_role', name: 'a' }] }),
      /^delta_operations\[1\]\.new_name: required for rename_role/,
    ],
    ['a rename_db without new_name', spec({ delta_operations: [{ action: 'rename_db', name: 'a', new_name: null }] }), /^delta_operations\[0\]\.new_name: required for rename_db/],
    ['an unknown delta action', spec({ delta_operations: [{ action: 'truncate_db', name: 'a' }] }), /^delta_operations\[0\]\.action: must be one of/],
    [
      'a name PostgreSQL would truncate',
      spec({ cluster: { roles: [{ name: 'é'.repeat(32) }], databases: [] } }),
      /^cluster\.roles\[0\]\.name: longer than 63 bytes/,
    ],
    [
      'duplicate databases',
      spec({ cluster: { roles: [], databases: [{ name: 'd', owner: 'a' }, { name: 'd', owner: 'b' }] } }),
      /^cluster\.databases\[1\]\.name: duplicate database "d"/,
    ],
    [
      'an unsupported role option (SQL cannot ride in on an option name)',
      spec({ cluster: { roles: [{ name: 'r', options: [{ name: 'LOGIN; DROP TABLE x', value: null, vartype: 'bool' }] }], databases: [] } }),
      /^cluster\.roles\[0\]\.options\[0\]\.name: unsupported role option/,
    ],
    [
      'a bare database option value that is not a token',
      spec({ cluster: { roles: [], databases: [{ name: 'd', owner: 'a', options: [{ name: 'CONNECTION LIMIT', value: '5; DROP', vartype: 'integer' }] }] } }),
      /^cluster\.databases\[0\]\.options\[0\]\.value: CONNECTION LIMIT must be an integer/,
    ],
    [
      'a setting value that would inject postgresql.conf lines',
      spec({ cluster: { roles: [], databases: [], settings: [{ name: 'work_mem', value: "4MB\nshared_preload_libraries = 'evil'", vartype: 'integer' }] } }),
      /^cluster\.settings\[0\]\.value: must not contain control characters or line breaks \(setting work_mem/,
    ],
    [
      'a non-string setting with spaces',
      spec({ cluster: { roles: [], databases: [], settings: [{ name: 'log_line_prefix', value: '%m %p', vartype: 'enum' }] } }),
      /^cluster\.settings\[0\]\.value: a enum setting must be a single token/,
    ],
    ['a bad setting name', spec({ cluster: { roles: [], databases: [], settings: [{ name: 'a b', value: '1', vartype: 'integer' }] } }), /^cluster\.settings\[0\]\.name: /],
  ];

  for (const [what, json, expected] of cases) {
    it(what, () => {
      const errors = errorsOf(json);
      expect(errors.some((e) => expected.test(e)), `errors were: ${errors.join(' | ')}`).toBe(true);
    });
  }

  describe('strings written into postgresql.conf that hold control characters or line breaks', () => {
    // Each would end the quoted value (or the line) in postgresql.conf and let the rest become
    // settings of its own, or make Postgres refuse the whole file.
    const breakers = ['a\nshared_preload_libraries = evil', 'a\rb', 'a\u0000b', 'a\tb', 'a\u001bb', 'a\u007fb', 'a\u0085b', 'a\u2028b'];
    const settings = (value: string, vartype = 'string') => spec({ cluster: { roles: [], databases: [], settings: [{ name: 'application_name', value, vartype }] } });
    const shard0 = (libpq_url: string) => spec({ pageserver_connstring: undefined, pageserver_connection_info: { shard_count: 0, shards: { '0000': { pageservers: [{ libpq_url }] } } } });
    const fields: [string, (bad: string) => Record<string, unknown>, RegExp][] = [
      ['endpoint_id', (bad) => spec({ endpoint_id: bad }), /^endpoint_id: must not contain control characters or line breaks/],
      ['project_id', (bad) => spec({ project_id: bad }), /^project_id: must not contain control characters or line breaks/],
      ['branch_id', (bad) => spec({ branch_id: bad }), /^branch_id: must not contain control characters or line breaks/],
      ['compute_id', (bad) => spec({ compute_id: bad }), /^compute_id: must not contain control characters or line breaks/],
      ['a key=value pageserver_connstring', (bad) => spec({ pageserver_connstring: `host=ps port=6400 application_name=${bad}` }), /^pageserver_connstring: must not contain control characters or line breaks/],
      ['a URL pageserver_connstring', (bad) => spec({ pageserver_connstring: `postgresql://ps:6400/?application_name=${bad}` }), /^pageserver_connstring: must not contain control characters or line breaks/],
      ['a key=value libpq_url', (bad) => shard0(`host=ps application_name=${bad}`), /^pageserver_connection_info\.shards\.0000\.pageservers\[0\]\.libpq_url: must not contain control characters or line breaks/],
      ['a key=value neon.pageserver_connstring setting', (bad) => spec({ pageserver_connstring: undefined, cluster: { roles: [], databases: [], settings: [{ name: 'neon.pageserver_connstring', value: `host=ps application_name=${bad}`, vartype: 'string' }] } }), /^cluster\.settings\[0\]\.value: must not contain control characters or line breaks/],
      ['a string setting value', (bad) => settings(bad), /^cluster\.settings\[0\]\.value: must not contain control characters or line breaks \(setting application_name/],
      ['a quoted non-string setting value', (bad) => settings(`'${bad}'`, 'enum'), /^cluster\.settings\[0\]\.value: must not contain control characters or line breaks \(setting application_name/],
    ];
    for (const [what, make, expected] of fields) {
      it(`${what}, naming the field`, () => {
        for (const bad of breakers) {
          const errors = errorsOf(make(bad));
          expect(errors.some((e) => expected.test(e)), `${JSON.stringify(bad)}: errors were: ${errors.join(' | ')}`).toBe(true);
        }
      });
    }

    it('while the same fields with ordinary text (spaces, quotes, non-ASCII letters) still parse', () => {
      const parsed = ok(
        spec({
          endpoint_id: 'ep-cool-darkness-123456',
          project_id: 'proj 1',
          branch_id: "br-'quoted'",
          compute_id: 'compute-é',
          pageserver_connstring: "host=ps port=6400 application_name='a b'",
          cluster: { roles: [], databases: [], settings: [{ name: 'application_name', value: "it's fine — ünïcode", vartype: 'string' }] },
        }),
      );
      expect(parsed.endpoint_id).toBe('ep-cool-darkness-123456');
      expect(parsed.cluster.settings?.[0]?.value).toBe("it's fine — ünïcode");
    });
  });

  it('with the spec. prefix when the spec came wrapped in a ComputeConfig', () => {
    expect(errorsOf({ spec: spec({ tenant_id: 'nope' }), compute_ctl_config: {} })).toEqual([expect.stringMatching(/^spec\.tenant_id: must be 32 hex/)]);
    expect(errorsOf({ compute_ctl_config: {} })).toEqual(['spec: required (the compute spec)']);
    expect(errorsOf({ spec: spec(), compute_ctl_config: { jwks: { keys: 'x' } } })[0]).toMatch(/^compute_ctl_config\.jwks\.keys: /);
  });

  it('signing keys that are not public Ed25519 keys, naming the key and the field', () => {
    const x = '11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo';
    const keys = (key: Record<string, unknown>) => errorsOf({ spec: spec(), compute_ctl_config: { jwks: { keys: [{ kty: 'OKP', crv: 'Ed25519', x }, key] } } });
    expect(keys({ kty: 'RSA', n: 'abc', e: 'AQAB' })).toContainEqual(expect.stringMatching(/^compute_ctl_config\.jwks\.keys\[1\]\.kty: must be "OKP"/));
    expect(keys({ kty: 'OKP', crv: 'X25519', x })).toContainEqual(expect.stringMatching(/^compute_ctl_config\.jwks\.keys\[1\]\.crv: must be "Ed25519"/));
    expect(keys({ kty: 'OKP', crv: 'Ed25519', x: 'abc' })).toContainEqual(expect.stringMatching(/^compute_ctl_config\.jwks\.keys\[1\]\.x: must be the 32-byte public key/));
    expect(keys({ kty: 'OKP', crv: 'Ed25519', x, d: x })).toContainEqual(expect.stringMatching(/^compute_ctl_config\.jwks\.keys\[1\]\.d: a private key has no place/));
  });

  it('anything that is not an object', () => {
    for (const json of [null, 42, 'spec', [spec()]]) expect(errorsOf(json)[0]).toMatch(/^\(root\): expected a JSON object/);
  });

  it('never echoing a password or a connection string password in an error', () => {
    const errors = errorsOf(
      spec({ pageserver_connstring: 'http://user:s3cret-pass@ps:1', cluster: { roles: [{ name: 'r', encrypted_password: 'my clear password' }], databases: [] } }),
    );
    expect(errors.join('\n')).not.toMatch(/s3cret-pass|my clear password/);
  });

  it('reporting every problem at once', () => {
    const errors = errorsOf(spec({ tenant_id: 'bad', safekeeper_connstrings: [], delta_operations: [{ action: 'rename_db', name: 'x' }] }));
    expect(errors).toHaveLength(3);
  });
});

describe('parseComputeSpec', () => {
  it('returns the spec alone', () => {
    const parsed = parseComputeSpec(spec());
    expect(parsed.ok && parsed.spec.tenant_id).toBe(TENANT);
  });
});
