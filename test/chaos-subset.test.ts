/**
 * A few cells of the chaos table (npm run chaos, test/chaos/), asserting its targets: the
 * workflow completes, no completed step is redone, no acknowledged commit is lost. On the shared
 * test stack, so only faults that disturb no other suite: a compute worker killed in the base
 * backup, and S3 answering 503 to the cache offload and prewarm (through toxiproxy and the fault
 * layer in front of the stack's S3).
 */
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { startChaosStack, type ChaosStack } from './chaos/chaos-stack';
import { runCacheRow } from './chaos/cache-row';
import { runComputeRow } from './chaos/compute-row';
import { FAULTS, WORKER_KILL } from './chaos/faults';
import { cacheSteps, computeStartupPoints } from './chaos/steps';
import { meetsTargets } from './chaos/table';
import { killAllProcesses } from '../dev/child-processes';

let stack: ChaosStack;
const log = () => {};

beforeAll(async () => {
  // The first run on a machine builds toxiproxy with go install (about a minute); later runs reuse it.
  stack = await startChaosStack({ log: (l) => console.log(l), existing: { endpoints: inject('stack'), shared: true } });
}, 300_000);
afterAll(async () => {
  await killAllProcesses();
  await stack?.stop();
});

describe('the chaos table, a short subset', () => {
  it('enumerates the steps from the code: every startup pause point, and the cache activities', async () => {
    const points = (await computeStartupPoints()).map((p) => p.failpoint);
    expect(points).toEqual(['preparePgdata', 'writePostgresConfig', 'syncSafekeepers', 'fetchBasebackup', 'prepareStartupFiles', 'startPostgres', 'applySpec']);
    expect(cacheSteps()).toEqual(['offloadCacheState', 'prewarmCache']);
  });

  it('a compute worker SIGKILLed in the base backup: the compute runs, nothing completed is redone', async () => {
    const cells = await runComputeRow({ stack, log }, WORKER_KILL, ['fetchBasebackup'], { running: false });
    expect(cells).toHaveLength(1);
    const [cell] = cells;
    expect(cell).toMatchObject({ step: 'fetchBasebackup', fault: WORKER_KILL, completed: true, redone: [] });
    expect(cell!.note).toMatch(/killed in the step/);
    expect(meetsTargets(cell!)).toBe(true);
  }, 150_000);

  it('S3 answering 503 to the cache offload and prewarm: both complete, nothing sent twice, no commit lost', async () => {
    const s3503 = FAULTS.find((f) => f.name === 's3-503')!;
    const cells = await runCacheRow({ stack, log }, s3503, ['offloadCacheState', 'prewarmCache']);
    expect(cells.map((c) => [c.step, c.completed])).toEqual([
      ['offloadCacheState', true],
      ['prewarmCache', true],
    ]);
    for (const cell of cells) {
      // The fault was met: S3 requests were answered 503 during the step.
      expect(cell.note).toMatch(/\d+ S3 requests answered with the fault/);
      expect(meetsTargets(cell)).toBe(true);
    }
    expect(cells[0]!.bytesUp!.total).toBeGreaterThan(0);
    expect(cells[0]!.bytesUp!.again).toBe(0);
    const commits = cells[1]!.commits!;
    expect(commits.acknowledged).toBeGreaterThan(10);
    expect(commits.lost).toBe(0);
  }, 150_000);
});
