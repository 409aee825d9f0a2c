/**
 * The sync step against three safekeeper processes, with the histories crashes leave behind: a
 * safekeeper holding an unacknowledged tail from an old term must lose it and take the newer log
 * from its peers, and everything a quorum acknowledged must survive.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatLsn, parseLsn, type Lsn } from '../model/lsn';
import { elect, PushSession, type SafekeeperTarget } from '../drivers/storage-backend/stock/safekeeper-client';
import { syncSafekeepers } from '../drivers/storage-backend/stock/sync-safekeepers';
import type { TermHistory } from '../drivers/storage-backend/stock/safekeeper-protocol';
import { freePort } from '../dev/processes';
import { neonId } from './helpers/ids';
import { killAllProcesses, startProcess, type WorkerProcess } from '../dev/child-processes';

interface Sk {
  proc: WorkerProcess | undefined;
  pgPort: number;
  httpPort: number;
  args: string[];
}

let root: string;
const sks: Sk[] = [];
const tenant = neonId();
const timeline = neonId();
const start = parseLsn('0/1000000');

async function up(sk: Sk): Promise<void> {
  sk.proc = await startProcess('dev/storage/safekeeper/main.ts', sk.args, { readyLine: /safekeeper ready/ });
}

const addr = (sk: Sk) => `127.0.0.1:${sk.pgPort}`;
const tgt = (sk: Sk): SafekeeperTarget => ({ address: addr(sk), tenantId: tenant, timelineId: timeline });

async function status(sk: Sk): Promise<{ flush_lsn: string; commit_lsn: string }> {
  const res = await fetch(`http://127.0.0.1:${sk.httpPort}/v1/tenant/${tenant}/timeline/${timeline}`);
  expect(res.status).toBe(200);
  return (await res.json()) as { flush_lsn: string; commit_lsn: string };
}

async function wal(sk: Sk, from: Lsn, to: Lsn): Promise<Buffer> {
  const res = await fetch(`http://127.0.0.1:${sk.httpPort}/v1/tenant/${tenant}/timeline/${timeline}/wal?start=${formatLsn(from)}&end=${formatLsn(to)}`);
  expect(res.status).toBe(200);
  return Buffer.from(await res.arrayBuffer());
}

/** What a proposer of `term` does on the safekeepers it reaches: push `data` at `at` and wait for the flush. */
async function push(targets: Sk[], term: bigint, history: TermHistory, at: Lsn, data: Buffer, commit: Lsn): Promise<void> {
  await Promise.all(
    targets.map(async (sk) => {
      const s = await PushSession.open(tgt(sk), term, at, history);
      await s.sendWal(at, data, commit);
      await s.waitUntil((x) => x.flushLsn === at + BigInt(data.length), 20_000, 'flush');
      await s.finish();
    }),
  );
}

const cfg = () => ({ safekeepers: sks.map(addr), tenantId: tenant, timelineId: timeline, log: () => {} });

beforeAll(async () => {
  root = mkdtempSync(path.join(os.tmpdir(), 'dc-sk-sync-'));
  for (let i = 1; i <= 3; i++) {
    const pgPort = await freePort();
    const httpPort = await freePort();
    sks.push({ proc: undefined, pgPort, httpPort, args: ['--id', String(i), '--dir', path.join(root, `sk${i}`), '--pg-port', String(pgPort), '--http-port', String(httpPort)] });
  }
  await Promise.all(sks.map(up));
  for (const sk of sks) {
    const res = await fetch(`http://127.0.0.1:${sk.httpPort}/v1/tenant/timeline`, {
      method: 'POST',
      body: JSON.stringify({ tenant_id: tenant, timeline_id: timeline, start_lsn: formatLsn(start) }),
    });
    expect(res.status).toBe(201);
  }
}, 120_000);

afterAll(async () => {
  await killAllProcesses();
  rmSync(root, { recursive: true, force: true });
});

describe('sync-safekeepers', () => {
  it('truncates an unacknowledged tail of an old term and copies the newer log in its place', async () => {
    const [sk1, sk2, sk3] = sks as [Sk, Sk, Sk];
    // Term 1 writes W1 everywhere: acknowledged.
    for (const sk of sks) expect((await elect(tgt(sk), 1n)).accepted).toBe(true);
    const w1 = randomBytes(4096);
    const h1 = [{ term: 1n, lsn: start }];
    await push(sks, 1n, h1, start, w1, start);
    const afterW1 = start + 4096n;

    // Term 2 (elected by sk2 and sk3) gets W2 only onto sk3 before it dies: never acknowledged.
    for (const sk of [sk2, sk3]) expect((await elect(tgt(sk), 2n)).accepted).toBe(true);
    const h2 = [...h1, { term: 2n, lsn: afterW1 }];
    await push([sk3], 2n, h2, afterW1, randomBytes(2048), afterW1);
    await sk3.proc!.kill('SIGTERM');
    sk3.proc = undefined;

    // With sk3 down the quorum agrees on the end of W1.
    expect(await syncSafekeepers(cfg())).toBe(afterW1);
    for (const sk of [sk1, sk2]) expect(await status(sk)).toMatchObject({ flush_lsn: formatLsn(afterW1), commit_lsn: formatLsn(afterW1) });

    // Term 4 (the sync took term 3) writes W3 onto sk1 and sk2.
    for (const sk of [sk1, sk2]) expect((await elect(tgt(sk), 4n)).accepted).toBe(true);
    const w3 = randomBytes(3000);
    await push([sk1, sk2], 4n, [...h1, { term: 4n, lsn: afterW1 }], afterW1, w3, afterW1);
    const end = afterW1 + 3000n;

    // sk3 returns with its stale W2; the sync replaces it with W3 from a peer.
    await up(sk3);
    expect(await syncSafekeepers(cfg())).toBe(end);
    const expected = Buffer.concat([w1, w3]);
    for (const sk of sks) {
      expect(await status(sk)).toMatchObject({ flush_lsn: formatLsn(end), commit_lsn: formatLsn(end) });
      expect((await wal(sk, start, end)).equals(expected)).toBe(true);
    }
  });

  it('needs a quorum', async () => {
    const [, sk2, sk3] = sks as [Sk, Sk, Sk];
    await sk2.proc!.kill('SIGTERM');
    await sk3.proc!.kill('SIGTERM');
    sk2.proc = undefined;
    sk3.proc = undefined;
    await expect(syncSafekeepers(cfg())).rejects.toThrow(/only 1 of 3 safekeepers reachable/);
  });
});
