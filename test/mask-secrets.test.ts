import { describe, expect, it } from 'vitest';
import { maskSecrets } from '../common/errors';

describe('maskSecrets', () => {
  it('masks bearer tokens, Authorization headers and JSON secret fields, besides connection strings', () => {
    const cases: [string, string][] = [
      ['GET /v1/tenant failed; Authorization: Bearer sk-abc.DEF_123', 'sk-abc.DEF_123'],
      ['request headers: { authorization: "Bearer tok-777" }', 'tok-777'],
      ['retrying with bearer zz9-token', 'zz9-token'],
      ['{"name":"alice","password":"hunter2","user":"x"}', 'hunter2'],
      ['{ "storage_auth_token": "st-secret-1", "ok": true }', 'st-secret-1'],
      ['{"secretAccessKey":"S3-SECRET-9","accessKeyId":"AK"}', 'S3-SECRET-9'],
      ["inspected: { endpoint_storage_token: 'ep-secret-2' }", 'ep-secret-2'],
      ['postgresql://importer:pw-in-url@127.0.0.1:5432/db', 'pw-in-url'],
      ["host=127.0.0.1 password='pw in conninfo' user=x", 'pw in conninfo'],
    ];
    for (const [text, secret] of cases) {
      const masked = maskSecrets(text);
      expect(masked, text).not.toContain(secret);
      expect(masked, text).toContain('********');
    }
    // What is not a secret stays readable.
    expect(maskSecrets('{"accessKeyId":"AK","status":"running","tokens_used":5}')).toBe('{"accessKeyId":"AK","status":"running","tokens_used":5}');
  });
});
