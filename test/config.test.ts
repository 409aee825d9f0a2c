import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig, type DevStackDefaults } from '../common/config';

const dev: DevStackDefaults = {
  temporal: { address: '127.0.0.1:17233', namespace: 'default' },
  s3: { endpoint: 'http://127.0.0.1:14568', bucket: 'dev-bucket', region: 'us-east-1', accessKeyId: 'K', secretAccessKey: 'S' },
};

describe('configuration from the environment', () => {
  it('uses the running dev stack when nothing is set', () => {
    const cfg = loadConfig({}, dev);
    expect(cfg.temporal).toMatchObject({ address: '127.0.0.1:17233', namespace: 'default', tls: false });
    expect(cfg.s3).toMatchObject({ endpoint: 'http://127.0.0.1:14568', bucket: 'dev-bucket', forcePathStyle: true });
    expect(cfg.s3.credentials).toEqual({ accessKeyId: 'K', secretAccessKey: 'S' });
  });

  it('prefers explicit variables over the dev stack', () => {
    const cfg = loadConfig(
      { TEMPORAL_ADDRESS: 'temporal.example.internal:7233', TEMPORAL_NAMESPACE: 'prod', S3_BUCKET: 'real-bucket', AWS_REGION: 'eu-west-1' },
      dev,
    );
    expect(cfg.temporal.address).toBe('temporal.example.internal:7233');
    expect(cfg.temporal.namespace).toBe('prod');
    // Naming a bucket means a real S3: no dev endpoint, no dev credentials, virtual-host style.
    expect(cfg.s3).toMatchObject({ bucket: 'real-bucket', region: 'eu-west-1', endpoint: undefined, forcePathStyle: false, credentials: undefined });
  });

  it('turns on TLS for an API key (Temporal Cloud)', () => {
    const cfg = loadConfig({ TEMPORAL_ADDRESS: 'ns.acct.tmprl.cloud:7233', TEMPORAL_API_KEY: 'secret-key-value' });
    expect(cfg.temporal.tls).toBe(true);
    expect(cfg.temporal.apiKey).toBe('secret-key-value');
  });

  it('reads mTLS file paths and checks they exist', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'dc-tls-'));
    try {
      const crt = path.join(dir, 'client.pem');
      const key = path.join(dir, 'client.key');
      writeFileSync(crt, 'cert');
      writeFileSync(key, 'key');
      const cfg = loadConfig({ TEMPORAL_TLS_CLIENT_CERT_PATH: crt, TEMPORAL_TLS_CLIENT_KEY_PATH: key });
      expect(cfg.temporal.tls).toEqual({ clientCertPath: crt, clientKeyPath: key, serverCaCertPath: undefined, serverName: undefined });
      expect(() => loadConfig({ TEMPORAL_TLS_CLIENT_CERT_PATH: path.join(dir, 'missing.pem'), TEMPORAL_TLS_CLIENT_KEY_PATH: key })).toThrow(
        /TEMPORAL_TLS_CLIENT_CERT_PATH: file does not exist/,
      );
      expect(() => loadConfig({ TEMPORAL_TLS_CLIENT_CERT_PATH: crt })).toThrow(/must be set together/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it.each([
    ['TEMPORAL_ADDRESS', 'no-port-here', /TEMPORAL_ADDRESS: expected host:port/],
    ['TEMPORAL_ADDRESS', 'host:99999', /TEMPORAL_ADDRESS: port must be 1-65535/],
    ['TEMPORAL_NAMESPACE', 'bad namespace!', /TEMPORAL_NAMESPACE: not a valid namespace/],
    ['TEMPORAL_TLS', 'maybe', /TEMPORAL_TLS: expected true or false/],
    ['S3_ENDPOINT', 'ftp://x', /S3_ENDPOINT: expected an http\(s\) URL/],
    ['S3_BUCKET', 'Bad_Bucket', /S3_BUCKET: not a valid S3 bucket name/],
    ['S3_FORCE_PATH_STYLE', 'sometimes', /S3_FORCE_PATH_STYLE: expected true or false/],
    ['S3_REQUEST_TIMEOUT_MS', '0', /S3_REQUEST_TIMEOUT_MS/],
    ['PG_BIN_DIR', 'relative/bin', /PG_BIN_DIR: expected an absolute path/],
    ['PG_BIN_DIR', '/nonexistent/pg/bin', /PG_BIN_DIR: directory does not exist/],
    ['DURABLE_COMPUTE_TASK_QUEUE', 'has spaces', /DURABLE_COMPUTE_TASK_QUEUE: not a valid task queue/],
  ])('rejects %s=%s naming the variable', (name, value, message) => {
    expect(() => loadConfig({ [name]: value })).toThrow(message);
  });

  it('never echoes a secret value in an error', () => {
    let message = '';
    try {
      loadConfig({ TEMPORAL_TLS: 'false', TEMPORAL_API_KEY: 'super-secret-api-key' });
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).toMatch(/TEMPORAL_TLS=false contradicts TEMPORAL_API_KEY/);
    expect(message).not.toContain('super-secret-api-key');
    expect(() => loadConfig({ AWS_ACCESS_KEY_ID: 'AKIA', AWS_SECRET_ACCESS_KEY: '' })).toThrow(/must be set together/);
  });

  it('takes the storage token from STORAGE_AUTH_TOKEN, from the file STORAGE_AUTH_TOKEN_FILE names, or from the dev stack', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'dc-config-token-'));
    try {
      const file = path.join(dir, 'storage.token');
      writeFileSync(file, 'token-from-file\n', { mode: 0o600 });
      expect(loadConfig({}).storage.authToken).toBeUndefined();
      expect(loadConfig({ STORAGE_AUTH_TOKEN: 'token-from-env' }).storage.authToken).toBe('token-from-env');
      expect(loadConfig({ STORAGE_AUTH_TOKEN_FILE: file }).storage.authToken).toBe('token-from-file');
      expect(loadConfig({}, { ...dev, storageAuthTokenFile: file }).storage.authToken).toBe('token-from-file');
      expect(loadConfig({ STORAGE_AUTH_TOKEN: 'explicit' }, { ...dev, storageAuthTokenFile: file }).storage.authToken).toBe('explicit');
      expect(() => loadConfig({ STORAGE_AUTH_TOKEN: 'a', STORAGE_AUTH_TOKEN_FILE: file })).toThrow(/STORAGE_AUTH_TOKEN or STORAGE_AUTH_TOKEN_FILE, not both/);
      expect(() => loadConfig({ STORAGE_AUTH_TOKEN_FILE: path.join(dir, 'missing') })).toThrow(/STORAGE_AUTH_TOKEN_FILE: file does not exist/);
      writeFileSync(file, 'two words-secret-part\n');
      let message = '';
      try {
        loadConfig({ STORAGE_AUTH_TOKEN_FILE: file });
      } catch (err) {
        message = (err as Error).message;
      }
      expect(message).toMatch(/must hold one token without spaces/);
      expect(message).not.toContain('secret-part');
      message = '';
      try {
        loadConfig({ STORAGE_AUTH_TOKEN: 'has a-secret-space' });
      } catch (err) {
        message = (err as Error).message;
      }
      expect(message).toMatch(/Invalid environment variable STORAGE_AUTH_TOKEN: expected one token/);
      expect(message).not.toContain('a-secret-space');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
