import { randomBytes } from 'node:crypto';
import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { defaultPayloadConverter, type Payload } from '@temporalio/common';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { anyOf, fixedTokenAuth, jwtAuth, tokenFileAuth } from '../client/codec-auth';
import { payloadsToJson, startCodecServer } from '../client/codec-server';
import { encryptedDataConverter } from '../common/codec/data-converter';
import { EncryptionCodec, payloadKeyId } from '../common/codec/encryption-codec';
import { freePort } from '../dev/processes';
import { runCli } from './helpers/cli';
import { killAllProcesses, startProcess } from '../dev/child-processes';

const UI = 'http://127.0.0.1:8233';
const previousKey = randomBytes(32);
const currentKey = randomBytes(32);
const token = randomBytes(24).toString('hex');
/** What the workers use: the data converter's codec with the same keys. */
const workerCodec = encryptedDataConverter({ current: currentKey, previous: [previousKey] }).payloadCodecs![0]!;
const oldWorkerCodec = new EncryptionCodec(previousKey);

const plain = (value: unknown): Payload => defaultPayloadConverter.toPayload(value);
const valueOf = (p: Payload): unknown => defaultPayloadConverter.fromPayload(p);

describe('codec server (in process, real HTTP)', () => {
  let url: string;
  let close: () => Promise<void>;
  const post = (route: string, body: string, headers: Record<string, string> = {}) =>
    fetch(`${url}${route}`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${token}`, ...headers }, body });

  beforeAll(async () => {
    ({ url, close } = await startCodecServer({
      host: '127.0.0.1',
      port: 0,
      codec: workerCodec,
      auth: fixedTokenAuth(token),
      allowedOrigins: [UI],
      maxBodyBytes: 64 * 1024,
    }));
  });
  afterAll(async () => close());

  it('decodes what the workers encrypted, and the workers decode what it encodes', async () => {
    const status = { status: 'running', tenant: 'a'.repeat(32) };
    const fromWorker = await workerCodec.encode([plain(status), plain('watch Postgres')]);
    const res = await post('/decode', JSON.stringify(payloadsToJson(fromWorker)), { 'x-namespace': 'default' });
    expect(res.status).toBe(200);
    const decoded = (await res.json()) as { payloads: { metadata: Record<string, string>; data: string }[] };
    expect(decoded.payloads.map((p) => Buffer.from(p.metadata.encoding!, 'base64').toString())).toEqual(['json/plain', 'json/plain']);
    expect(decoded.payloads.map((p) => JSON.parse(Buffer.from(p.data, 'base64').toString()))).toEqual([status, 'watch Postgres']);

    const encodedRes = await post('/encode', JSON.stringify(payloadsToJson([plain({ hello: 'world' })])));
    expect(encodedRes.status).toBe(200);
    const encoded = (await encodedRes.json()) as { payloads: { metadata: Record<string, string>; data: string }[] };
    expect(Buffer.from(encoded.payloads[0]!.metadata.encoding!, 'base64').toString()).toBe('binary/encrypted');
    expect(Buffer.from(encoded.payloads[0]!.data, 'base64').toString()).not.toContain('world');
    const back = await workerCodec.decode(
      encoded.payloads.map((p) => ({
        metadata: Object.fromEntries(Object.entries(p.metadata).map(([k, v]) => [k, Buffer.from(v, 'base64')])),
        data: Buffer.from(p.data, 'base64'),
      })),
    );
    expect(valueOf(back[0]!)).toEqual({ hello: 'world' });
  });

  it('decodes payloads written under a previous key, and names a key it does not have', async () => {
    const old = await oldWorkerCodec.encode([plain('before the rotation')]);
    const res = await post('/decode', JSON.stringify(payloadsToJson(old)));
    const body = (await res.json()) as { payloads: { data: string }[] };
    expect(JSON.parse(Buffer.from(body.payloads[0]!.data, 'base64').toString())).toBe('before the rotation');

    const stranger = randomBytes(32);
    const foreign = await new EncryptionCodec(stranger).encode([plain('secret')]);
    const refused = await post('/decode', JSON.stringify(payloadsToJson(foreign)));
    expect(refused.status).toBe(400);
    const text = await refused.text();
    expect(text).toContain(`payloads[0] cannot be decoded`);
    expect(text).toContain(payloadKeyId(stranger));
    expect(text).not.toContain('secret');
  });

  it('returns payloads that are not encrypted as they are', async () => {
    const clear = plain('in clear');
    const res = await post('/decode', JSON.stringify(payloadsToJson([clear])));
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual(payloadsToJson([clear]));
  });

  it('refuses calls without the bearer token or with a wrong one (401)', async () => {
    const body = JSON.stringify(payloadsToJson(await workerCodec.encode([plain('x')])));
    for (const authorization of [undefined, 'Bearer wrong-token', `Basic ${token}`, `Bearer ${token}x`]) {
      const res = await fetch(`${url}/decode`, { method: 'POST', headers: authorization ? { authorization } : {}, body });
      expect(res.status).toBe(401);
      expect(res.headers.get('www-authenticate')).toBe('Bearer');
      expect(await res.text()).not.toContain('"payloads"');
    }
    expect((await fetch(`${url}/encode`, { method: 'POST', body: '{"payloads":[]}' })).status).toBe(401);
  });

  it("answers the Web UI's CORS preflight for its origin only, without a token", async () => {
    const preflight = (origin: string) =>
      fetch(`${url}/decode`, {
        method: 'OPTIONS',
        headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization,content-type,x-namespace' },
      });
    const ok = await preflight(UI);
    expect(ok.status).toBe(204);
    expect(ok.headers.get('access-control-allow-origin')).toBe(UI);
    expect(ok.headers.get('access-control-allow-credentials')).toBe('true');
    expect(ok.headers.get('access-control-allow-methods')).toContain('POST');
    const allowedHeaders = ok.headers.get('access-control-allow-headers')!.toLowerCase();
    for (const h of ['authorization', 'content-type', 'x-namespace']) expect(allowedHeaders).toContain(h);
    expect(ok.headers.get('vary')).toContain('Origin');

    const other = await preflight('https://evil.example.com');
    expect(other.status).toBe(403);
    expect(other.headers.get('access-control-allow-origin')).toBeNull();
    // A page of another origin is refused even with the token, not merely kept from reading.
    const cross = await post('/decode', '{"payloads":[]}', { origin: 'https://evil.example.com' });
    expect(cross.status).toBe(403);
    const fromUi = await post('/decode', '{"payloads":[]}', { origin: UI });
    expect(fromUi.status).toBe(200);
    expect(fromUi.headers.get('access-control-allow-origin')).toBe(UI);
  });

  it('answers bad input with 400 naming the problem, 413, 404 and 405, and keeps serving', async () => {
    const bad = async (body: string) => {
      const res = await post('/decode', body);
      return { status: res.status, message: ((await res.json()) as { message: string }).message };
    };
    expect(await bad('{"payloads": [')).toMatchObject({ status: 400, message: expect.stringMatching(/^the body is not valid JSON/) });
    expect(await bad('[1,2]')).toMatchObject({ status: 400, message: expect.stringContaining('{"payloads": [...]}') });
    expect(await bad('{"payloads": {}}')).toEqual({ status: 400, message: 'payloads must be an array' });
    expect(await bad('{"payloads": [{"data": "not base64!"}]}')).toEqual({ status: 400, message: 'payloads[0].data must be a base64 string' });
    expect(await bad('{"payloads": [{"metadata": {"encoding": 7}}]}')).toEqual({ status: 400, message: 'payloads[0].metadata.encoding must be a base64 string' });
    expect(await bad('{"payloads": [null]}')).toEqual({ status: 400, message: 'payloads[0] must be an object' });

    const big = JSON.stringify({ payloads: [{ data: Buffer.alloc(100 * 1024).toString('base64') }] });
    const tooBig = await post('/decode', big).catch((err: Error) => err);
    // The server answers before reading the rest, then drops the connection.
    if (tooBig instanceof Error) throw new Error(`no 413 answer: ${tooBig.message}`);
    expect(tooBig.status).toBe(413);

    expect((await post('/nothing-here', '{}')).status).toBe(404);
    expect((await fetch(`${url}/decode`, { headers: { authorization: `Bearer ${token}` } })).status).toBe(405);
    // Only the last path segment counts, so a proxy may mount it under a prefix.
    expect((await post('/prefix/default/decode', '{"payloads":[]}')).status).toBe(200);
    expect((await fetch(`${url}/health`)).status).toBe(200);
  });
});

describe('durable-compute codec-server (the CLI command)', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'dc-codec-'));
  const tokenFile = path.join(dir, 'codec.token');
  // No running dev stack in this directory: every setting comes from the environment, as in production.
  const env = {
    DURABLE_COMPUTE_STACK_DIR: path.join(dir, 'no-stack'),
    DURABLE_COMPUTE_PAYLOAD_KEY: currentKey.toString('base64'),
    DURABLE_COMPUTE_PAYLOAD_PREVIOUS_KEYS: previousKey.toString('base64'),
    DURABLE_COMPUTE_CODEC_TOKEN: '',
    DURABLE_COMPUTE_CODEC_TOKEN_FILE: '',
    DURABLE_COMPUTE_CODEC_ALLOWED_ORIGINS: '',
  };
  beforeAll(() => writeFileSync(tokenFile, `${token}\n`, { mode: 0o600 }));
  afterAll(async () => {
    await killAllProcesses();
    rmSync(dir, { recursive: true, force: true });
  });

  it("serves with the workers' keys from the environment and the token from a file", async () => {
    const port = await freePort();
    await startProcess('bin/durable-compute.mjs', ['codec-server', '--listen', `127.0.0.1:${port}`, '--allow-origin', UI], {
      env: { ...env, DURABLE_COMPUTE_CODEC_TOKEN_FILE: tokenFile },
      readyLine: /codec server ready/,
    });
    const both = [...(await workerCodec.encode([plain('current key')])), ...(await oldWorkerCodec.encode([plain('previous key')]))];
    const res = await fetch(`http://127.0.0.1:${port}/decode`, { method: 'POST', headers: { authorization: `Bearer ${token}` }, body: JSON.stringify(payloadsToJson(both)) });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { payloads: { data: string }[] };
    expect(body.payloads.map((p) => JSON.parse(Buffer.from(p.data, 'base64').toString()))).toEqual(['current key', 'previous key']);
    expect((await fetch(`http://127.0.0.1:${port}/decode`, { method: 'POST', body: '{}' })).status).toBe(401);
  });

  it('refuses to start without a token, and without one anywhere but on loopback', async () => {
    const noToken = await runCli(['codec-server', '--listen', '127.0.0.1:0'], { env });
    expect(noToken.code).not.toBe(0);
    expect(noToken.stderr).toContain('demands access tokens: set DURABLE_COMPUTE_CODEC_TOKEN_FILE');
    const open = await runCli(['codec-server', '--listen', '0.0.0.0:0', '--dev-no-auth'], { env });
    expect(open.code).not.toBe(0);
    expect(open.stderr).toContain('--dev-no-auth is only allowed on a loopback address');
    const badOrigin = await runCli(['codec-server', '--listen', '127.0.0.1:0', '--dev-no-auth', '--allow-origin', 'http://ui.example.com/path'], { env });
    expect(badOrigin.code).not.toBe(0);
    expect(badOrigin.stderr).toContain('Invalid --allow-origin "http://ui.example.com/path"');
    const halfJwt = await runCli(['codec-server', '--listen', '127.0.0.1:0', '--jwks-url', 'https://idp.example.com/jwks.json'], { env });
    expect(halfJwt.code).not.toBe(0);
    expect(halfJwt.stderr).toContain('--jwks-url, --jwt-issuer and --jwt-audience go together');
    const clearJwks = await runCli(['codec-server', '--listen', '127.0.0.1:0', '--jwks-url', 'http://idp.example.com/jwks.json', '--jwt-issuer', 'x', '--jwt-audience', 'y'], { env });
    expect(clearJwks.code).not.toBe(0);
    expect(clearJwks.stderr).toContain('--jwks-url must be https:// (plain http only on loopback)');
  });
});

describe('codec server auth: a token file reloaded on change, and JWTs against a JWKS', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'dc-codec-auth-'));
  const tokenFile = path.join(dir, 'codec.tokens');
  const script = randomBytes(24).toString('hex');
  const operator = randomBytes(24).toString('hex');
  const ISSUER = 'https://idp.example.com/';
  const AUDIENCE = 'temporal-ui';
  let url: string;
  let close: () => Promise<void>;
  let jwks: http.Server;
  type SigningKey = Awaited<ReturnType<typeof generateKeyPair>>['privateKey'];
  let signer: SigningKey;
  const logged: string[] = [];
  const decode = (authorization?: string) =>
    fetch(`${url}/decode`, { method: 'POST', headers: authorization ? { authorization } : {}, body: JSON.stringify(payloadsToJson([])) }).then((r) => r.status);
  const jwt = (claims: { iss?: string; aud?: string; exp?: string | number } = {}, key: SigningKey = signer) =>
    new SignJWT({ sub: 'operator@example.com' })
      .setProtectedHeader({ alg: 'EdDSA', kid: 'idp-1' })
      .setIssuer(claims.iss ?? ISSUER)
      .setAudience(claims.aud ?? AUDIENCE)
      .setIssuedAt()
      .setExpirationTime(claims.exp ?? '5m')
      .sign(key);

  beforeAll(async () => {
    // The identity provider's JWKS, served over real HTTP as an IdP's jwks_uri is.
    const { publicKey, privateKey } = await generateKeyPair('EdDSA', { crv: 'Ed25519' });
    signer = privateKey;
    const body = JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid: 'idp-1', alg: 'EdDSA', use: 'sig' }] });
    jwks = http.createServer((_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end(body));
    await new Promise<void>((resolve) => jwks.listen(0, '127.0.0.1', resolve));
    writeFileSync(tokenFile, `# scripts allowed to decode\n${script}\n\n${operator}  \n`, { mode: 0o600 });
    ({ url, close } = await startCodecServer({
      host: '127.0.0.1',
      port: 0,
      codec: workerCodec,
      auth: anyOf([
        tokenFileAuth(tokenFile, (l) => logged.push(l)),
        jwtAuth({ jwks: new URL(`http://127.0.0.1:${(jwks.address() as AddressInfo).port}/jwks.json`), issuer: ISSUER, audience: AUDIENCE }),
      ]),
      allowedOrigins: [UI],
    }));
  });
  afterAll(async () => {
    await close();
    await new Promise((resolve) => jwks.close(resolve));
    rmSync(dir, { recursive: true, force: true });
  });

  it('accepts each listed token, refuses a missing or unknown one (401)', async () => {
    expect(await decode(`Bearer ${script}`)).toBe(200);
    expect(await decode(`Bearer ${operator}`)).toBe(200);
    expect(await decode()).toBe(401);
    expect(await decode(`Bearer ${randomBytes(24).toString('hex')}`)).toBe(401);
    expect(await decode('Bearer # scripts allowed to decode')).toBe(401);
    expect(logged.join('\n')).toContain('2 token(s)');
    expect(logged.join('\n')).not.toContain(script);
  });

  it('stops accepting a revoked token on the next request, without a restart', async () => {
    writeFileSync(tokenFile, `${operator}\n`);
    expect(await decode(`Bearer ${script}`)).toBe(401);
    expect(await decode(`Bearer ${operator}`)).toBe(200);
    // An atomic replace (a new file renamed over it), as config management writes.
    writeFileSync(`${tokenFile}.new`, `${script}\n`);
    renameSync(`${tokenFile}.new`, tokenFile);
    expect(await decode(`Bearer ${operator}`)).toBe(401);
    expect(await decode(`Bearer ${script}`)).toBe(200);
    // A file that cannot be read any more refuses everyone (fails closed), and says so.
    rmSync(tokenFile);
    expect(await decode(`Bearer ${script}`)).toBe(401);
    expect(logged.join('\n')).toContain('cannot be read (ENOENT): refusing every token');
    writeFileSync(tokenFile, `${script}\n`);
    expect(await decode(`Bearer ${script}`)).toBe(200);
  });

  it("accepts the identity provider's JWT for the right issuer and audience; refuses others", async () => {
    expect(await decode(`Bearer ${await jwt()}`)).toBe(200);
    expect(await decode(`Bearer ${await jwt({ aud: 'another-app' })}`)).toBe(401);
    expect(await decode(`Bearer ${await jwt({ iss: 'https://evil.example.com/' })}`)).toBe(401);
    expect(await decode(`Bearer ${await jwt({ exp: Math.floor(Date.now() / 1000) - 60 })}`)).toBe(401);
    const stranger = await generateKeyPair('EdDSA', { crv: 'Ed25519' });
    expect(await decode(`Bearer ${await jwt({}, stranger.privateKey)}`)).toBe(401);
  });

  it('refuses a token file without any token at startup, naming the line', () => {
    const bad = path.join(dir, 'bad.tokens');
    writeFileSync(bad, '# nothing yet\n');
    expect(() => tokenFileAuth(bad)).toThrow(`the codec token file ${bad} lists no token`);
    writeFileSync(bad, `${script}\nshort-secret\n`);
    expect(() => tokenFileAuth(bad)).toThrow(`line 2 of the codec token file ${bad} is not one token`);
    expect(() => tokenFileAuth(path.join(dir, 'absent'))).toThrow('cannot be read (ENOENT)');
  });
});
