import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../common/config';
import { runCli } from './helpers/cli';
import { cleanupComputes, testPgdata } from './helpers/compute';
import { uniqueId } from './helpers/ids';
import { killAllProcesses, startProcess } from '../dev/child-processes';
import { testEnv } from './helpers/stack';

afterAll(async () => {
  await killAllProcesses();
  await cleanupComputes();
});

describe('failpoints are a test feature', () => {
  it('refuses failpoints named without the explicit switch, naming both variables', () => {
    expect(() => loadConfig({ DURABLE_COMPUTE_FAILPOINTS: 'startPostgres' })).toThrow(
      /DURABLE_COMPUTE_FAILPOINTS.*DURABLE_COMPUTE_ENABLE_FAILPOINTS=1/,
    );
    expect(() => loadConfig({ DURABLE_COMPUTE_FAILPOINTS: 'startPostgres', DURABLE_COMPUTE_ENABLE_FAILPOINTS: '0' })).toThrow(
      /DURABLE_COMPUTE_ENABLE_FAILPOINTS/,
    );
    expect(loadConfig({ DURABLE_COMPUTE_FAILPOINTS: 'startPostgres,syncSafekeepers', DURABLE_COMPUTE_ENABLE_FAILPOINTS: '1' }).failpoints).toEqual([
      'startPostgres',
      'syncSafekeepers',
    ]);
    // The switch alone arms nothing.
    expect(loadConfig({ DURABLE_COMPUTE_ENABLE_FAILPOINTS: '1' }).failpoints).toEqual([]);
    expect(loadConfig({}).failpoints).toEqual([]);
  });

  it('a compute worker given failpoints without the switch refuses to start', async () => {
    const result = await runCli(['worker', 'compute', '--compute-id', uniqueId('fp'), '--pgdata', testPgdata(), '--http-port', '0', '--http-host', '127.0.0.1'], {
      env: { ...testEnv(), DURABLE_COMPUTE_FAILPOINTS: 'startPostgres', DURABLE_COMPUTE_ENABLE_FAILPOINTS: '' },
      timeoutMs: 60_000,
    });
    expect(result.code).not.toBe(0);
    expect(result.stderr).toMatch(/DURABLE_COMPUTE_FAILPOINTS/);
    expect(result.stderr).toMatch(/DURABLE_COMPUTE_ENABLE_FAILPOINTS/);
    expect(result.stdout).not.toMatch(/worker ready/);
  });

  it('a compute worker with failpoints armed warns at startup, naming them', async () => {
    const worker = await startProcess('bin/durable-compute.mjs', ['worker', 'compute', '--compute-id', uniqueId('fp'), '--pgdata', testPgdata(), '--http-port', '0', '--http-host', '127.0.0.1'], {
      env: { ...testEnv(), DURABLE_COMPUTE_FAILPOINTS: 'startPostgres,fetchBasebackup', DURABLE_COMPUTE_ENABLE_FAILPOINTS: '1' },
      readyLine: /compute worker ready/,
    });
    expect(worker.output()).toMatch(/WARNING: failpoints armed: startPostgres, fetchBasebackup/);
    await worker.kill('SIGTERM');
  });

  it('a compute worker without failpoints says nothing about them', async () => {
    const worker = await startProcess('bin/durable-compute.mjs', ['worker', 'compute', '--compute-id', uniqueId('fp'), '--pgdata', testPgdata(), '--http-port', '0', '--http-host', '127.0.0.1'], {
      env: { ...testEnv(), DURABLE_COMPUTE_FAILPOINTS: '', DURABLE_COMPUTE_ENABLE_FAILPOINTS: '' },
      readyLine: /compute worker ready/,
    });
    expect(worker.output()).not.toMatch(/failpoint/i);
    await worker.kill('SIGTERM');
  });
});
