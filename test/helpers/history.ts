import path from 'node:path';
import type { PayloadCodec } from '@temporalio/common';
import { projectRoot } from '../../common/paths';

/** A recorded full compute lifecycle (start, reconfigure, terminate), decrypted; replayed by test/compute-replay.test.ts. */
export const REPLAY_FIXTURE = path.join(projectRoot, 'test', 'fixtures', 'histories', 'compute-lifecycle.json');

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
