import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Client } from '@temporalio/client';
import { afterAll, describe, expect, it } from 'vitest';
import { importWorkdir, MAX_WORKDIR_ROOT_BYTES, resolveImporterHost, withHeartbeatPump } from '../activities/import-control/importer-host';
import { ensureLocalImportKey, importKeyProviders } from '../drivers/secrets/import-keys';
import { scratchPaths } from '../drivers/importer/scratch-postgres';
import { multipartEtag } from '../drivers/importer/upload';
import { decryptSourceConnstring, buildImportSpec } from '../drivers/secrets/import-spec';
import { readSource } from '../client/commands/import';
import { ImportClient, progressFromHeartbeat, sourceDatabaseOf } from '../client/import-client';
import { loadConfig } from '../common/config';
import { defaultTargetDatabase, importerHostTaskQueue, importIdempotencyKey, importPrefix, importWorkflowId, targetDatabaseProblem } from '../model/import-status';

/** The pure and local parts of the import: names, configuration, keys, input checks. */

const root = mkdtempSync(path.join(os.tmpdir(), 'dc-imp-unit-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe('identities and names', () => {
  it('derives the workflow ID, prefix and idempotency key from the import ID alone', () => {
    expect(importWorkflowId('orders-2024')).toBe('import-orders-2024');
    expect(importPrefix('orders-2024')).toBe('imports/orders-2024');
    expect(importIdempotencyKey('orders-2024')).toBe('durable-compute/import/orders-2024');
    expect(importerHostTaskQueue('durable-compute-importer', 'vm-7')).toBe('durable-compute-importer-host-vm-7');
  });

  it('restores into the source database unless it is one the scratch server needs', () => {
    expect(defaultTargetDatabase('shop')).toBe('shop');
    expect(defaultTargetDatabase('postgres')).toBe('neondb');
    expect(defaultTargetDatabase(undefined)).toBe('neondb');
    expect(targetDatabaseProblem('template1')).toMatch(/scratch server's own/);
    expect(targetDatabaseProblem('x'.repeat(64))).toMatch(/1-63 bytes/);
    expect(targetDatabaseProblem('é'.repeat(32))).toMatch(/1-63 bytes/);
    expect(targetDatabaseProblem('shop')).toBeUndefined();
  });

  it('keeps every work directory short enough for the scratch server socket', () => {
    const longest = path.join(root, 'w'.repeat(MAX_WORKDIR_ROOT_BYTES - Buffer.byteLength(root) - 1));
    const host = resolveImporterHost(longest, 'q', 'host-1');
    const dir = importWorkdir(host, 'i'.repeat(63), 'run/1');
    expect(() => resolveImporterHost(`${longest}w`, 'q', 'host-1')).toThrow(/is too long .*DURABLE_COMPUTE_IMPORTER_WORKDIR/);
    expect(Buffer.byteLength(path.join(scratchPaths(dir).socketDir, '.s.PGSQL.65535'))).toBeLessThanOrEqual(107);
    expect(importWorkdir(host, 'x', 'run-a/1')).not.toBe(importWorkdir(host, 'x', 'run-b/1'));
    expect(path.dirname(dir)).toBe(host.workdirRoot);
  });

  it('keeps a host identity on its disk: the same directory is the same host', () => {
    const dir = path.join(root, 'host-disk');
    const first = resolveImporterHost(dir, 'pool');
    expect(resolveImporterHost(dir, 'pool').hostId).toBe(first.hostId);
    expect(first.taskQueue).toBe(`pool-host-${first.hostId}`);
    expect(resolveImporterHost(path.join(root, 'other-disk'), 'pool').hostId).not.toBe(first.hostId);
    expect(() => resolveImporterHost(dir, 'pool', 'bad id!')).toThrow(/Invalid importer host id/);
  });

  it('runs a step outside an activity without a heartbeat pump', async () => {
    expect(await withHeartbeatPump(async () => 42)).toBe(42);
  });
});

describe('source connection strings', () => {
  it('finds the database without needing the password, and masks it in errors', () => {
    expect(sourceDatabaseOf('postgresql://u:p%40ss@db.example.com:5432/sales?sslmode=require')).toBe('sales');
    expect(sourceDatabaseOf('postgres://u@h/?dbname=crm')).toBe('crm');
    expect(sourceDatabaseOf("host=h user=u password='s3 cret' dbname=billing")).toBe('billing');
    expect(sourceDatabaseOf('postgresql://u:p@h')).toBeUndefined();
    expect(() => sourceDatabaseOf("host=h password='unterminated")).toThrow(/cannot be parsed/);
    try {
      sourceDatabaseOf("host=h password='hunter2 dbname=x");
    } catch (err) {
      expect((err as Error).message).not.toContain('hunter2');
    }
  });

  it('reads the source from a file or stdin-style input and refuses ambiguous or empty input', () => {
    const file = path.join(root, 'source.url');
    writeFileSync(file, 'postgresql://u:pw@h/db\n');
    expect(readSource({ sourceFile: file })).toBe('postgresql://u:pw@h/db');
    expect(() => readSource({ source: 'a', sourceFile: file })).toThrow(/either --source or --source-file/);
    expect(() => readSource({})).toThrow(/source is required/);
    writeFileSync(file, '\n');
    expect(() => readSource({ sourceFile: file })).toThrow(/empty/);
    writeFileSync(file, 'postgresql://a/b\npostgresql://c/d\n');
    expect(() => readSource({ sourceFile: file })).toThrow(/single connection string/);
    expect(() => readSource({ sourceFile: path.join(root, 'missing') })).toThrow(/ENOENT/);
  });

  it('refuses bad IDs, jobs and databases before anything is started or encrypted', async () => {
    const config = loadConfig({ DURABLE_COMPUTE_IMPORT_KEY_FILE: path.join(root, 'never-created.key') });
    // No Temporal client is needed: every check happens before it would be used.
    const c = new ImportClient({} as Client, 'q', config.imports);
    const base = { importId: 'ok', sourceConnstring: 'postgresql://u:secret@h/shop', tenantId: 'a'.repeat(32), timelineId: 'b'.repeat(32) };
    await expect(c.start({ ...base, importId: 'bad id' })).rejects.toThrow(/invalid import ID/);
    await expect(c.start({ ...base, tenantId: 'xyz' })).rejects.toThrow(/invalid tenant ID/);
    await expect(c.start({ ...base, timelineId: 'A'.repeat(32) })).rejects.toThrow(/invalid timeline ID/);
    await expect(c.start({ ...base, jobs: 0 })).rejects.toThrow(/--jobs must be 1-256/);
    await expect(c.start({ ...base, database: 'template0' })).rejects.toThrow(/invalid target database "template0"/);
    // The explicitly configured key file does not exist: a clear error, nothing started.
    await expect(c.start(base)).rejects.toThrow(/never-created\.key does not exist/);
  });
});

describe('configuration and keys', () => {
  it('defaults to a local key in the stack directory and the importer directory below it', () => {
    const cfg = loadConfig({ DURABLE_COMPUTE_STACK_DIR: path.join(root, 'stack') }).imports;
    expect(cfg.key).toEqual({ kind: 'Local', keyId: 'durable-compute-local', file: path.join(root, 'stack', 'import.key'), isDefaultFile: true });
    expect(cfg.importer).toMatchObject({ workdirRoot: path.join(root, 'stack', 'importer'), sharedTaskQueue: 'durable-compute-importer' });
  });

  it('uses KMS when a KMS key is configured, and names the variable of a bad value', () => {
    const cfg = loadConfig({ DURABLE_COMPUTE_IMPORT_KMS_KEY_ID: 'arn:aws:kms:eu-west-1:1:key/abc', AWS_REGION: 'eu-west-1' }).imports;
    expect(cfg.key).toEqual({ kind: 'KMS', keyId: 'arn:aws:kms:eu-west-1:1:key/abc' });
    expect(cfg.kms.region).toBe('eu-west-1');
    expect(() => loadConfig({ DURABLE_COMPUTE_IMPORTER_WORKDIR: 'relative/dir' })).toThrow(/DURABLE_COMPUTE_IMPORTER_WORKDIR: expected an absolute path/);
    expect(() => loadConfig({ DURABLE_COMPUTE_IMPORTER_UPLOAD_CONCURRENCY: '0' })).toThrow(/DURABLE_COMPUTE_IMPORTER_UPLOAD_CONCURRENCY/);
    expect(() => loadConfig({ DURABLE_COMPUTE_IMPORTER_HOST_ID: 'no spaces' })).toThrow(/DURABLE_COMPUTE_IMPORTER_HOST_ID/);
  });

  it('creates the default local key once and keeps it; a spec encrypted by one process decrypts in another', async () => {
    const file = path.join(root, 'keys', 'import.key');
    for (let i = 0; i < 5; i++) ensureLocalImportKey(file);
    const key = readFileSync(file, 'utf8');
    ensureLocalImportKey(file);
    expect(readFileSync(file, 'utf8')).toBe(key);
    const cfg = loadConfig({ DURABLE_COMPUTE_STACK_DIR: path.join(root, 'keys-stack') }).imports;
    const providers = importKeyProviders(cfg);
    const spec = await buildImportSpec({ providers, kind: 'Local', keyId: cfg.key.keyId, sourceConnstring: 'postgresql://u:pw@h/db' });
    expect(JSON.stringify(spec)).not.toContain('pw@');
    // Another process with the same configuration (the importer) decrypts it.
    expect(await decryptSourceConnstring(spec, importKeyProviders(loadConfig({ DURABLE_COMPUTE_STACK_DIR: path.join(root, 'keys-stack') }).imports))).toBe('postgresql://u:pw@h/db');
  });
});

describe('multipart ETags', () => {
  it("are the MD5 of the parts' binary MD5s and the part count, as S3 gives them", () => {
    // Parts "a" and "b"; the expected value was computed with Python's hashlib.
    const parts: [number, string][] = [
      [2, '"92eb5ffee6ae2fec3ad71c777531578f"'],
      [1, '"0cc175b9c0f1b6a831c399e269772661"'],
    ];
    expect(multipartEtag(parts)).toBe('96e024ba2074fe77e8e965ba43a704be-2');
    // A part ETag that is no MD5 (SSE-KMS) leaves nothing to compare with.
    expect(multipartEtag([[1, '"not-an-md5"']])).toBeUndefined();
  });
});

describe('progress from heartbeats', () => {
  it('reads the upload and dump heartbeat shapes and ignores anything else', () => {
    expect(progressFromHeartbeat({ phase: 'upload', bytesDone: 10, bytesTotal: 20, filesDone: 1, filesTotal: 2, inFlight: [] })).toEqual({ bytesDone: 10, bytesTotal: 20, filesDone: 1, filesTotal: 2 });
    expect(progressFromHeartbeat({ phase: 'dump', bytes: 5, files: 3 })).toEqual({ bytesDone: 5, bytesTotal: null, filesDone: 3, filesTotal: null });
    expect(progressFromHeartbeat({ phase: 'restore' })).toBeNull();
    expect(progressFromHeartbeat('x')).toBeNull();
    expect(progressFromHeartbeat({ phase: 'upload', bytesDone: 'lots' })).toEqual({ bytesDone: 0, bytesTotal: null, filesDone: null, filesTotal: null });
  });
});
