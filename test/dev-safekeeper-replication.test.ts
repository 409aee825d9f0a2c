/**
 * The dev safekeeper's physical replication, at the protocol level: a replication connection (as
 * PostgreSQL's walreceiver opens it) gets IDENTIFY_SYSTEM, then XLogData with exactly the pushed
 * bytes up to the commit LSN, keepalives, and clear errors for what it cannot serve. The stock
 * standby following a timeline end to end is test/compute-replica.test.ts.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatLsn, parseLsn } from '../model/lsn';
import { PgConnection } from '../drivers/storage-backend/stock/pg-client';
import { PushSession, type SafekeeperTarget } from '../drivers/storage-backend/stock/safekeeper-client';
import { decodeWalSenderMessage, encodeStandbyStatus } from '../drivers/storage-backend/stock/replication-messages';
import { freePort } from '../dev/processes';
import { neonId } from './helpers/ids';
import { killAllProcesses, startProcess } from '../dev/child-processes';

const SYSTEM_ID = '7311234567890123456';
let root: string;
let pgPort: number;

beforeAll(async () => {
  root = mkdtempSync(path.join(os.tmpdir(), 'dc-sk-repl-'));
  pgPort = await freePort();
  const httpPort = await freePort();
  await startProcess(
    'dev/storage/safekeeper/main.ts',
    ['--id', '1', '--dir', path.join(root, 'sk'), '--pg-port', String(pgPort), '--http-port', String(httpPort), '--host', '127.0.0.1'],
    { readyLine: /safekeeper ready/, timeoutMs: 60_000 },
  );
});

afterAll(async () => {
  await killAllProcesses();
  rmSync(root, { recursive: true, force: true });
});

const target = (t: string, tl: string, systemId?: string): SafekeeperTarget => ({
  address: `127.0.0.1:${pgPort}`,
  tenantId: t,
  timelineId: tl,
  ...(systemId ? { systemId } : {}),
});

function replicationConnection(t: string, tl: string): Promise<PgConnection> {
  return PgConnection.connect({
    host: '127.0.0.1',
    port: pgPort,
    user: 'no_user',
    database: 'replication',
    connectTimeoutMs: 5000,
    params: { replication: 'true', application_name: 'replica', options: `-c tenant_id=${t} -c timeline_id=${tl}` },
  });
}

/** Reads XLogData until `until`, checking each message starts where the last ended; returns the bytes and keepalive count. */
async function receive(incoming: AsyncIterator<Buffer>, from: bigint, until: bigint): Promise<{ data: Buffer; keepalives: number }> {
  const parts: Buffer[] = [];
  let pos = from;
  let keepalives = 0;
  // One iterator across calls: leaving a for-await would abandon the copy.
  for (;;) {
    const next = await incoming.next();
    if (next.done) throw new Error(`the stream ended at ${formatLsn(pos)}`);
    const m = decodeWalSenderMessage(next.value);
    if (m.kind === 'keepalive') {
      keepalives += 1;
      continue;
    }
    expect(m.startLsn).toBe(pos);
    parts.push(m.data);
    pos += BigInt(m.data.length);
    if (pos >= until) break;
  }
  return { data: Buffer.concat(parts), keepalives };
}

describe('dev safekeeper physical replication', () => {
  it('serves IDENTIFY_SYSTEM and streams exactly the committed WAL, then new commits as they come', async () => {
    const t = neonId();
    const tl = neonId();
    const start = parseLsn('0/1FF0000');
    const history = [{ term: 1n, lsn: start }];
    const push = await PushSession.open(target(t, tl, SYSTEM_ID), 1n, start, history);
    const wal = randomBytes(300 * 1024); // crosses the 16 MiB segment boundary at 0/2000000
    const committed = start + 200n * 1024n;
    await push.sendWal(start, wal, committed);
    await push.waitUntil((s) => s.flushLsn === start + BigInt(wal.length), 20_000, 'flush');

    const conn = await replicationConnection(t, tl);
    try {
      const ident = await conn.query('IDENTIFY_SYSTEM');
      expect(ident.rows).toEqual([[SYSTEM_ID, '1', formatLsn(committed), null]]);
      await expect(conn.query('TIMELINE_HISTORY 2')).rejects.toThrow(/timeline 1 only/);
      await expect(conn.query(`START_REPLICATION ${formatLsn(start)} TIMELINE 2`)).rejects.toThrow(/requested timeline 2/);
      await expect(conn.query('START_REPLICATION 0/10 TIMELINE 1')).rejects.toThrow(/precedes this timeline's start 0\/1FF0000/);
      await expect(conn.query('START_REPLICATION 1/0 TIMELINE 1')).rejects.toThrow(/ahead of the WAL flush position/);

      // As a walreceiver asks: from the start of the segment; the timeline starts inside it.
      const copy = await conn.copyBoth(`START_REPLICATION SLOT "repl" PHYSICAL ${formatLsn(parseLsn('0/1000000'))} TIMELINE 1`);
      const incoming = copy.incoming[Symbol.asyncIterator]();
      const first = await receive(incoming, start, committed);
      // Only what is committed: nothing beyond the commit LSN.
      expect(first.data.equals(wal.subarray(0, 200 * 1024))).toBe(true);
      expect(first.keepalives).toBeGreaterThanOrEqual(1);

      await copy.send(encodeStandbyStatus(committed, committed, committed));
      await push.sendCommit(start + BigInt(wal.length));
      const rest = await receive(incoming, committed, start + BigInt(wal.length));
      expect(rest.data.equals(wal.subarray(200 * 1024))).toBe(true);
      await copy.finish();
    } finally {
      await conn.close();
      await push.finish();
    }
  });

  it('refuses a timeline it does not know and a pusher of another system', async () => {
    const t = neonId();
    const tl = neonId();
    const conn = await replicationConnection(t, tl);
    try {
      await expect(conn.query('IDENTIFY_SYSTEM')).rejects.toThrow(new RegExp(`timeline ${t}/${tl} is not known to this safekeeper`));
      await expect(conn.query('START_REPLICATION 0/1000000 TIMELINE 1')).rejects.toThrow(/is not known to this safekeeper/);
    } finally {
      await conn.close();
    }
    const start = parseLsn('0/3000028');
    const push = await PushSession.open(target(t, tl, SYSTEM_ID), 1n, start, [{ term: 1n, lsn: start }]);
    await push.finish();
    await expect(PushSession.open(target(t, tl, '42'), 1n, start, [{ term: 1n, lsn: start }])).rejects.toThrow(/system identifier 42 differs from this timeline's 7311234567890123456/);
  });
});
