import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { resolveStackSettings } from '../dev/stack-settings';
import { serverConfig, type ServerPorts } from '../dev/temporal-server/config';
import { readPassfilePassword, writePassfile } from '../dev/temporal-server/postgres-cluster';

// The production Temporal server's own runs are in `npm run test:temporal-server`; these check,
// without it, what it is given.
describe('the production Temporal server setup', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'dc-tserver-conf-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('keeps the PostgreSQL password in a 0600 pgpass file, escaped as libpq reads it', () => {
    const file = path.join(dir, 'pgpass');
    const password = 'a:b\\c*d';
    writePassfile(file, '127.0.0.1', 5432, 'temporal', password);
    expect(readFileSync(file, 'utf8')).toBe('127.0.0.1:5432:*:temporal:a\\:b\\\\c*d\n');
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(readPassfilePassword(file)).toBe(password);
  });

  it('configures PostgreSQL persistence without the password, every service and the metrics on loopback', () => {
    const ports = Object.fromEntries(
      ['frontendGrpc', 'frontendHttp', 'frontendMembership', 'historyGrpc', 'historyMembership', 'matchingGrpc', 'matchingMembership', 'workerGrpc', 'workerMembership', 'metrics'].map(
        (k, i) => [k, 20000 + i],
      ),
    ) as unknown as ServerPorts;
    const passfile = path.join(dir, 'pgpass');
    const config = serverConfig({
      host: '127.0.0.1',
      ports,
      postgres: { host: '127.0.0.1', port: 5433, user: 'temporal', passfile },
      numHistoryShards: 4,
      logLevel: 'warn',
      dynamicConfigFile: path.join(dir, 'dc.yaml'),
    });
    const text = JSON.stringify(config);
    expect(text).not.toMatch(/"password"/);
    const persistence = config.persistence as { datastores: Record<string, { sql: Record<string, unknown> }> };
    for (const store of Object.values(persistence.datastores)) {
      expect(store.sql).toMatchObject({ pluginName: 'postgres12', connectAddr: '127.0.0.1:5433', user: 'temporal', connectAttributes: { passfile } });
    }
    expect(Object.keys(persistence.datastores).map((k) => persistence.datastores[k]!.sql.databaseName)).toEqual(['temporal', 'temporal_visibility']);
    const services = config.services as Record<string, { rpc: { bindOnIP: string } }>;
    expect(Object.keys(services).sort()).toEqual(['frontend', 'history', 'matching', 'worker']);
    for (const s of Object.values(services)) expect(s.rpc.bindOnIP).toBe('127.0.0.1');
    expect(config.global).toMatchObject({ metrics: { prometheus: { listenAddress: '127.0.0.1:20009' } } });
  });

  it('takes the stack\'s Temporal from DURABLE_COMPUTE_TEMPORAL_SERVER, dev by default, and names a wrong value', () => {
    expect(resolveStackSettings({ dir }, {}).temporalServer).toBe('dev');
    expect(resolveStackSettings({ dir }, { DURABLE_COMPUTE_TEMPORAL_SERVER: 'sql' }).temporalServer).toBe('sql');
    expect(() => resolveStackSettings({ dir }, { DURABLE_COMPUTE_TEMPORAL_SERVER: 'cassandra' })).toThrow(/DURABLE_COMPUTE_TEMPORAL_SERVER="cassandra": use dev or sql/);
  });
});
