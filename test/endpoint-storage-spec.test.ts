/** The spec's endpoint_storage_addr and endpoint_storage_token: parsed, validated, never echoed. */
import { describe, expect, it } from 'vitest';
import { parseComputeConfig } from '../model/compute-spec';

const TOKEN = 'eyJhbGciOiJFZERTQSJ9.eyJ0ZW5hbnRfaWQiOiJ4In0.c2lnbmF0dXJlLWJ5dGVz';

function spec(over: Record<string, unknown>): Record<string, unknown> {
  return {
    format_version: 1.0,
    suspend_timeout_seconds: 300,
    tenant_id: '3aa8fcc61f6d357410b7de754b1d9001',
    timeline_id: 'de200bd42b49cc1814412c7e592dd6e9',
    pageserver_connstring: 'postgresql://no_user@127.0.0.1:64000',
    safekeeper_connstrings: ['127.0.0.1:5454'],
    cluster: { roles: [], databases: [], settings: [] },
    ...over,
  };
}

function errorsOf(json: unknown): string[] {
  const result = parseComputeConfig(json);
  if (result.ok) throw new Error('expected the spec to be rejected');
  return result.errors;
}

describe('endpoint storage in the spec', () => {
  it('parses an address and a token, kept as given', () => {
    for (const addr of ['127.0.0.1:51243', 'endpoint-storage.local:80', '[::1]:51243']) {
      const result = parseComputeConfig(spec({ endpoint_storage_addr: addr, endpoint_storage_token: TOKEN }));
      if (!result.ok) throw new Error(result.errors.join('; '));
      expect(result.config.spec).toMatchObject({ endpoint_storage_addr: addr, endpoint_storage_token: TOKEN });
    }
  });

  it('refuses an address that is not host:port, naming the field', () => {
    for (const addr of ['http://127.0.0.1:51243', '127.0.0.1', '127.0.0.1:0', '127.0.0.1:70000', 'host/path:80', 'a b:80']) {
      const errors = errorsOf(spec({ endpoint_storage_addr: addr, endpoint_storage_token: TOKEN }));
      expect(errors.some((e) => /^endpoint_storage_addr: must be host:port/.test(e)), `${addr}: ${errors.join(' | ')}`).toBe(true);
    }
  });

  it('refuses a token that is not a JWT without ever quoting it', () => {
    for (const token of ['not-a-jwt-secret', 'a.b', 'a.b.c.d', 'a.b.c\nd', 'x'.repeat(9000) + '.a.b']) {
      const errors = errorsOf(spec({ endpoint_storage_addr: '127.0.0.1:51243', endpoint_storage_token: token }));
      expect(errors.some((e) => /^endpoint_storage_token: must be a JWT .*the value is not shown$/.test(e)), errors.join(' | ')).toBe(true);
      expect(errors.join('\n')).not.toContain(token.slice(0, 12));
    }
  });

  it('refuses one without the other', () => {
    expect(errorsOf(spec({ endpoint_storage_addr: '127.0.0.1:51243' }))).toContainEqual(expect.stringMatching(/^endpoint_storage_token: required with endpoint_storage_addr/));
    expect(errorsOf(spec({ endpoint_storage_token: TOKEN }))).toContainEqual(expect.stringMatching(/^endpoint_storage_addr: required with endpoint_storage_token/));
  });
});
