/**
 * The dev endpoint storage stand-in (dev/endpoint-storage): the one the test stack started, and
 * one started here with a small upload limit. Objects go through it into the stack's s3rver.
 */
import http from 'node:http';
import { generateKeyPairSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { GetObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inject } from 'vitest';
import { createS3Client } from '../drivers/s3/client';
import { devS3Credentials } from '../dev/stack';
import { devEndpointStoragePublicKeyFile, mintDevEndpointStorageToken, mintEndpointStorageToken, type EndpointStorageClaims } from '../dev/endpoint-storage/keys';
import { normalizeKey, startEndpointStorage, type RunningEndpointStorage } from '../dev/endpoint-storage/server';
import { runCli } from './helpers/cli';
import { neonId, uniqueId } from './helpers/ids';

interface Reply {
  status: number;
  body: Buffer;
}

/** A raw HTTP request: the path goes out exactly as written (fetch would resolve `..` itself). */
function request(base: string, method: string, path: string, opts: { token?: string; body?: Buffer } = {}): Promise<Reply> {
  const url = new URL(base);
  return new Promise((resolve, reject) => {
    const req = http.request({ host: url.hostname, port: url.port, method, path, headers: opts.token ? { authorization: `Bearer ${opts.token}` } : {} }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(opts.body);
  });
}

const stack = () => inject('stack');
let s3: S3Client;

beforeAll(() => {
  const { s3: endpoint } = stack();
  s3 = createS3Client({ endpoint: endpoint.endpoint, region: endpoint.region, bucket: endpoint.bucket, forcePathStyle: true, credentials: devS3Credentials() });
});
afterAll(() => s3?.destroy());

describe('normalizeKey (Neon endpoint storage key rules)', () => {
  it.each([
    ['lfc_state', 'lfc_state'],
    ['a/b/../c', 'a/c'],
    ['./a//b/.', 'a/b'],
    ['/a/b', 'a/b'],
    ['x/y/../../z', 'z'],
    // At the root, `..` has nowhere to go and is dropped.
    ['/../a', 'a'],
  ])('%s -> %s', (key, expected) => expect(normalizeKey(key)).toBe(expected));

  it.each(['', '.', '/', '..', '../x', 'a/../..', 'a/../../b', '/a/../..//'])('refuses %j', (key) => expect(normalizeKey(key)).toBeUndefined());
});

describe('the stack\'s endpoint storage', () => {
  const tenant = neonId();
  const timeline = neonId();
  const endpoint = uniqueId('ep');
  const other = uniqueId('ep');
  const mine: EndpointStorageClaims = { tenant_id: tenant, timeline_id: timeline, endpoint_id: endpoint };
  const token = (claims: EndpointStorageClaims = mine, ttl?: number) => mintDevEndpointStorageToken(stack().stackDir, claims, ttl);
  const url = () => stack().endpointStorage.url;
  const objectPath = (ep = endpoint, key = 'lfc_state') => `/${tenant}/${timeline}/${ep}/${key}`;

  it('answers /status and /metrics without a token', async () => {
    expect((await request(url(), 'GET', '/status')).status).toBe(200);
    const metrics = await request(url(), 'GET', '/metrics');
    expect(metrics.status).toBe(200);
    expect(metrics.body.toString()).toMatch(/^endpoint_storage_requests_total \d+$/m);
  });

  it('stores a PUT in S3 under <tenant>/<timeline>/<endpoint>/<key>, returns it on GET, 404 with the key once deleted', async () => {
    const body = Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 1, 2, 3]);
    expect((await request(url(), 'PUT', objectPath(), { token: await token(), body })).status).toBe(200);
    const stored = await s3.send(new GetObjectCommand({ Bucket: stack().s3.bucket, Key: `endpoint-storage/${tenant}/${timeline}/${endpoint}/lfc_state` }));
    expect(Buffer.from(await stored.Body!.transformToByteArray())).toEqual(body);
    const got = await request(url(), 'GET', objectPath(), { token: await token() });
    expect(got).toEqual({ status: 200, body });
    expect((await request(url(), 'DELETE', objectPath(), { token: await token() })).status).toBe(200);
    const gone = await request(url(), 'GET', objectPath(), { token: await token() });
    expect(gone.status).toBe(404);
    expect(gone.body.toString()).toBe(`endpoint-storage/${tenant}/${timeline}/${endpoint}/lfc_state`);
  });

  it('gives 403 to a token for another endpoint on PUT and DELETE, and to one for another timeline on GET; reads within the timeline are allowed', async () => {
    const theirs = await token({ ...mine, endpoint_id: other });
    const body = Buffer.from('state');
    expect((await request(url(), 'PUT', objectPath(), { token: theirs, body })).status).toBe(403);
    expect((await request(url(), 'DELETE', objectPath(), { token: theirs })).status).toBe(403);
    expect((await request(url(), 'PUT', objectPath(), { token: await token(), body })).status).toBe(200);
    // As in Neon: a compute of the same timeline may read another endpoint's state (replica -> primary prewarm).
    expect(await request(url(), 'GET', objectPath(), { token: theirs })).toEqual({ status: 200, body });
    const otherTimeline = await token({ ...mine, timeline_id: neonId() });
    expect((await request(url(), 'GET', objectPath(), { token: otherTimeline })).status).toBe(403);
    const otherTenant = await token({ ...mine, tenant_id: neonId() });
    expect((await request(url(), 'PUT', objectPath(), { token: otherTenant, body })).status).toBe(403);
    // The object is unchanged by the refused writes.
    expect((await request(url(), 'GET', objectPath(), { token: await token() })).body).toEqual(body);
  });

  it('gives 400 to a key that climbs out of the endpoint, plain or percent-encoded, and stores a key that stays inside under its cleaned name', async () => {
    const t = await token();
    const body = Buffer.from('x');
    for (const key of ['../' + other + '/lfc_state', '..%2F..%2Fescape', '%2e%2e/%2e%2e/%2e%2e/etc', 'a/../../b', '.']) {
      const reply = await request(url(), 'PUT', objectPath(endpoint, key), { token: t, body });
      expect(reply.status, key).toBe(400);
      expect(reply.body.toString(), key).toMatch(/^invalid key/);
    }
    expect((await request(url(), 'GET', objectPath(endpoint, '../../../x'), { token: t })).status).toBe(400);
    expect((await request(url(), 'PUT', objectPath(endpoint, 'dir/../inside'), { token: t, body })).status).toBe(200);
    expect(await request(url(), 'GET', objectPath(endpoint, 'inside'), { token: t })).toEqual({ status: 200, body });
    // An endpoint segment of '..' is no endpoint.
    expect((await request(url(), 'PUT', `/${tenant}/${timeline}/../lfc_state`, { token: t, body })).status).toBe(400);
  });

  it('gives 400 without a token, with a token signed by another key, with an expired one, and for bad IDs', async () => {
    expect((await request(url(), 'GET', objectPath())).status).toBe(400);
    const foreignKey = generateKeyPairSync('ed25519', { privateKeyEncoding: { type: 'pkcs8', format: 'pem' }, publicKeyEncoding: { type: 'spki', format: 'pem' } });
    expect((await request(url(), 'GET', objectPath(), { token: await mintEndpointStorageToken(foreignKey.privateKey, mine) })).status).toBe(400);
    expect((await request(url(), 'GET', objectPath(), { token: await token(mine, -60) })).status).toBe(400);
    expect((await request(url(), 'GET', `/not-a-tenant/${timeline}/${endpoint}/lfc_state`, { token: await token() })).status).toBe(400);
  });

  it('deletes a prefix only with claims naming exactly that prefix', async () => {
    const t = await token();
    for (const key of ['a', 'b/c']) expect((await request(url(), 'PUT', objectPath(endpoint, key), { token: t, body: Buffer.from(key) })).status).toBe(200);
    expect((await request(url(), 'DELETE', `/${tenant}/${timeline}/${endpoint}`, { token: await token({ ...mine, endpoint_id: other }) })).status).toBe(403);
    expect((await request(url(), 'DELETE', `/${tenant}/${timeline}/${endpoint}`, { token: t })).status).toBe(200);
    for (const key of ['a', 'b/c']) expect((await request(url(), 'GET', objectPath(endpoint, key), { token: t })).status).toBe(404);
  });
});

describe('durable-compute dev endpoint-storage-token', () => {
  it("signs a token with the stack's key that the stand-in takes for that endpoint only, and refuses bad IDs", async () => {
    const [tenant, timeline, endpoint] = [neonId(), neonId(), uniqueId('ep')];
    const ids = ['--tenant-id', tenant, '--timeline-id', timeline, '--endpoint-id', endpoint];
    const minted = await runCli(['dev', 'endpoint-storage-token', '--dir', stack().stackDir, ...ids]);
    expect(minted.code, minted.stderr).toBe(0);
    const token = minted.stdout.trim();
    const statePath = `/${tenant}/${timeline}/${endpoint}/lfc_state`;
    expect((await request(stack().endpointStorage.url, 'PUT', statePath, { token, body: Buffer.from('s') })).status).toBe(200);
    expect((await request(stack().endpointStorage.url, 'PUT', `/${tenant}/${timeline}/${uniqueId('ep')}/lfc_state`, { token, body: Buffer.from('s') })).status).toBe(403);
    const bad = await runCli(['dev', 'endpoint-storage-token', '--dir', stack().stackDir, '--tenant-id', 'nope', '--timeline-id', timeline, '--endpoint-id', endpoint]);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/--tenant-id must be 32 hex digits/);
  });
});

describe('an endpoint storage with a small upload limit', () => {
  let running: RunningEndpointStorage;
  const claims: EndpointStorageClaims = { tenant_id: neonId(), timeline_id: neonId(), endpoint_id: uniqueId('ep') };
  const path = `/${claims.tenant_id}/${claims.timeline_id}/${claims.endpoint_id}/lfc_state`;

  beforeAll(async () => {
    running = await startEndpointStorage({
      host: '127.0.0.1',
      port: 0,
      publicKeyPem: readFileSync(devEndpointStoragePublicKeyFile(stack().stackDir), 'utf8'),
      s3,
      bucket: stack().s3.bucket,
      prefix: uniqueId('es-limit'),
      maxUploadBytes: 1024,
    });
  });
  afterAll(() => running?.close());

  it('refuses a body over the limit with 400 and keeps one at the limit', async () => {
    const token = await mintDevEndpointStorageToken(stack().stackDir, claims);
    expect((await request(running.url, 'PUT', path, { token, body: Buffer.alloc(1025) })).status).toBe(400);
    expect((await request(running.url, 'PUT', path, { token, body: Buffer.alloc(1024, 7) })).status).toBe(200);
    expect((await request(running.url, 'GET', path, { token })).body).toEqual(Buffer.alloc(1024, 7));
  });
});
