import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { uniqueId, uniqueTaskQueue } from './helpers/ids';
import { killAllProcesses, startProcess } from '../dev/child-processes';
import { testClient, testEnv } from './helpers/stack';
import { readJournal } from './fixtures/journal-activities';

afterEach(killAllProcesses);

async function waitFor(what: string, predicate: () => boolean, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

describe('a workflow whose worker process is SIGKILLed mid-activity', () => {
  it('completes on a new worker without re-running finished activities', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'dc-resume-'));
    const journal = path.join(dir, 'journal.jsonl');
    const release = path.join(dir, 'release');
    const taskQueue = uniqueTaskQueue('resume');
    const workflowId = uniqueId('three-steps');
    const { client, close } = await testClient();
    try {
      const first = await startProcess('test/fixtures/journal-worker.ts', [taskQueue], { env: testEnv() });
      const handle = await client.workflow.start('threeStepWorkflow', { taskQueue, workflowId, args: [journal, release] });

      await waitFor('the second step to start', () => readJournal(journal).some((e) => e.step === 'second' && e.event === 'start'));
      await first.kill('SIGKILL');
      expect((await first.exited).signal).toBe('SIGKILL');

      writeFileSync(release, '');
      const second = await startProcess('test/fixtures/journal-worker.ts', [taskQueue], { env: testEnv() });
      await expect(handle.result()).resolves.toEqual(['first', 'second', 'third']);

      const entries = readJournal(journal);
      const count = (step: string, event: 'start' | 'finish') => entries.filter((e) => e.step === step && e.event === event).length;
      // The step finished before the kill ran exactly once, on the first worker.
      expect(count('first', 'start')).toBe(1);
      expect(count('first', 'finish')).toBe(1);
      expect(entries.find((e) => e.step === 'first')?.pid).toBe(first.pid);
      // The interrupted step was retried on the second worker and finished once.
      expect(count('second', 'start')).toBe(2);
      expect(count('second', 'finish')).toBe(1);
      expect(entries.find((e) => e.step === 'second' && e.event === 'finish')).toMatchObject({ pid: second.pid, attempt: 2 });
      expect(count('third', 'start')).toBe(1);

      // History agrees: the first activity was scheduled once.
      const history = await handle.fetchHistory();
      const scheduled = (history.events ?? []).filter((e) => e.activityTaskScheduledEventAttributes);
      expect(scheduled).toHaveLength(3);

      // Activity log lines name the activity, never its task token.
      // (The worker logs JSON lines: common/logger.ts.)
      const started = second.output().split('\n').filter((line) => line.includes('journal step started'));
      expect(started.length).toBeGreaterThan(0);
      expect(JSON.parse(started[0]!)).toMatchObject({ activityType: 'journalStep' });
      expect(second.output()).not.toMatch(/taskToken/);
    } finally {
      await close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('drains and exits cleanly on SIGTERM', async () => {
    const worker = await startProcess('test/fixtures/journal-worker.ts', [uniqueTaskQueue('graceful')], { env: testEnv() });
    await worker.kill('SIGTERM');
    const { code } = await worker.exited;
    expect(code).toBe(0);
    expect(worker.output()).toContain('worker stopped');
  });
});
