import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { MockActivityEnvironment } from '@temporalio/testing';
import { afterAll, describe, expect, it } from 'vitest';
import { createStartCompute } from '../activities/compute/startup';
import type { StartupSteps } from '../drivers/compute-startup/steps';
import type { StartComputeResult } from '../activities/compute/types';
import { createFailpoints } from '../activities/failpoints';
import type { ComputeSpec } from '../model/compute-spec';

const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

describe('the one-activity startup on one PGDATA', () => {
  it('runs one attempt at a time: a retry that arrives while a timed-out attempt still runs waits for it, then redoes nothing', async () => {
    const pgdata = mkdtempSync(path.join(os.tmpdir(), 'dc-startup-'));
    dirs.push(pgdata);
    const events: string[] = [];
    let unpacking = 0;
    let overlapped = false;
    // Stand-in steps (no Postgres): the base backup takes a while, as an unpack under load does.
    const steps = {
      backendConf: () => '',
      preparePgdata: async () => void events.push('prepare'),
      writePostgresConfig: async () => ({ ms: 1 }),
      checkSafekeepersSynced: async () => ({ synced: true, lsn: '0/16B5A50', ms: 1 }),
      syncSafekeepers: async () => ({ lsn: '0/16B5A50', ms: 1 }),
      hasCompleteBasebackup: async () => events.includes('basebackup done'),
      fetchBasebackup: async () => {
        unpacking++;
        if (unpacking > 1) overlapped = true;
        events.push('basebackup');
        await sleep(300);
        unpacking--;
        events.push('basebackup done');
        return { bytes: 1, ms: 300, connectMicros: 1 };
      },
      prepareStartupFiles: async () => undefined,
      startPostgres: async () => ({ pid: 1, ms: 1 }),
      applySpec: async () => ({ changes: [], ms: 1 }),
    } as unknown as StartupSteps;
    const startCompute = createStartCompute({ pgdata, steps, failpoint: createFailpoints(new Set()), log: (l) => events.push(l) });
    const spec = { mode: { kind: 'Primary' }, skip_pg_catalog_updates: false } as unknown as ComputeSpec;
    const input = { incarnation: 'inc-1', spec };
    const first = new MockActivityEnvironment({ attempt: 1 }).run(startCompute, input);
    await sleep(50);
    const retry = new MockActivityEnvironment({ attempt: 2 }).run(startCompute, input);
    const [a, b] = (await Promise.all([first, retry])) as [StartComputeResult, StartComputeResult];
    expect(overlapped).toBe(false);
    expect(events.filter((e) => e === 'basebackup')).toHaveLength(1);
    expect(events.filter((e) => e === 'prepare')).toHaveLength(1);
    expect(b.lsn).toBe(a.lsn);
    expect(b.metrics.basebackup_ms).toBe(300);
  });
});
