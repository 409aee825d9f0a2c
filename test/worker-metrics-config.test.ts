import { describe, expect, it } from 'vitest';
import { loadConfig } from '../common/config';

describe('worker metrics configuration', () => {
  it('is off unless a port is given; binds every address by default, as Prometheus scrapes from elsewhere', () => {
    expect(loadConfig({}).workerMetrics).toBeUndefined();
    expect(loadConfig({ DURABLE_COMPUTE_WORKER_METRICS_PORT: '9464' }).workerMetrics).toEqual({ bindAddress: '0.0.0.0:9464', fleetRefreshSeconds: 30 });
    expect(
      loadConfig({ DURABLE_COMPUTE_WORKER_METRICS_PORT: '9464', DURABLE_COMPUTE_WORKER_METRICS_HOST: '127.0.0.1', DURABLE_COMPUTE_FLEET_METRICS_INTERVAL_SECONDS: '5' }).workerMetrics,
    ).toEqual({ bindAddress: '127.0.0.1:9464', fleetRefreshSeconds: 5 });
  });

  it('refuses bad values, naming the variable', () => {
    expect(() => loadConfig({ DURABLE_COMPUTE_WORKER_METRICS_PORT: '70000' })).toThrow(/DURABLE_COMPUTE_WORKER_METRICS_PORT: port must be 1-65535/);
    expect(() => loadConfig({ DURABLE_COMPUTE_WORKER_METRICS_PORT: 'nine' })).toThrow(/DURABLE_COMPUTE_WORKER_METRICS_PORT/);
    expect(() => loadConfig({ DURABLE_COMPUTE_WORKER_METRICS_HOST: '127.0.0.1' })).toThrow(/DURABLE_COMPUTE_WORKER_METRICS_HOST needs DURABLE_COMPUTE_WORKER_METRICS_PORT/);
    expect(() => loadConfig({ DURABLE_COMPUTE_WORKER_METRICS_PORT: '9464', DURABLE_COMPUTE_WORKER_METRICS_HOST: 'a b' })).toThrow(/DURABLE_COMPUTE_WORKER_METRICS_HOST: expected a host name/);
    expect(() => loadConfig({ DURABLE_COMPUTE_WORKER_METRICS_PORT: '9464', DURABLE_COMPUTE_FLEET_METRICS_INTERVAL_SECONDS: '0' })).toThrow(/DURABLE_COMPUTE_FLEET_METRICS_INTERVAL_SECONDS/);
  });
});
