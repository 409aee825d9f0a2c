/** The compute API's key sources and claim rules, without a stack: real Ed25519 keys and tokens. */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { exportJWK, generateKeyPair, SignJWT, type JWTPayload } from 'jose';
import { afterAll, describe, expect, it } from 'vitest';
import { readJwksFile, workflowApiKeys, type JwkSet } from '../workers/compute-http/api-keys';
import { bearerToken, checkClaims } from '../workers/compute-http/auth';

async function keyPair() {
  const { privateKey, publicKey } = await generateKeyPair('EdDSA', { crv: 'Ed25519' });
  const jwk = (await exportJWK(publicKey)) as Record<string, unknown>;
  const sign = (claims: JWTPayload) => new SignJWT(claims).setProtectedHeader({ alg: 'EdDSA' }).setExpirationTime('5m').sign(privateKey);
  return { jwk, sign };
}

describe('compute API keys', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'dc-jwks-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('--jwks-file: verifies with its keys and refuses a file with a private key or a bad key, naming the field', async () => {
    const a = await keyPair();
    const file = path.join(dir, 'jwks.json');
    writeFileSync(file, JSON.stringify({ keys: [a.jwk] }));
    const keys = await (await readJwksFile(file)).current();
    expect(keys.size).toBe(1);
    expect((await keys.verify(await a.sign({ compute_id: 'c1' }))).compute_id).toBe('c1');

    writeFileSync(file, JSON.stringify({ keys: [{ ...a.jwk, d: a.jwk.x }] }));
    await expect(readJwksFile(file)).rejects.toThrow(/keys\[0\]\.d: a private key has no place/);
    writeFileSync(file, JSON.stringify({ keys: [{ kty: 'RSA', n: 'x', e: 'AQAB' }] }));
    await expect(readJwksFile(file)).rejects.toThrow(/keys\[0\]\.kty: must be "OKP"/);
    writeFileSync(file, '{"keys": [');
    await expect(readJwksFile(file)).rejects.toThrow(/cannot read the key set/);
  });

  it("the workflow's keys: cached, re-read after invalidate, never dropped to none once seen, refused (503) when unreadable", async () => {
    const a = await keyPair();
    const b = await keyPair();
    let served: JwkSet | Error = { keys: [] };
    let loads = 0;
    const source = workflowApiKeys(async () => {
      loads++;
      if (served instanceof Error) throw served;
      return served;
    }, 60_000);

    expect((await source.current()).size).toBe(0);
    served = { keys: [a.jwk] };
    expect((await source.current()).size).toBe(0); // cached
    source.invalidate();
    expect((await source.current()).size).toBe(1);
    expect(loads).toBe(2);

    // A configure without keys does not switch authentication off.
    served = { keys: [] };
    source.invalidate();
    const kept = await source.current();
    expect(kept.size).toBe(1);
    await expect(kept.verify(await b.sign({ compute_id: 'c1' }))).rejects.toMatchObject({ status: 401 });

    // Rotation: a new non-empty set replaces the old one.
    served = { keys: [b.jwk] };
    source.invalidate();
    expect((await (await source.current()).verify(await b.sign({ compute_id: 'c1' }))).compute_id).toBe('c1');

    // Unreadable with keys cached: the cached keys; with none cached: 503, never "no auth".
    served = new Error('Temporal unreachable');
    source.invalidate();
    expect((await source.current()).size).toBe(1);
    const cold = workflowApiKeys(() => Promise.reject(new Error('Temporal unreachable')));
    await expect(cold.current()).rejects.toMatchObject({ status: 503 });
  });

  it("applies compute_ctl's header and claim rules", () => {
    expect(() => bearerToken(undefined)).toThrow(expect.objectContaining({ status: 400 }));
    expect(() => bearerToken('Basic abc')).toThrow(expect.objectContaining({ status: 400 }));
    expect(bearerToken('Bearer a.b.c')).toBe('a.b.c');
    expect(() => checkClaims({ compute_id: 'c1' }, 'c1')).not.toThrow();
    expect(() => checkClaims({ compute_id: 'c2' }, 'c1')).toThrow(expect.objectContaining({ status: 403 }));
    expect(() => checkClaims({}, 'c1')).toThrow(expect.objectContaining({ status: 403, message: expect.stringMatching(/missing compute_id/) }));
    expect(() => checkClaims({ scope: 'compute_ctl:admin', aud: 'compute' }, 'c1')).not.toThrow();
    expect(() => checkClaims({ scope: 'compute_ctl:admin', aud: ['compute', 'x'] }, 'c1')).not.toThrow();
    expect(() => checkClaims({ scope: 'compute_ctl:admin' }, 'c1')).toThrow(expect.objectContaining({ status: 401 }));
    expect(() => checkClaims({ scope: 'compute_ctl:admin', aud: ['pageserver'] }, 'c1')).toThrow(expect.objectContaining({ status: 401 }));
  });
});
