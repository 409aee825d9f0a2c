import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { WorkflowFailedError } from '@temporalio/client';
import { temporal } from '@temporalio/proto';
import { afterAll, describe, expect, it } from 'vitest';
import { ComputeClient } from '../client/compute-client';
import { openClient } from '../client/context';
import { loadConfig } from '../common/config';
import { parseComputeConfig } from '../model/compute-spec';
import { computeWorkflowId } from '../model/compute-status';
import { privilegedSpecFields, specTrustProblem } from '../model/spec-trust';
import { runCli } from './helpers/cli';
import { createTestTimeline, exampleSpecFor } from './helpers/compute';
import { uniqueId, uniqueTaskQueue } from './helpers/ids';
import { killAllProcesses, startProcess } from '../dev/child-processes';
import { testConfig, testEnv } from './helpers/stack';

const EventType = temporal.api.enums.v1.EventType;

type SpecJson = { spec: { cluster: { postgresql_conf?: string; settings: { name: string; value: string; vartype: string }[]; roles: { name: string; options?: unknown }[] } } };

/** The example spec without its privileged fields: what a restricted control plane accepts. */
function unprivileged(config: Record<string, unknown>): SpecJson {
  const copy = structuredClone(config) as SpecJson;
  delete copy.spec.cluster.postgresql_conf;
  copy.spec.cluster.settings = copy.spec.cluster.settings.filter((s) => s.name !== 'shared_preload_libraries');
  return copy;
}

function withSuperuser(config: SpecJson): SpecJson {
  const copy = structuredClone(config);
  copy.spec.cluster.roles.push({ name: 'mallory', options: [{ name: 'superuser', vartype: 'bool' }] });
  return copy;
}

function parsedSpec(json: unknown) {
  const parsed = parseComputeConfig(json);
  if (!parsed.ok) throw new Error(parsed.errors.join('; '));
  return parsed.config.spec;
}

const dir = mkdtempSync(path.join(os.tmpdir(), 'dc-trust-'));
afterAll(async () => {
  await killAllProcesses();
  rmSync(dir, { recursive: true, force: true });
});

describe('spec trust', () => {
  it('names every field that gives superuser-level power', async () => {
    const { spec } = await exampleSpecFor({ tenantId: 'a'.repeat(32), timelineId: 'b'.repeat(32) }, 5432);
    const clean = unprivileged(spec);
    expect(privilegedSpecFields(parsedSpec(clean))).toEqual([]);
    expect(specTrustProblem(parsedSpec(clean), 'restricted')).toBeUndefined();

    const found = privilegedSpecFields(parsedSpec(spec));
    expect(found.some((f) => f.startsWith('cluster.postgresql_conf:'))).toBe(true);
    expect(found.some((f) => /^cluster\.settings\[\d+\] \(shared_preload_libraries\)/.test(f))).toBe(true);

    const risky = structuredClone(clean);
    for (const name of ['include_dir', 'Archive_Command', 'restore_command', 'local_preload_libraries', 'ssl_passphrase_command', 'jit_provider']) {
      risky.spec.cluster.settings.push({ name, value: "'x'", vartype: 'string' });
    }
    risky.spec.cluster.roles.push({ name: 'r1', options: [{ name: 'SUPERUSER', vartype: 'bool' }] });
    risky.spec.cluster.roles.push({ name: 'r2', options: [{ name: 'replication', vartype: 'bool' }, { name: 'LOGIN', vartype: 'bool' }] });
    risky.spec.cluster.roles.push({ name: 'r3', options: [{ name: 'CREATEROLE', vartype: 'bool' }] });
    const named = privilegedSpecFields(parsedSpec(risky)).join('\n');
    for (const name of ['include_dir', 'Archive_Command', 'restore_command', 'local_preload_libraries', 'ssl_passphrase_command', 'jit_provider']) {
      expect(named).toContain(`(${name})`);
    }
    expect(named).toMatch(/cluster\.roles\[\d+\]\.options\[0\] \(SUPERUSER for role "r1"\)/);
    expect(named).toMatch(/cluster\.roles\[\d+\]\.options\[0\] \(REPLICATION for role "r2"\)/);
    expect(named).toMatch(/CREATEROLE for role "r3"/);
    expect(named).not.toMatch(/LOGIN/);
    // Full trust (the default) allows them all.
    expect(specTrustProblem(parsedSpec(risky), 'full')).toBeUndefined();
  });

  it('is configured by DURABLE_COMPUTE_SPEC_TRUST, full by default', () => {
    expect(loadConfig({}).specTrust).toBe('full');
    expect(loadConfig({ DURABLE_COMPUTE_SPEC_TRUST: 'restricted' }).specTrust).toBe('restricted');
    expect(() => loadConfig({ DURABLE_COMPUTE_SPEC_TRUST: 'paranoid' })).toThrow(/DURABLE_COMPUTE_SPEC_TRUST: expected full or restricted/);
  });

  it('the CLI with restricted trust refuses a privileged spec, naming the field, and starts nothing', async () => {
    const timeline = await createTestTimeline();
    const { spec } = await exampleSpecFor(timeline);
    const file = path.join(dir, 'superuser.json');
    writeFileSync(file, JSON.stringify(withSuperuser(unprivileged(spec))));
    const computeId = uniqueId('trust');
    const result = await runCli(['compute', 'start', '--compute-id', computeId, '--spec', file], {
      env: { ...testEnv(), DURABLE_COMPUTE_SPEC_TRUST: 'restricted' },
    });
    expect(result.code).not.toBe(0);
    expect(result.stderr).toMatch(/DURABLE_COMPUTE_SPEC_TRUST=restricted/);
    expect(result.stderr).toMatch(/cluster\.roles\[2\]\.options\[0\] \(SUPERUSER for role "mallory"\)/);
    const { client, close } = await openClient(testConfig());
    try {
      await expect(client.workflow.getHandle(computeWorkflowId(computeId)).describe()).rejects.toThrow(/not found/i);
    } finally {
      await close();
    }
  });

  it('a restricted control-plane worker fails a privileged compute at start and rejects a privileged configure, running nothing', async () => {
    const taskQueue = uniqueTaskQueue('trust');
    await startProcess('bin/durable-compute.mjs', ['worker', 'control-plane'], {
      env: { ...testEnv(), DURABLE_COMPUTE_TASK_QUEUE: taskQueue, DURABLE_COMPUTE_SPEC_TRUST: 'restricted' },
      readyLine: /control-plane worker ready on .* \(spec trust restricted\)/,
      timeoutMs: 120_000,
    });
    const timeline = await createTestTimeline();
    const { spec } = await exampleSpecFor(timeline);
    // A client that trusts everything, as one that bypasses the CLI's check would.
    const { client, close } = await openClient(testConfig());
    const computes = new ComputeClient(client, taskQueue, 'full');
    try {
      const refusedId = uniqueId('trust');
      await computes.start(refusedId, spec);
      const handle = client.workflow.getHandle(computeWorkflowId(refusedId));
      const failure = await handle.result().then(
        () => undefined,
        (err: unknown) => err,
      );
      expect(failure).toBeInstanceOf(WorkflowFailedError);
      const cause = (failure as WorkflowFailedError).cause!;
      expect(cause.message).toMatch(/DURABLE_COMPUTE_SPEC_TRUST=restricted/);
      expect(cause.message).toMatch(/cluster\.postgresql_conf/);
      expect(cause.message).toMatch(/cluster\.settings\[\d+\] \(shared_preload_libraries\)/);
      const events = (await handle.fetchHistory()).events ?? [];
      expect(events.map((e) => e.eventType)).not.toContain(EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED);

      // An empty compute (no spec yet) starts; configuring it with a privileged spec is rejected.
      const emptyId = uniqueId('trust');
      await computes.start(emptyId, undefined);
      await expect(computes.configure(emptyId, withSuperuser(unprivileged(spec)))).rejects.toThrow(
        /configure refused: .*SUPERUSER for role "mallory"/,
      );
      expect((await computes.status(emptyId)).status).toBe('empty');
      const emptyEvents = (await client.workflow.getHandle(computeWorkflowId(emptyId)).fetchHistory()).events ?? [];
      expect(emptyEvents.map((e) => e.eventType)).not.toContain(EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED);
      await client.workflow.getHandle(computeWorkflowId(emptyId)).terminate('test cleanup');
    } finally {
      await close();
    }
  });
});
