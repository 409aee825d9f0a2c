import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { maskSecrets } from '../common/errors';
import { splitPassword } from '../drivers/conninfo';
import { buildImportSpec, decryptSourceConnstring, InvalidImportSpecError, parseImportSpec } from '../drivers/secrets/import-spec';
import { DecryptionError, KeyUnavailableError } from '../drivers/secrets/key-provider';
import { createKmsClient, createKmsKeyProvider } from '../drivers/secrets/kms';
import { createLocalKeyProvider, generateLocalKey, loadLocalKeyFile, parseLocalKey } from '../drivers/secrets/local-aes';

const SOURCE = 'postgresql://importer:s3cr3t-P%40ss@db.example.internal:5432/appdb?sslmode=require';

describe('local AES-256-GCM key provider', () => {
  const key = parseLocalKey(generateLocalKey());
  const provider = createLocalKeyProvider({ main: key, alias: key, other: parseLocalKey(generateLocalKey()) });

  it('round-trips, with a fresh nonce every time', async () => {
    const a = await provider.encrypt(Buffer.from(SOURCE), 'main');
    const b = await provider.encrypt(Buffer.from(SOURCE), 'main');
    expect(a.equals(b)).toBe(false);
    expect(a.includes(Buffer.from('s3cr3t'))).toBe(false);
    expect((await provider.decrypt(a, 'main')).toString()).toBe(SOURCE);
    expect((await provider.decrypt(b, 'main')).toString()).toBe(SOURCE);
  });

  it('rejects tampered, truncated or foreign ciphertext', async () => {
    const good = await provider.encrypt(Buffer.from(SOURCE), 'main');
    for (const index of [0, 5, 20, good.length - 1]) {
      const bad = Buffer.from(good);
      bad[index]! ^= 0x01;
      await expect(provider.decrypt(bad, 'main')).rejects.toBeInstanceOf(DecryptionError);
    }
    await expect(provider.decrypt(good.subarray(0, 20), 'main')).rejects.toThrow(/too short/);
    await expect(provider.decrypt(good, 'other')).rejects.toThrow(/failed authentication/);
    // Same key bytes under another id: the id is authenticated too.
    await expect(provider.decrypt(good, 'alias')).rejects.toBeInstanceOf(DecryptionError);
    await expect(provider.decrypt(good, 'missing')).rejects.toBeInstanceOf(KeyUnavailableError);
  });

  it('loads keys from files as hex or base64 and never echoes a bad key', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'dc-keys-'));
    try {
      const raw = parseLocalKey(generateLocalKey());
      writeFileSync(path.join(dir, 'hex'), `${raw.toString('hex')}\n`);
      writeFileSync(path.join(dir, 'b64'), raw.toString('base64'));
      writeFileSync(path.join(dir, 'short'), 'c2VjcmV0LWJ1dC1zaG9ydA==');
      expect(loadLocalKeyFile(path.join(dir, 'hex')).equals(raw)).toBe(true);
      expect(loadLocalKeyFile(path.join(dir, 'b64')).equals(raw)).toBe(true);
      expect(() => loadLocalKeyFile(path.join(dir, 'short'))).toThrow(/must be 32 bytes/);
      expect(() => loadLocalKeyFile(path.join(dir, 'short'))).not.toThrow(/c2VjcmV0/);
      expect(() => loadLocalKeyFile(path.join(dir, 'absent'))).toThrow(/ENOENT/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('import spec', () => {
  const providers = { Local: createLocalKeyProvider({ k1: parseLocalKey(generateLocalKey()) }) };

  it('carries the connection string only as ciphertext and decrypts it back', async () => {
    const spec = await buildImportSpec({ providers, kind: 'Local', keyId: 'k1', sourceConnstring: SOURCE });
    const text = JSON.stringify(spec);
    expect(text).not.toContain('s3cr3t');
    expect(text).not.toContain('db.example.internal');
    const parsed = parseImportSpec(text);
    expect(parsed.encryption_secret).toEqual({ Local: { key_id: 'k1' } });
    await expect(decryptSourceConnstring(parsed, providers)).resolves.toBe(SOURCE);
  });

  it('names what is wrong with a malformed spec', async () => {
    expect(() => parseImportSpec('{')).toThrow(InvalidImportSpecError);
    expect(() => parseImportSpec(JSON.stringify({ encryption_secret: { KMS: { key_id: 'x' } } }))).toThrow(/source_connstring_ciphertext_base64/);
    expect(() => parseImportSpec(JSON.stringify({ encryption_secret: { Vault: { key_id: 'x' } }, source_connstring_ciphertext_base64: 'AAAA' }))).toThrow(/encryption_secret/);
    expect(() => parseImportSpec(JSON.stringify({ encryption_secret: { KMS: { key_id: 'x' } }, source_connstring_ciphertext_base64: 'not base64!' }))).toThrow(/base64/);
    const kmsSpec = parseImportSpec(JSON.stringify({ encryption_secret: { KMS: { key_id: 'arn:x' } }, source_connstring_ciphertext_base64: 'AAAA' }));
    await expect(decryptSourceConnstring(kmsSpec, providers)).rejects.toThrow(/no KMS key provider/);
  });
});

describe('KMS key provider (against a loopback stand-in that records requests)', () => {
  const requests: { target: string; body: Record<string, string>; authorization: string }[] = [];
  let server: http.Server;
  let endpoint: string;

  beforeAll(async () => {
    server = http.createServer((req, res) => {
      let body = '';
      req.on('data', (d: Buffer) => (body += d.toString()));
      req.on('end', () => {
        const target = String(req.headers['x-amz-target']);
        const parsed = JSON.parse(body) as Record<string, string>;
        requests.push({ target, body: parsed, authorization: String(req.headers.authorization) });
        res.setHeader('content-type', 'application/x-amz-json-1.1');
        if (target === 'TrentService.Encrypt') {
          // "Encrypt" by prefixing a marker, so the decrypt side can tell its own ciphertexts.
          const blob = Buffer.concat([Buffer.from('KMS:'), Buffer.from(parsed.Plaintext!, 'base64')]);
          res.end(JSON.stringify({ CiphertextBlob: blob.toString('base64'), KeyId: parsed.KeyId }));
        } else if (target === 'TrentService.Decrypt') {
          const blob = Buffer.from(parsed.CiphertextBlob!, 'base64');
          if (!blob.subarray(0, 4).equals(Buffer.from('KMS:'))) {
            res.statusCode = 400;
            res.end(JSON.stringify({ __type: 'InvalidCiphertextException', message: 'bad blob' }));
            return;
          }
          res.end(JSON.stringify({ Plaintext: blob.subarray(4).toString('base64'), KeyId: parsed.KeyId }));
        } else {
          res.statusCode = 400;
          res.end(JSON.stringify({ __type: 'UnknownOperationException' }));
        }
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  it('sends signed Encrypt/Decrypt requests naming the key, and maps errors', async () => {
    const client = createKmsClient({ region: 'us-east-1', endpoint, credentials: { accessKeyId: 'AKIDTEST', secretAccessKey: 'test-secret' }, maxAttempts: 1 });
    const provider = createKmsKeyProvider(client);
    const keyId = 'arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab';
    const ciphertext = await provider.encrypt(Buffer.from(SOURCE), keyId);
    expect((await provider.decrypt(ciphertext, keyId)).toString()).toBe(SOURCE);

    expect(requests.map((r) => r.target)).toEqual(['TrentService.Encrypt', 'TrentService.Decrypt']);
    expect(requests[0]!.body).toEqual({ KeyId: keyId, Plaintext: Buffer.from(SOURCE).toString('base64') });
    expect(requests[1]!.body).toEqual({ KeyId: keyId, CiphertextBlob: ciphertext.toString('base64') });
    expect(requests[0]!.authorization).toMatch(/^AWS4-HMAC-SHA256 Credential=AKIDTEST\/\d{8}\/us-east-1\/kms\/aws4_request/);

    await expect(provider.decrypt(Buffer.from('garbage'), keyId)).rejects.toBeInstanceOf(DecryptionError);
    client.destroy();
  });
});

describe('connection strings', () => {
  it('split the password out of URLs and key=value conninfo', () => {
    expect(splitPassword(SOURCE)).toEqual({
      withoutPassword: 'postgresql://importer@db.example.internal:5432/appdb?sslmode=require',
      password: 's3cr3t-P@ss',
    });
    expect(splitPassword('postgres://u@h/db?password=p%26w&sslmode=disable')).toEqual({ withoutPassword: 'postgres://u@h/db?sslmode=disable', password: 'p&w' });
    expect(splitPassword('postgres://h:5433')).toEqual({ withoutPassword: 'postgres://h:5433', password: undefined });
    expect(splitPassword("host=h dbname='my db' password='it\\'s x' user=u")).toEqual({
      withoutPassword: "host='h' dbname='my db' user='u'",
      password: "it's x",
    });
    expect(() => splitPassword('host=h password')).toThrow(/not valid key=value/);
  });

  it('are masked in messages', () => {
    expect(maskSecrets(`pg_dump failed for ${SOURCE}`)).toBe('pg_dump failed for postgresql://importer:********@db.example.internal:5432/appdb?sslmode=require');
    expect(maskSecrets("host=h password='x y' user=u")).not.toContain('x y');
  });
});
