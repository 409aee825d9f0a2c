import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { projectRoot, tsNodeArgs } from '../common/paths';
import { CONTROL_PLANE_WORKFLOW_HEAP_MIB } from '../workers/control-plane';

/**
 * The control-plane worker caps the heap of the workflow thread the SDK starts (bench/results/fleet.md:
 * without a cap, starting computes piled up gigabytes of garbage). The flag is process-wide, so each
 * case runs in its own Node process: the limit a worker thread started afterwards gets.
 */
const run = promisify(execFile);
const probe = `
import { Worker } from 'node:worker_threads';
import { limitWorkflowThreadHeap } from ${JSON.stringify(path.join(projectRoot, 'workers', 'control-plane.ts'))};
limitWorkflowThreadHeap();
const thread = new Worker("require('node:worker_threads').parentPort.postMessage(require('node:v8').getHeapStatistics().heap_size_limit)", { eval: true, execArgv: [] });
thread.once('message', (limit) => { console.log(JSON.stringify({ threadLimitMiB: limit / 2 ** 20 })); process.exit(0); });
`;

async function threadHeapLimitMiB(nodeOptions?: string): Promise<number> {
  const { stdout } = await run(process.execPath, [...tsNodeArgs(), '--input-type=module', '--eval', probe], {
    cwd: projectRoot,
    env: { ...process.env, NODE_OPTIONS: nodeOptions ?? '' },
    timeout: 120_000,
  });
  return (JSON.parse(stdout.trim().split('\n').at(-1)!) as { threadLimitMiB: number }).threadLimitMiB;
}

describe('control-plane workflow thread heap', () => {
  it('caps the old generation of a thread started after it', async () => {
    const limit = await threadHeapLimitMiB();
    // The old generation's cap plus the young generation V8 adds on top of it.
    expect(limit).toBeGreaterThanOrEqual(CONTROL_PLANE_WORKFLOW_HEAP_MIB);
    expect(limit).toBeLessThan(CONTROL_PLANE_WORKFLOW_HEAP_MIB + 100);
  }, 130_000);

  it("leaves an operator's --max-old-space-size alone", async () => {
    const limit = await threadHeapLimitMiB('--max-old-space-size=1500');
    expect(limit).toBeGreaterThanOrEqual(1500);
    expect(limit).toBeLessThan(1600);
  }, 130_000);
});
