import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inject } from 'vitest';
import { projectRoot } from '../common/paths';
import { computeWorkflowId } from '../model/compute-status';
import type { ComputeClient } from '../client/compute-client';
import { findChromium, launchLoopbackBrowser } from './helpers/browser';
import { cleanupComputes, createTestTimeline, exampleSpecFor, startComputeWorker, testComputeClient, testPgdata, TEST_WORKFLOW_OPTIONS } from './helpers/compute';
import { uniqueId } from './helpers/ids';
import { killAllProcesses } from '../dev/child-processes';
import { testClient } from './helpers/stack';

/** The README's screenshot is refreshed only on request, so a test run leaves the checkout unchanged. */
const SCREENSHOT = process.env.RECORD_SCREENSHOTS === '1' ? path.join(projectRoot, 'docs', 'web-ui-compute.png') : path.join(projectRoot, '.cache', 'web-ui-test', 'web-ui-compute.png');

describe('finding Chromium', () => {
  it('fails with what is missing and the command that installs it', () => {
    expect(() => findChromium({ CHROMIUM_PATH: '/nonexistent/chromium' })).toThrow(
      /\/nonexistent\/chromium is not an executable \(from CHROMIUM_PATH\)\. Install Debian's with `apt-get install -y chromium`/,
    );
    expect(findChromium({ CHROMIUM_PATH: process.execPath })).toBe(process.execPath);
  });
});

describe('the Web UI shows a running compute decoded through the codec server (real Chromium)', () => {
  const stack = inject('stack');
  const computeId = uniqueId('webui');
  let computes: ComputeClient;
  let close: () => Promise<void>;
  let tenantId: string;
  let timelineId: string;

  beforeAll(async () => {
    // A stack started before the codec server existed (DURABLE_COMPUTE_TEST_STACK_DIR) has none.
    const codecUp = await fetch(`${stack.codec?.endpoint}/health`).then((r) => r.ok, () => false);
    if (!codecUp) throw new Error(`the test stack in ${stack.stackDir} runs no codec server; restart it (durable-compute dev down, then dev up) so that it does`);
    ({ computes, close } = await testComputeClient());
    const timeline = await createTestTimeline();
    ({ tenantId, timelineId } = timeline);
    const { spec } = await exampleSpecFor(timeline);
    await startComputeWorker(computeId, testPgdata());
    // A watch round long enough to hold heartbeats (one every half timeout): the page shows the pending watch's progress.
    await computes.start(computeId, spec, { ...TEST_WORKFLOW_OPTIONS, watchReportSeconds: 60, watchHeartbeatTimeoutSeconds: 4 });
    await computes.waitForRunning(computeId);
  });
  afterAll(async () => {
    await computes.terminate(computeId, 'immediate').catch(() => undefined);
    await close();
    await killAllProcesses();
    await cleanupComputes();
  });

  it("opens the compute's workflow page: status, tenant and summaries are text, ciphertext is nowhere", async () => {
    // What the UI would show without the codec server: the summary payload as stored, encrypted.
    const { client, close: closeRaw } = await testClient();
    let rawCiphertexts: string[];
    try {
      const raw = await client.workflowService.describeWorkflowExecution({ namespace: stack.temporal.namespace, execution: { workflowId: computeWorkflowId(computeId) } });
      const summary = raw.executionConfig?.userMetadata?.summary;
      expect(Buffer.from(summary?.metadata?.encoding ?? []).toString()).toBe('binary/encrypted');
      rawCiphertexts = [Buffer.from(summary!.data!).toString('base64')];
    } finally {
      await closeRaw();
    }

    const browser = await launchLoopbackBrowser();
    const debugDir = path.join(projectRoot, '.cache', 'web-ui-test');
    try {
      const page = await browser.context.newPage();
      const codecCalls: { url: string; status: number }[] = [];
      page.on('response', (res) => {
        if (res.url().startsWith(stack.codec.endpoint)) codecCalls.push({ url: res.url(), status: res.status() });
      });
      // Current details are markdown, which the UI renders in a frame of its own: read every frame.
      const visibleText = async () => (await Promise.all(page.frames().map((f) => f.locator('body').innerText().catch(() => '')))).join('\n');
      const waitForText = async (what: string | RegExp, timeoutMs = 60_000) => {
        const deadline = Date.now() + timeoutMs;
        for (;;) {
          const text = await visibleText();
          if (typeof what === 'string' ? text.includes(what) : what.test(text)) return text;
          if (Date.now() > deadline) {
            mkdirSync(debugDir, { recursive: true });
            writeFileSync(path.join(debugDir, 'page.txt'), text);
            await page.screenshot({ path: path.join(debugDir, 'page.png'), fullPage: true });
            throw new Error(`the Web UI never showed ${String(what)} within ${timeoutMs / 1000} s; its text and a screenshot are in ${debugDir}`);
          }
          await page.waitForTimeout(500);
        }
      };

      const workflowPage = `${stack.temporal.ui}/namespaces/${stack.temporal.namespace}/workflows/${computeWorkflowId(computeId)}`;
      await page.goto(workflowPage, { timeout: 60_000 });
      await page.getByRole('tab', { name: 'User Metadata' }).click({ timeout: 60_000 });
      // The static summary, the current details (status, tenant, timeline, LSN) and the activity summaries.
      // Each part is decoded by a call of its own, so each is waited for.
      for (const expected of [
        /status: running/,
        `compute ${computeId} on ${tenantId}/${timelineId}`,
        new RegExp(`tenant: ${tenantId}\\s+timeline: ${timelineId}`),
        /start LSN: [0-9A-F]+\/[0-9A-F]+/,
        ...['start compute (fresh PGDATA, LSN, base backup, Postgres, roles and databases)', 'watch Postgres'],
      ]) {
        await waitForText(expected);
      }
      const metadata = await visibleText();
      for (const ciphertext of [...rawCiphertexts, 'binary/encrypted', Buffer.from('binary/encrypted').toString('base64')]) expect(metadata).not.toContain(ciphertext);
      mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
      await page.screenshot({ path: SCREENSHOT });

      // The watch step's heartbeat (its progress: when Postgres was last active), decoded too.
      await page.getByRole('tab', { name: /Pending Activities/ }).click();
      const pending = await waitForText(/"lastActive": "\d{4}-\d\d-\d\dT/);
      expect(pending).toContain('watchPostgres');
      expect(pending).not.toContain(Buffer.from('binary/encrypted').toString('base64'));

      // All of it came through the stack's codec server.
      expect(codecCalls.filter((c) => c.url.endsWith('/decode') && c.status === 200).length).toBeGreaterThan(0);
      expect(codecCalls.filter((c) => c.status !== 200 && c.status !== 204)).toEqual([]);
    } finally {
      await browser.close();
    }
  });
});
