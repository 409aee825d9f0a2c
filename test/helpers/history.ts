import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import type { PayloadCodec } from '@temporalio/common';
import { EncryptionCodec } from '../../common/codec/encryption-codec';
import { projectRoot } from '../../common/paths';
import { provisionTemporalCli } from '../../dev/temporal-cli';
import { testConfig } from './stack';

/** The recorded histories test/workflow-replay.test.ts replays, decrypted: name → file. */
export const replayFixture = (name: 'compute-lifecycle' | 'import-pgdata' | 'import-dump-restore') =>
  path.join(projectRoot, 'test', 'fixtures', 'histories', `${name}.json`);


/**
 * With RECORD_HISTORIES=1, writes the finished workflow's history (decrypted with the test
 * stack's payload key) as the named replay fixture. Run after a deliberate, patched change.
 */
export async function recordReplayFixtureIfAsked(name: Parameters<typeof replayFixture>[0], workflowId: string, runId?: string): Promise<void> {
  if (process.env.RECORD_HISTORIES !== '1') return;
  const cfg = testConfig();
  const codec = new EncryptionCodec(cfg.payloadKeys!.current);
  const cli = (await provisionTemporalCli()).path;
  const shown = execFileSync(
    cli,
    ['workflow', 'show', '--workflow-id', workflowId, ...(runId ? ['--run-id', runId] : []), '--address', cfg.temporal.address, '--namespace', cfg.temporal.namespace, '--output', 'json', '--no-json-shorthand-payloads'],
    { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 },
  );
  writeFileSync(replayFixture(name), await decryptedHistoryJson(shown, codec));
}

/**
 * Everything readable in a workflow history as the server stores it: every string field and every
 * payload's bytes decoded as UTF-8, plus each payload's encoding. Used to prove secrets are absent.
 */
export function historyTexts(history: unknown): { texts: string[]; payloadEncodings: { path: string; encoding: string }[] } {
  const texts: string[] = [];
  const payloadEncodings: { path: string; encoding: string }[] = [];
  const visit = (value: unknown, at = ''): void => {
    if (value === null || value === undefined) return;
    if (typeof value === 'string') {
      texts.push(value);
      return;
    }
    if (value instanceof Uint8Array) {
      texts.push(Buffer.from(value).toString('utf8'));
      return;
    }
    if (Array.isArray(value)) {
      value.forEach((v, i) => visit(v, `${at}[${i}]`));
      return;
    }
    if (typeof value === 'object') {
      const record = value as Record<string, unknown>;
      if (record.data instanceof Uint8Array && record.metadata && typeof record.metadata === 'object') {
        const encoding = (record.metadata as Record<string, unknown>).encoding;
        if (encoding instanceof Uint8Array) payloadEncodings.push({ path: at, encoding: Buffer.from(encoding).toString('utf8') });
      }
      for (const [key, v] of Object.entries(record)) visit(v, `${at}.${key}`);
    }
  };
  visit(history);
  return { texts, payloadEncodings };
}

/**
 * A history in proto JSON (as `temporal workflow show --output json` prints it) with every
 * encrypted payload decrypted, for a replay fixture that needs no key.
 */
export async function decryptedHistoryJson(historyJson: string, codec: PayloadCodec): Promise<string> {
  const encrypted = Buffer.from('binary/encrypted').toString('base64');
  const visit = async (value: unknown): Promise<unknown> => {
    if (value === null || typeof value !== 'object') return value;
    if (Array.isArray(value)) return Promise.all(value.map(visit));
    const record = value as Record<string, unknown>;
    const metadata = record.metadata as Record<string, string> | undefined;
    if (typeof record.data === 'string' && metadata?.encoding === encrypted) {
      const payload = {
        metadata: Object.fromEntries(Object.entries(metadata).map(([k, v]) => [k, Buffer.from(v, 'base64')])),
        data: Buffer.from(record.data, 'base64'),
      };
      const plain = (await codec.decode([payload]))[0]!;
      // Proto JSON: bytes as base64.
      return {
        metadata: Object.fromEntries(Object.entries(plain.metadata ?? {}).map(([k, v]) => [k, Buffer.from(v ?? []).toString('base64')])),
        data: Buffer.from(plain.data ?? []).toString('base64'),
      };
    }
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(record)) out[k] = await visit(v);
    return out;
  };
  return JSON.stringify(await visit(JSON.parse(historyJson)), null, 1);
}
