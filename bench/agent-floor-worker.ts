/**
 * The floor of the agent benchmark (bench/compute-agent.ts): the smallest activities-only Temporal
 * worker, one no-op activity and nothing of ours, bundled like the compute worker and run with the
 * same node flags. Its idle RSS is what Node and the Temporal SDK hold before any product code.
 */
import { NativeConnection, Worker } from '@temporalio/worker';

const usage = 'usage: TEMPORAL_ADDRESS=host:port node agent-floor-worker.cjs <task queue>';
const address = process.env.TEMPORAL_ADDRESS ?? '';
const taskQueue = process.argv[2] ?? '';
if (!address || !taskQueue) throw new Error(usage);

// A CommonJS bundle has no top-level await.
async function main(): Promise<void> {
  const connection = await NativeConnection.connect({ address });
  const worker = await Worker.create({
    connection,
    taskQueue,
    activities: {
      async noop(): Promise<void> {},
    },
  });
  const running = worker.run();
  console.log(`floor worker running on ${taskQueue}`);
  process.once('SIGTERM', () => worker.shutdown());
  await running;
  await connection.close();
}

void main();
