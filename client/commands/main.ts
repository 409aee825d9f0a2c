import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { printText } from '../output';
import path from 'node:path';
import type { Command } from 'commander';
import { UserFacingError } from '../../common/errors';
import { assertPortFree, freePort, previousStackSettings, stackDown, stackUp, type StackEndpoints, resolveStackSettings } from '../dev-stack';
import { Runtime } from '@temporalio/worker';
import { logToFile } from '../../common/logger';
import { installRuntime } from '../../workers/run-worker';
import { createComputeWorker } from '../../workers/compute';
import { ComputeClient } from '../compute-client';
import { cliConfig, openClient } from '../context';
import { exampleComputeConfig } from '../example-spec';
import { createTimeline } from '../timelines';
import { resolveTemporalCliWithProgress } from './dev';
import { newNeonId } from './timeline';

const COMPUTE_ID = 'main';

interface MainState {
  tenantId: string;
  timelineId: string;
  port: number;
}

async function choosePort(preferred: number): Promise<number> {
  try {
    await assertPortFree('127.0.0.1', preferred, 'compute', '');
    return preferred;
  } catch {
    return freePort();
  }
}

const say = (line: string) => printText(`${line}\n`);

/**
 * `npm start`: the embedded stack, both workers, a timeline and a compute from the example spec.
 * The timeline is remembered in the stack directory, so the next start serves the same data.
 * Ctrl-C terminates the compute (fast), then stops everything.
 */
export function registerMainCommand(program: Command): void {
  program
    .command('main')
    .description('bring up the dev stack, the workers and a compute from examples/compute-spec.json (npm start)')
    .action(async () => {
      const dir = resolveStackSettings().dir;
      // The terminal shows a few lines for a person; the compute worker's log (JSON lines, the SDK's
      // included) goes to a file beside the stack's own logs.
      const logFile = path.join(dir, MAIN_LOG);
      logToFile(logFile);
      installRuntime([]);
      const settings = resolveStackSettings({ dir }, process.env, previousStackSettings(dir));
      const progress = stackProgress();
      const endpoints = await stackUp(settings, { resolveTemporalCli: resolveTemporalCliWithProgress, onProgress: progress.onProgress }).finally(progress.end);
      say(`dev stack up in ${endpoints.stackDir} (every endpoint: durable-compute dev status)`);
      try {
        await runMainCompute(dir, endpoints, logFile);
      } catch (err) {
        process.stderr.write(`the compute's log: ${logFile}\n`);
        process.stderr.write(`stopping the stack after the failure (durable-compute dev up brings it back for a look in the Web UI)\n`);
        await stackDown(dir);
        throw err;
      }
    });
}

/** Where the main job's compute worker logs, in the stack directory. */
const MAIN_LOG = 'main-compute-worker.log';

/** The stack's start as one line that grows ("starting the dev stack: temporal s3 ..."), not a line per process. */
function stackProgress(): { onProgress: (line: string) => void; end: () => void } {
  let open = false;
  const end = () => {
    if (open) process.stderr.write('\n');
    open = false;
  };
  return {
    onProgress: (line) => {
      const name = /^starting (\S+)\.\.\.$/.exec(line)?.[1];
      if (name === undefined) {
        end();
        return void process.stderr.write(`${line}\n`);
      }
      process.stderr.write(`${open ? '' : 'starting the dev stack:'} ${name}`);
      open = true;
    },
    end,
  };
}

async function runMainCompute(dir: string, endpoints: StackEndpoints, logFile: string): Promise<void> {
  {
      const config = cliConfig({ ...process.env, DURABLE_COMPUTE_STACK_DIR: dir });

      const stateFile = path.join(dir, 'main-compute.json');
      let state: MainState;
      if (existsSync(stateFile)) {
        state = JSON.parse(readFileSync(stateFile, 'utf8')) as MainState;
        say(`reusing timeline ${state.tenantId}/${state.timelineId}`);
      } else {
        state = { tenantId: newNeonId(), timelineId: newNeonId(), port: await choosePort(55432) };
        await createTimeline(config.storage, state.tenantId, { new_timeline_id: state.timelineId, pg_version: 15 });
        writeFileSync(stateFile, JSON.stringify(state, null, 2));
        say(`created timeline ${state.tenantId}/${state.timelineId}`);
      }

      const pgdata = path.join(dir, 'computes', COMPUTE_ID, 'pgdata');
      mkdirSync(path.dirname(pgdata), { recursive: true, mode: 0o755 });
      const worker = await createComputeWorker(config, { computeId: COMPUTE_ID, pgdata });
      const workerRun = worker.worker.run();

      const { client, close } = await openClient(config);
      const computes = new ComputeClient(client, config.temporal.controlPlaneTaskQueue);
      const spec = exampleComputeConfig({
        tenantId: state.tenantId,
        timelineId: state.timelineId,
        pageserverPg: endpoints.pageserver.pg,
        safekeepers: endpoints.safekeepers.map((sk) => sk.pg),
        port: state.port,
        endpointId: 'ep-main',
        storageAuthToken: config.storage.authToken,
      });
      const current = await computes.status(COMPUTE_ID).catch(() => undefined);
      say(`starting compute ${COMPUTE_ID}...`);
      if (!current || ['terminated', 'failed'].includes(current.status)) await computes.start(COMPUTE_ID, spec);
      const running = await computes.waitForRunning(COMPUTE_ID);

      say('');
      say(`compute ${COMPUTE_ID} is ${running.status} (startup ${running.metrics.total_startup_ms} ms, start LSN ${running.start_lsn ?? 'latest'})`);
      say(`connect:  psql "postgresql://alice@127.0.0.1:${state.port}/app"   (dev password: see examples/README.md)`);
      say(`web UI:   ${endpoints.temporal.ui}/namespaces/${endpoints.temporal.namespace}/workflows/compute-${COMPUTE_ID}`);
      say(`logs:     ${logFile} (this compute's worker); the stack's servers log beside it (${path.join(dir, '*.log')})`);
      say('Ctrl-C terminates the compute and stops everything.');

      let stopping = false;
      const stop = async () => {
        if (stopping) return;
        stopping = true;
        say('\nterminating the compute (fast)...');
        try {
          const { lsn } = await computes.terminate(COMPUTE_ID, 'fast');
          say(`compute terminated; safekeepers synced at ${lsn}`);
        } catch (err) {
          process.stderr.write(`terminate failed: ${(err as Error).message}\n`);
        }
        worker.worker.shutdown();
        await workerRun.catch(() => undefined);
        await worker.connection.close();
        await close();
        const stopped = await stackDown(dir);
        say(`stopped ${stopped.join(', ')}`);
        // The SDK's logger holds its last lines briefly (to order them); they belong in the file.
        Runtime.instance().flushLogs();
        process.exit(0);
      };
      process.on('SIGINT', () => void stop());
      process.on('SIGTERM', () => void stop());
      await workerRun.catch((err: Error) => {
        throw new UserFacingError(`the compute worker stopped: ${err.message}`);
      });
  }
}
