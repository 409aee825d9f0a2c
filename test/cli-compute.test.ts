import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { neonId, uniqueId } from './helpers/ids';
import { runCli } from './helpers/cli';
import { cleanupComputes, exampleSpecFor, startComputeWorker, testPgdata } from './helpers/compute';
import { killAllProcesses } from '../dev/child-processes';
import { testEnv } from './helpers/stack';

describe('the durable-compute CLI drives a compute', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'dc-cli-'));
  afterAll(async () => {
    await killAllProcesses();
    rmSync(dir, { recursive: true, force: true });
  });
  const cli = (args: string[]) => runCli(args, { env: testEnv() });

  it('timeline create, compute start --wait, status, list, lfc offload, terminate', async () => {
    const created = await cli(['timeline', 'create', '--json']);
    expect(created.stderr).toBe('');
    const timeline = JSON.parse(created.stdout) as { tenant_id: string; timeline_id: string; last_record_lsn: string };
    expect(timeline.timeline_id).toMatch(/^[0-9a-f]{32}$/);

    const computeId = uniqueId('cli');
    const { spec } = await exampleSpecFor({ tenantId: timeline.tenant_id, timelineId: timeline.timeline_id });
    const specFile = path.join(dir, 'spec.json');
    writeFileSync(specFile, JSON.stringify(spec));
    await startComputeWorker(computeId, testPgdata());

    const started = await cli(['compute', 'start', '--compute-id', computeId, '--spec', specFile, '--wait', '--json']);
    expect(started.code, started.stderr).toBe(0);
    expect(JSON.parse(started.stdout)).toMatchObject({ compute_id: computeId, status: 'running', tenant: timeline.tenant_id });

    const again = await cli(['compute', 'start', '--compute-id', computeId, '--spec', specFile]);
    expect(again.code).not.toBe(0);
    expect(again.stderr).toMatch(/already has a running workflow \(status running\)/);

    expect(JSON.parse((await cli(['compute', 'status', '--compute-id', computeId, '--json'])).stdout).status).toBe('running');
    const listed = JSON.parse((await cli(['compute', 'list', '--json'])).stdout) as { computeId: string }[];
    expect(listed.map((e) => e.computeId)).toContain(computeId);

    const offload = await cli(['lfc', 'offload', '--compute-id', computeId, '--wait', '--json']);
    expect(offload.code, offload.stderr).toBe(0);
    expect(JSON.parse(offload.stdout).status).toMatch(/^(completed|skipped)$/);

    const terminated = await cli(['compute', 'terminate', '--compute-id', computeId, '--json']);
    expect(terminated.code, terminated.stderr).toBe(0);
    expect(JSON.parse(terminated.stdout).lsn).toMatch(/^[0-9A-F]+\/[0-9A-F]+$/);
  });

  it('exits non-zero with the error once a compute fails, and names bad input', async () => {
    const computeId = uniqueId('cli-fail');
    // A timeline neither the safekeepers nor the pageserver have: syncing the safekeepers fails
    // permanently, so the start fails at once instead of after its retries.
    const { spec } = await exampleSpecFor({ tenantId: neonId(), timelineId: neonId() });
    const specFile = path.join(dir, 'unknown-timeline.json');
    writeFileSync(specFile, JSON.stringify(spec));
    await startComputeWorker(computeId, testPgdata());
    const failed = await cli(['compute', 'start', '--compute-id', computeId, '--spec', specFile, '--wait']);
    expect(failed.code).not.toBe(0);
    expect(failed.stderr).toMatch(/is failed: startup failed/);

    const missing = await cli(['compute', 'start', '--compute-id', uniqueId('x'), '--spec', path.join(dir, 'nope.json')]);
    expect(missing.code).not.toBe(0);
    expect(missing.stderr).toMatch(/cannot read spec file .*nope\.json/);

    writeFileSync(path.join(dir, 'broken.json'), '{"spec": ');
    const broken = await cli(['compute', 'start', '--compute-id', uniqueId('x'), '--spec', path.join(dir, 'broken.json')]);
    expect(broken.stderr).toMatch(/broken\.json is not valid JSON/);

    const badId = await cli(['compute', 'status', '--compute-id', 'no/such id']);
    expect(badId.code).not.toBe(0);
    expect(badId.stderr).toMatch(/invalid compute ID/);
    const unknown = await cli(['compute', 'status', '--compute-id', uniqueId('ghost')]);
    expect(unknown.stderr).toMatch(/no compute with ID/);
  });
});

// Whatever a failed compute left running dies with this file's tests.
afterAll(async () => {
  await killAllProcesses();
  await cleanupComputes();
});
