/**
 * SIMULATION, for bench/fleet.ts only: thousands of compute VMs answered by one process.
 *
 * A real compute runs `durable-compute worker compute` in its VM, on its own task queue
 * `compute-node-<id>`, in front of a real Postgres. Ten thousand of those (10,000 Workers, 10,000
 * Postgres servers) do not fit on one machine, so this process stands in for all of them: a few
 * Workers on a few shared queues (the computes were started with the bench-only workflow option
 * `simulatedNodeTaskQueue`) answer the compute-node activities with no Postgres behind them. The
 * startup steps return at once with plausible results; the watch keeps the real activity's
 * timing: it heartbeats (with last_active in the details) every half heartbeat timeout through the
 * same helper the real one uses, and returns after `reportAfterSeconds`.
 *
 * What the control plane and the Temporal server see per compute is what a real compute causes:
 * the same activities, attempts and heartbeats. What differs is the number of pollers (a few here,
 * one per compute in production), which loads the server, not the control-plane worker.
 *
 * The parent (bench/fleet.ts) plays the VM platform over IPC: `{ kill: [computeIds] }` makes those
 * simulated VMs die (their watch goes silent and never returns, as a dead VM's would); the
 * simulator answers `{ killed: [...] }`. `{ stats: true }` answers `{ stats: {...} }`.
 */
import { Context } from '@temporalio/activity';
import { NativeConnection, Runtime, Worker } from '@temporalio/worker';
import type { ComputeNodeActivities } from '../activities/compute/types';
import { heartbeatSpacingMs } from '../common/activity-context';
import { encryptedDataConverter } from '../common/codec/data-converter';
import { loadConfig } from '../common/config';

const queues = (process.env.FLEET_SIM_QUEUES ?? '').split(',').filter(Boolean);
const slotsPerQueue = Number(process.env.FLEET_SIM_SLOTS_PER_QUEUE ?? '3000');
if (!queues.length) throw new Error('FLEET_SIM_QUEUES names no task queue');

const dead = new Set<string>();
const stats = { watchRounds: 0, watchHeartbeats: 0, watchesRunning: 0, deadWatches: 0, startupSteps: 0 };

const workflowIdOfActivity = () => Context.current().info.workflowExecution?.workflowId ?? '';

/** A dead VM's activity: no heartbeat, no answer, until this process shuts down (which cancels it locally). */
const silentForever = () => {
  const signal = Context.current().cancellationSignal;
  return new Promise<never>((_, reject) => signal.addEventListener('abort', () => reject(new Error('simulator shut down'))));
};

const step = async <T>(result: T): Promise<T> => {
  if (dead.has(workflowIdOfActivity())) return silentForever();
  stats.startupSteps += 1;
  return result;
};

const simulatedActivities: ComputeNodeActivities = {
  startCompute: () =>
    step({
      lsn: '0/1000028',
      pid: 1,
      metrics: { prepare_pgdata_ms: 1, sync_sk_check_ms: 1, sync_safekeepers_ms: 0, basebackup_ms: 1, basebackup_bytes: 5 * 1024 * 1024, pageserver_connect_micros: 100, start_postgres_ms: 1, config_ms: 1 },
    }),
  preparePgdata: () => step(undefined),
  writePostgresConfig: () => step({ ms: 1 }),
  syncSafekeepers: () => step({ lsn: '0/1000028', ms: 1 }),
  fetchBasebackup: () => step({ bytes: 5 * 1024 * 1024, ms: 1, connectMicros: 100 }),
  prepareStartupFiles: () => step(undefined),
  startPostgres: () => step({ pid: 1, ms: 1 }),
  applySpec: () => step({ changes: [], ms: 1 }),
  reconfigurePostgres: () => step({ changes: [] }),
  stopPostgres: () => step(undefined),
  prewarmCache: () => Promise.reject(new Error('the fleet simulation has no cache to prewarm')),
  offloadCacheState: () => Promise.reject(new Error('the fleet simulation has no cache to offload')),
  promoteReplica: () => Promise.reject(new Error('the fleet simulation has no replica to promote')),

  /** The real watch's timing without Postgres: beats every half heartbeat timeout, reports at the end of the round. */
  async watchPostgres({ reportAfterSeconds, lastActive }) {
    const ctx = Context.current();
    const workflowId = ctx.info.workflowExecution?.workflowId ?? '';
    if (dead.has(workflowId)) return silentForever();
    stats.watchesRunning += 1;
    const deadline = Date.now() + reportAfterSeconds * 1000;
    const spacing = heartbeatSpacingMs(500);
    try {
      for (;;) {
        const wait = Math.min(spacing, deadline - Date.now());
        if (wait > 0) await ctx.sleep(wait);
        if (dead.has(workflowId)) {
          stats.deadWatches += 1;
          return await silentForever();
        }
        if (Date.now() >= deadline) break;
        ctx.heartbeat({ lastActive });
        stats.watchHeartbeats += 1;
      }
      stats.watchRounds += 1;
      return { exited: false, lastActive };
    } finally {
      stats.watchesRunning -= 1;
    }
  },
};

process.on('message', (msg: { kill?: string[]; stats?: boolean }) => {
  if (msg.kill) {
    for (const workflowId of msg.kill) dead.add(workflowId);
    process.send?.({ killed: msg.kill });
  }
  if (msg.stats) process.send?.({ stats: { ...stats, dead: dead.size } });
});

async function main(): Promise<void> {
  Runtime.install({ shutdownSignals: ['SIGINT', 'SIGTERM'] });
  const config = loadConfig();
  const connection = await NativeConnection.connect({ address: config.temporal.address });
  const workers = await Promise.all(
    queues.map((taskQueue) =>
      Worker.create({
        connection,
        namespace: config.temporal.namespace,
        taskQueue,
        activities: simulatedActivities,
        dataConverter: encryptedDataConverter(config.payloadKeys),
        maxConcurrentActivityTaskExecutions: slotsPerQueue,
        maxConcurrentActivityTaskPolls: 8,
        identity: `fleet-simulator@${process.pid}/${taskQueue}`,
        shutdownGraceTime: '1s',
      }),
    ),
  );
  const running = Promise.all(workers.map((w) => w.run()));
  console.log(`fleet simulator ready on ${queues.join(', ')} (SIMULATED computes, no Postgres)`);
  try {
    await running;
  } finally {
    await connection.close();
  }
}

await main();
