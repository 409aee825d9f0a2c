import { chmodSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import os from 'node:os';
import path from 'node:path';
import { inject } from 'vitest';
import { ComputeClient } from '../../client/compute-client';
import { exampleComputeConfig } from '../../client/example-spec';
import { openClient } from '../../client/context';
import { createTimeline } from '../../client/timelines';
import { freePort } from '../../dev/processes';
import { neonId, uniqueId } from './ids';
import { startProcess, type WorkerProcess } from '../../dev/child-processes';
import { testConfig, testEnv } from './stack';

/** Short watch intervals so failures are noticed within seconds in tests. */
export const TEST_WORKFLOW_OPTIONS = { watchReportSeconds: 2, watchHeartbeatTimeoutSeconds: 5 };

export interface TestTimeline {
  tenantId: string;
  timelineId: string;
}

export async function createTestTimeline(): Promise<TestTimeline> {
  const tenantId = neonId();
  const timelineId = neonId();
  await createTimeline(testConfig().storage, tenantId, { new_timeline_id: timelineId, pg_version: 15 });
  return { tenantId, timelineId };
}

/** The example spec (two roles, two databases, settings, a delete_role delta) for a timeline on the test stack. */
export async function exampleSpecFor(timeline: TestTimeline, port?: number): Promise<{ spec: Record<string, unknown>; port: number }> {
  const stack = inject('stack');
  const chosen = port ?? (await freePort());
  const spec = exampleComputeConfig({
    tenantId: timeline.tenantId,
    timelineId: timeline.timelineId,
    pageserverPg: stack.pageserver.pg,
    safekeepers: stack.safekeepers.map((sk) => sk.pg),
    port: chosen,
    endpointId: uniqueId('ep'),
    storageAuthToken: testConfig().storage.authToken,
  });
  return { spec, port: chosen };
}

const pgdatas: string[] = [];

/** A PGDATA location a PostgreSQL running as the `postgres` user can reach. */
export function testPgdata(): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'dc-compute-'));
  chmodSync(dir, 0o755);
  const pgdata = path.join(dir, 'pgdata');
  pgdatas.push(pgdata);
  return pgdata;
}

function pidFrom(file: string): number | undefined {
  try {
    const pid = Number.parseInt(readFileSync(file, 'utf8').split('\n')[0] ?? '', 10);
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

function commandLine(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8');
  } catch {
    return '';
  }
}

/**
 * Stops whatever a test's computes left running (a compute that failed keeps its Postgres, as
 * compute_ctl's would): the postmaster (immediate shutdown) and the WAL pusher, then removes the
 * directories. For every compute test file's teardown.
 */
export async function cleanupComputes(): Promise<void> {
  for (const pgdata of pgdatas.splice(0)) {
    for (const [file, signal, command] of [
      ['postmaster.pid', 'SIGQUIT', 'postgres'],
      ['wal_pusher.pid', 'SIGKILL', 'wal-pusher'],
    ] as const) {
      const pid = pidFrom(path.join(pgdata, file));
      // Only a process that still is what the pid file says (pids get reused).
      if (pid === undefined || !commandLine(pid).includes(command)) continue;
      try {
        process.kill(pid, signal);
      } catch {
        continue;
      }
      for (let i = 0; i < 100; i++) {
        try {
          process.kill(pid, 0);
        } catch {
          break;
        }
        await sleep(100);
      }
    }
    rmSync(path.dirname(pgdata), { recursive: true, force: true });
  }
}

/** Environment for child processes of the compute tests: the stack plus its payload key. */
export function computeEnv(extra: Record<string, string> = {}): Record<string, string> {
  return { ...testEnv(), ...extra };
}

/**
 * Starts `durable-compute worker compute` as a separate process, as inside a compute VM. Its HTTP
 * API listens on a free loopback port (tests run many computes at once); see computeApiPort.
 */
export function startComputeWorker(
  computeId: string,
  pgdata: string,
  failpoints: string[] = [],
  extra: { args?: string[]; env?: Record<string, string> } = {},
): Promise<WorkerProcess> {
  return startProcess(
    'bin/durable-compute.mjs',
    ['worker', 'compute', '--compute-id', computeId, '--pgdata', pgdata, '--http-port', '0', '--http-host', '127.0.0.1', ...(extra.args ?? [])],
    {
      env: computeEnv({ ...(failpoints.length ? { DURABLE_COMPUTE_FAILPOINTS: failpoints.join(','), DURABLE_COMPUTE_ENABLE_FAILPOINTS: '1' } : {}), ...extra.env }),
      readyLine: /compute worker ready/,
    },
  );
}

/** The port the compute worker's HTTP API listens on, from its start-up line. */
export function computeApiPort(worker: WorkerProcess): number {
  const match = /compute HTTP API listening on [^\s]+:(\d+)/.exec(worker.output());
  if (!match) throw new Error(`the compute worker did not say where its HTTP API listens:\n${worker.output()}`);
  return Number(match[1]);
}

export async function testComputeClient(): Promise<{ computes: ComputeClient; close: () => Promise<void> }> {
  const config = testConfig();
  const { client, close } = await openClient(config);
  return { computes: new ComputeClient(client, config.temporal.controlPlaneTaskQueue), close };
}
