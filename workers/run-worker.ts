import { NativeConnection, Runtime, Worker, type ActivityInterceptorsFactory, type WorkerOptions } from '@temporalio/worker';
import type { AppConfig } from '../common/config';
import { temporalConnectionOptions } from '../common/temporal-connection';
import { maskConsole, maskedLogger } from './masked-logging';

let runtimeInstalled = false;

/**
 * Installs the SDK runtime once. By default SIGINT/SIGTERM drain in-flight tasks before the
 * process exits; a process that must act on Ctrl-C first (the main job) passes no signals and
 * shuts its workers down itself.
 */
export function installRuntime(shutdownSignals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM']): void {
  if (runtimeInstalled) return;
  maskConsole();
  Runtime.install({ shutdownSignals, logger: maskedLogger() });
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

/** Creates a worker on the configured cluster; callers run it and it shuts down gracefully on SIGINT/SIGTERM. */
export async function createWorker(config: AppConfig, spec: WorkerSpec): Promise<{ worker: Worker; connection: NativeConnection }> {
  installRuntime();
  const connection = await NativeConnection.connect(temporalConnectionOptions(config.temporal));
  try {
    const worker = await Worker.create({
      connection,
      namespace: config.temporal.namespace,
      // Graceful shutdown: give running activities this long to finish or heartbeat-cancel.
      shutdownGraceTime: '10s',
      ...spec,
      interceptors: { ...spec.interceptors, activity: [taskTokenOutOfLogs, ...(spec.interceptors?.activity ?? [])] },
    });
    return { worker, connection };
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
