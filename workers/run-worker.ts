import { makeTelemetryFilterString, NativeConnection, Runtime, Worker, type ActivityInterceptorsFactory, type WorkerOptions } from '@temporalio/worker';
import type { AppConfig, WorkerMetricsConfig } from '../common/config';
import { temporalConnectionOptions } from '../common/temporal-connection';
import { consoleToLog } from '../common/logger';
import { maskedLogger } from './masked-logging';

let runtimeInstalled = false;

/**
 * Installs the SDK runtime once. By default SIGINT/SIGTERM drain in-flight tasks before the
 * process exits; a process that must act on Ctrl-C first (the main job) passes no signals and
 * shuts its workers down itself.
 */
export function installRuntime(shutdownSignals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM'], metrics?: WorkerMetricsConfig): void {
  if (runtimeInstalled) return;
  // Everything the process says (console included) is a log line, in one format: common/logger.ts.
  consoleToLog();
  Runtime.install({
    shutdownSignals,
    logger: maskedLogger(),
    telemetryOptions: {
      // The Rust core's warnings and errors come through the same logger, not straight to stderr.
      logging: { filter: makeTelemetryFilterString({ core: 'WARN', other: 'ERROR' }), forward: {} },
      // The SDK's own metrics (task latency, schedule-to-start, pollers) on GET /metrics at this address.
      ...(metrics && { metrics: { prometheus: { bindAddress: metrics.bindAddress, countersTotalSuffix: true } } }),
    },
  });
  runtimeInstalled = true;
}

export type WorkerSpec = Omit<WorkerOptions, 'connection' | 'namespace'>;

/**
 * The SDK tags every activity log line with the task token, and whoever holds one can complete
 * or fail the activity: logs are read by more people than should have that power.
 */
const taskTokenOutOfLogs: ActivityInterceptorsFactory = () => ({
  outbound: {
    getLogAttributes: (input, next) => {
      const { taskToken: _taskToken, ...attributes } = next(input);
      return attributes;
    },
  },
});

/** Installs the runtime and connects to the configured cluster, for workers created later with `createWorkerOn`. */
export async function connectWorkerConnection(config: AppConfig): Promise<NativeConnection> {
  installRuntime(undefined, config.workerMetrics);
  return NativeConnection.connect(temporalConnectionOptions(config.temporal));
}

/** Creates a worker on an open connection, with the settings every worker of the project shares. */
export async function createWorkerOn(connection: NativeConnection, config: AppConfig, spec: WorkerSpec): Promise<Worker> {
  return Worker.create({
    connection,
    namespace: config.temporal.namespace,
    // Graceful shutdown: give running activities this long to finish or heartbeat-cancel.
    shutdownGraceTime: '10s',
    ...spec,
    interceptors: { ...spec.interceptors, activity: [taskTokenOutOfLogs, ...(spec.interceptors?.activity ?? [])] },
  });
}

/** Creates a worker on the configured cluster; callers run it and it shuts down gracefully on SIGINT/SIGTERM. */
export async function createWorker(config: AppConfig, spec: WorkerSpec): Promise<{ worker: Worker; connection: NativeConnection }> {
  const connection = await connectWorkerConnection(config);
  try {
    return { worker: await createWorkerOn(connection, config, spec), connection };
  } catch (err) {
    await connection.close();
    throw err;
  }
}

/** Runs until a shutdown signal (or `worker.shutdown()`), then closes the connection. */
export async function runUntilShutdown(handle: { worker: Worker; connection: NativeConnection }, onReady?: () => void): Promise<void> {
  try {
    const running = handle.worker.run();
    onReady?.();
    await running;
  } finally {
    await handle.connection.close();
  }
}
