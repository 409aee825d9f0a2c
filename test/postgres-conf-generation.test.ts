import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ComputeClient } from '../client/compute-client';
import { killAllProcesses } from '../dev/child-processes';
import { cleanupComputes, createTestTimeline, exampleSpecFor, startComputeWorker, testComputeClient, testPgdata, TEST_WORKFLOW_OPTIONS } from './helpers/compute';
import { uniqueId } from './helpers/ids';

/** The settings a postgresql.conf sets, in file order (comments, blank lines and includes left out). */
function settingsOf(text: string): { name: string; value: string }[] {
  const settings: { name: string; value: string }[] = [];
  for (const line of text.split('\n')) {
    const m = /^\s*([A-Za-z_][A-Za-z0-9_.$-]*)\s*(?:=\s*|\s+)(.*)$/.exec(line);
    if (!m || line.trimStart().startsWith('#')) continue;
    const name = m[1]!.toLowerCase();
    if (name.startsWith('include')) continue;
    settings.push({ name, value: m[2]!.trim() });
  }
  return settings;
}

describe('the finished postgresql.conf of a compute', () => {
  const computeId = uniqueId('conf');
  const pgdata = testPgdata();
  let computes: ComputeClient;
  let close: () => Promise<void>;

  beforeAll(async () => {
    ({ computes, close } = await testComputeClient());
    await startComputeWorker(computeId, pgdata);
  });
  afterAll(async () => {
    await computes.terminate(computeId, 'immediate').catch(() => undefined);
    await close();
    await killAllProcesses();
    await cleanupComputes();
  });

  it('sets each setting once, and neon.safekeepers carries the spec\'s safekeepers_generation as g#3:', async () => {
    const { spec } = await exampleSpecFor(await createTestTimeline());
    const inner = spec.spec as Record<string, unknown>;
    inner.safekeepers_generation = 3;
    await computes.start(computeId, spec, TEST_WORKFLOW_OPTIONS);
    expect(await computes.waitForRunning(computeId)).toMatchObject({ status: 'running', error: null });

    const text = readFileSync(path.join(pgdata, 'postgresql.conf'), 'utf8');
    const settings = settingsOf(text);
    const names = settings.map((s) => s.name);
    const repeated = names.filter((n, i) => names.indexOf(n) !== i);
    expect(repeated, `set more than once in:\n${text}`).toEqual([]);
    // The spec's storage identity and settings, the storage backend's and the cache backend's settings are all there.
    expect(names).toEqual(expect.arrayContaining(['neon.tenant_id', 'neon.timeline_id', 'neon.safekeepers', 'wal_level', 'synchronous_standby_names', 'pg_prewarm.autoprewarm']));
    const safekeepers = settings.find((s) => s.name === 'neon.safekeepers')!.value;
    const stackSafekeepers = (inner.safekeeper_connstrings as string[]).join(',');
    expect(safekeepers).toBe(`'g#3:${stackSafekeepers}'`);
  });
});
