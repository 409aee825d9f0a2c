/**
 * The KMS path of the import spec against moto's KMS emulation (started by the global setup),
 * not only against the request-recording stand-in of importer-secrets.test.ts: the client side
 * encrypts the source connection string under the configured KMS key, spec.json goes through S3
 * (moto's too), the importer decrypts it with its own providers, and a spec naming another key
 * is refused permanently.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CreateKeyCommand, KMSClient, ScheduleKeyDeletionCommand } from '@aws-sdk/client-kms';
import { PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { ApplicationFailure } from '@temporalio/common';
import { MockActivityEnvironment } from '@temporalio/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { importKeyProviders, specKeyOf } from '../drivers/secrets/import-keys';
import { createImporterActivities } from '../activities/importer/activities';
import { createS3Client } from '../drivers/s3/client';
import { getObjectBytes } from '../drivers/s3/objects';
import { buildImportSpec, decryptSourceConnstring, parseImportSpec } from '../drivers/secrets/import-spec';
import { KeyUnavailableError } from '../drivers/secrets/key-provider';
import { findPostgres } from '../common/pg-binaries';
import { loadConfig } from '../common/config';
import { uniqueId } from './helpers/ids';
import { MOTO_CREDENTIALS } from './helpers/moto';
import { motoEndpoint } from './helpers/moto-endpoint';

const SOURCE = 'postgresql://app:s3cr3t-pw@127.0.0.1:1/appdb';

describe('import spec encrypted with KMS (moto)', () => {
  let root: string;
  let kms: KMSClient;
  let s3: S3Client;
  let bucket: string;
  let keyA: string;
  let keyB: string;
  const savedEnv = { ...process.env };

  beforeAll(async () => {
    const moto = motoEndpoint();
    root = mkdtempSync(path.join(os.tmpdir(), 'dc-kms-moto-'));
    // Production KMS clients take credentials from the default chain: the environment here.
    Object.assign(process.env, { AWS_ACCESS_KEY_ID: MOTO_CREDENTIALS.accessKeyId, AWS_SECRET_ACCESS_KEY: MOTO_CREDENTIALS.secretAccessKey });
    kms = new KMSClient({ region: moto.region, endpoint: moto.endpoint, credentials: MOTO_CREDENTIALS });
    keyA = (await kms.send(new CreateKeyCommand({ Description: 'durable-compute test key A' }))).KeyMetadata!.Arn!;
    keyB = (await kms.send(new CreateKeyCommand({ Description: 'durable-compute test key B' }))).KeyMetadata!.Arn!;
    s3 = createS3Client({ endpoint: moto.endpoint, region: moto.region, bucket: moto.bucket, forcePathStyle: true, credentials: MOTO_CREDENTIALS });
    bucket = moto.bucket;
  });

  afterAll(async () => {
    for (const key of [keyA, keyB]) if (key) await kms.send(new ScheduleKeyDeletionCommand({ KeyId: key, PendingWindowInDays: 7 })).catch(() => undefined);
    kms?.destroy();
    s3?.destroy();
    process.env = savedEnv;
    if (root) rmSync(root, { recursive: true, force: true });
  });

  /** The configuration of a client or importer using KMS key `keyId` at moto. */
  const kmsImportConfig = (keyId: string) =>
    loadConfig({
      DURABLE_COMPUTE_STACK_DIR: path.join(root, 'stack'),
      DURABLE_COMPUTE_IMPORT_KMS_KEY_ID: keyId,
      AWS_ENDPOINT_URL_KMS: motoEndpoint().endpoint,
      AWS_REGION: motoEndpoint().region,
    }).imports;

  it('the client encrypts under the configured key, the importer decrypts it; the ciphertext is KMS-made', async () => {
    const client = kmsImportConfig(keyA);
    const spec = await buildImportSpec({ providers: importKeyProviders(client), ...specKeyOf(client), sourceConnstring: SOURCE });
    expect(spec.encryption_secret).toEqual({ KMS: { key_id: keyA } });
    expect(JSON.stringify(spec)).not.toContain('s3cr3t-pw');
    const prefix = uniqueId('imports/kms');
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: `${prefix}/spec.json`, Body: JSON.stringify(spec) }));

    // The importer: its own configuration and providers (a different process in production).
    const stored = await getObjectBytes(s3, bucket, `${prefix}/spec.json`);
    const importer = importKeyProviders(kmsImportConfig(keyA));
    expect(await decryptSourceConnstring(parseImportSpec(stored!.toString('utf8')), importer)).toBe(SOURCE);

    // Only KMS can decrypt it: moto's ciphertext names its key, and decrypts under it alone.
    const blob = Buffer.from(spec.source_connstring_ciphertext_base64, 'base64');
    expect(blob.includes(Buffer.from(SOURCE))).toBe(false);
  });

  it('a spec naming another key, or a key that does not exist, is refused, and the importer fails permanently', async () => {
    const client = kmsImportConfig(keyA);
    const spec = await buildImportSpec({ providers: importKeyProviders(client), ...specKeyOf(client), sourceConnstring: SOURCE });
    const providers = importKeyProviders(kmsImportConfig(keyB));
    const otherKey = { ...spec, encryption_secret: { KMS: { key_id: keyB } } };
    await expect(decryptSourceConnstring(otherKey, providers)).rejects.toThrow(KeyUnavailableError);
    await expect(decryptSourceConnstring(otherKey, providers)).rejects.toThrow(new RegExp(`KMS Decrypt with key "${keyB}" failed`));
    const missing = `arn:aws:kms:${motoEndpoint().region}:123456789012:key/00000000-0000-0000-0000-000000000000`;
    await expect(decryptSourceConnstring({ ...spec, encryption_secret: { KMS: { key_id: missing } } }, providers)).rejects.toThrow(/NotFoundException/);

    // Through the importer's activity: the spec from S3, a permanent failure that names the key, no secret.
    const prefix = uniqueId('imports/kms-wrong');
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: `${prefix}/spec.json`, Body: JSON.stringify(otherKey) }));
    const activities = createImporterActivities({ s3, bucket, install: findPostgres({ pgBinDir: process.env.PG_BIN_DIR }), keyProviders: providers });
    const failure = await new MockActivityEnvironment().run(activities.dumpSource, { workdir: path.join(root, uniqueId('work')), prefix }).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(failure).toBeInstanceOf(ApplicationFailure);
    expect(failure).toMatchObject({ type: 'KeyUnavailable', nonRetryable: true });
    expect((failure as Error).message).toContain(keyB);
    expect((failure as Error).message).not.toContain('s3cr3t-pw');
  });
});
