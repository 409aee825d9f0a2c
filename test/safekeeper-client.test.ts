import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decideSafekeepersSynced, quorumSize, type SafekeeperAnswer } from '../drivers/safekeepers/quorum';
import { checkSafekeepersSynced } from '../drivers/safekeepers/sync-check';
import { runSyncSafekeepers, SyncSafekeepersError } from '../drivers/safekeepers/sync-safekeepers';
import { parseSafekeeperAddress, queryTimelineStatus } from '../drivers/safekeepers/timeline-status';
import { StorageError } from '../drivers/pageserver/errors';
import { freePort } from '../dev/processes';
import { PgWireError, startPgWireServer, type PgWireServer, type PgWireSession } from '../dev/storage/pgwire/server';
import { tsNodeArgs } from '../common/paths';
import { neonId } from './helpers/ids';

const standin = path.resolve(import.meta.dirname, 'fixtures/sync-safekeepers-standin.ts');
/** The stand-in run the way the real command is: one program with its arguments. */
const standinCommand = (mode: string) => [process.execPath, ...tsNodeArgs(), standin, mode];

describe('quorum rule (pure)', () => {
  it('needs a majority', () => {
    expect([1, 2, 3, 4, 5].map(quorumSize)).toEqual([1, 2, 2, 3, 3]);
    expect(() => quorumSize(0)).toThrow(RangeError);
  });

  type Kind = 'error' | 'not-found' | 'A' | 'B' | 'split';
  const A = '0/16B5A50';
  const B = '0/16B5B00';
  const answerFor = (i: number, kind: Kind): SafekeeperAnswer => {
    const safekeeper = `sk${i}:5454`;
    switch (kind) {
      case 'error':
        return { safekeeper, outcome: 'error', error: 'timed out' };
      case 'not-found':
        return { safekeeper, outcome: 'not-found' };
      case 'A':
        return { safekeeper, outcome: 'status', commitLsn: A, flushLsn: A };
      case 'B':
        return { safekeeper, outcome: 'status', commitLsn: B, flushLsn: B };
      case 'split':
        // Committed A, flushed more: WAL not yet acknowledged by a quorum.
        return { safekeeper, outcome: 'status', commitLsn: A, flushLsn: B };
    }
  };

  /** Every combination of answers from n safekeepers, some of them possibly missing. */
  function* combinations(n: number): Generator<(Kind | 'missing')[]> {
    const kinds: (Kind | 'missing')[] = ['missing', 'error', 'not-found', 'A', 'B', 'split'];
    const idx = new Array<number>(n).fill(0);
    for (;;) {
      yield idx.map((i) => kinds[i]!);
      let pos = 0;
      while (pos < n && ++idx[pos]! === kinds.length) idx[pos++] = 0;
      if (pos === n) return;
    }
  }

  it('agrees with the rule for every combination of up to 5 safekeepers', () => {
    let synced = 0;
    let checked = 0;
    for (let n = 1; n <= 5; n++) {
      for (const combo of combinations(n)) {
        const answers = combo.flatMap((k, i) => (k === 'missing' ? [] : [answerFor(i, k)]));
        const decision = decideSafekeepersSynced(n, answers);
        const answered = combo.filter((k) => k !== 'missing' && k !== 'error');
        const expectSynced = answered.length >= Math.floor(n / 2) + 1 && (answered.every((k) => k === 'A') || answered.every((k) => k === 'B'));
        expect(decision.synced, `n=${n} ${combo.join(',')}`).toBe(expectSynced);
        expect(decision.quorum).toBe(Math.floor(n / 2) + 1);
        expect(decision.responded).toBe(answered.length);
        if (decision.synced) {
          expect(decision.lsn).toBe(answered[0] === 'A' ? A : B);
          synced++;
        }
        checked++;
      }
    }
    expect(checked).toBe(6 + 36 + 216 + 1296 + 7776);
    expect(synced).toBeGreaterThan(100);
  });

  it('explains why it is not synced', () => {
    const a = (i: number, k: Kind) => answerFor(i, k);
    expect(decideSafekeepersSynced(3, [a(0, 'A'), a(1, 'error'), a(2, 'error')])).toMatchObject({ synced: false, reason: expect.stringMatching(/only 1 of 3 .*quorum is 2.*timed out/) });
    expect(decideSafekeepersSynced(3, [a(0, 'A'), a(1, 'B')])).toMatchObject({ synced: false, reason: expect.stringMatching(/disagree on commit_lsn: 0\/16B5A50 vs 0\/16B5B00/) });
    expect(decideSafekeepersSynced(3, [a(0, 'A'), a(1, 'not-found')])).toMatchObject({ synced: false, reason: expect.stringMatching(/sk1:5454 does not know the timeline/) });
    expect(decideSafekeepersSynced(1, [a(0, 'split')])).toMatchObject({ synced: false, reason: expect.stringMatching(/commit_lsn 0\/16B5A50 differs from flush_lsn 0\/16B5B00/) });
    expect(decideSafekeepersSynced(3, [a(0, 'A'), a(1, 'A')])).toEqual({ synced: true, lsn: A, quorum: 2, responded: 2 });
  });

  it('compares LSNs by value, not by spelling, and rejects malformed ones', () => {
    const answers: SafekeeperAnswer[] = [
      { safekeeper: 'a', outcome: 'status', commitLsn: '0/16b5a50', flushLsn: '0/016B5A50' },
      { safekeeper: 'b', outcome: 'status', commitLsn: '0/16B5A50', flushLsn: '0/16B5A50' },
    ];
    expect(decideSafekeepersSynced(3, answers)).toMatchObject({ synced: true, lsn: '0/16B5A50' });
    expect(decideSafekeepersSynced(1, [{ safekeeper: 'a', outcome: 'status', commitLsn: 'zz', flushLsn: '0/1' }])).toMatchObject({
      synced: false,
      reason: expect.stringMatching(/invalid LSN/),
    });
    expect(() => decideSafekeepersSynced(1, [answers[0]!, answers[1]!])).toThrow(RangeError);
  });
});

describe('runSyncSafekeepers with a stand-in command', () => {
  let pgdata: string;
  const conf = (lines: string) => writeFileSync(path.join(pgdata, 'postgresql.conf'), lines);
  beforeAll(() => {
    pgdata = mkdtempSync(path.join(os.tmpdir(), 'dc-sync-sk-'));
  });
  afterAll(() => rmSync(pgdata, { recursive: true, force: true }));

  it('returns the LSN the command prints, read from PGDATA', async () => {
    conf("standin.sync_lsn = '1/a2b3c4d0'\n");
    const r = await runSyncSafekeepers({ command: standinCommand('ok'), pgdata, timeoutMs: 30_000 });
    expect(r.lsn).toBe('1/A2B3C4D0');
    expect(r.elapsedMs).toBeGreaterThan(0);
  });

  it('passes the auth token as NEON_AUTH_TOKEN and never prints it in errors', async () => {
    conf("standin.expected_token = 'sk-secret-token'\n");
    const ok = await runSyncSafekeepers({ command: standinCommand('token'), pgdata, timeoutMs: 30_000, token: 'sk-secret-token' });
    expect(ok.lsn).toBe('0/1');
    const err = await runSyncSafekeepers({ command: standinCommand('token'), pgdata, timeoutMs: 30_000, token: 'wrong' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SyncSafekeepersError);
    expect((err as SyncSafekeepersError).kind).toBe('exit');
    expect((err as SyncSafekeepersError).message).toMatch(/wrong or missing NEON_AUTH_TOKEN/);
  });

  it('rejects output that is not an LSN', async () => {
    conf('');
    const err = (await runSyncSafekeepers({ command: standinCommand('garbage'), pgdata, timeoutMs: 30_000 }).catch((e: unknown) => e)) as SyncSafekeepersError;
    expect(err).toBeInstanceOf(SyncSafekeepersError);
    expect(err.kind).toBe('bad-output');
    expect(err.message).toContain('"synced, probably"');
  });

  it('reports a non-zero exit with the tail of stderr', async () => {
    const err = (await runSyncSafekeepers({ command: standinCommand('fail'), pgdata, timeoutMs: 30_000 }).catch((e: unknown) => e)) as SyncSafekeepersError;
    expect(err.kind).toBe('exit');
    expect(err.exitCode).toBe(3);
    expect(err.stderrTail).toMatch(/could not reach a quorum of safekeepers$/);
    expect(err.stderrTail).not.toContain('noise line 0\n');
    expect(err.stderrTail.length).toBeLessThanOrEqual(4096);
  });

  it('kills a hanging command and everything it started at the timeout', async () => {
    rmSync(path.join(pgdata, 'pids'), { force: true });
    const started = Date.now();
    const err = (await runSyncSafekeepers({ command: standinCommand('hang'), pgdata, timeoutMs: 1500 }).catch((e: unknown) => e)) as SyncSafekeepersError;
    expect(err.kind).toBe('timeout');
    expect(Date.now() - started).toBeLessThan(10_000);
    const pids = readFileSync(path.join(pgdata, 'pids'), 'utf8').trim().split(' ').map(Number);
    expect(pids).toHaveLength(2);
    const alive = (pid: number) => {
      try {
        process.kill(pid, 0);
        return true;
      } catch {
        return false;
      }
    };
    const deadline = Date.now() + 10_000;
    while (pids.some(alive) && Date.now() < deadline) await sleep(50);
    expect(pids.filter(alive)).toEqual([]);
  });

  it('names a missing program', async () => {
    const err = (await runSyncSafekeepers({ command: ['/nonexistent/postgres', '--sync-safekeepers'], pgdata, timeoutMs: 5000 }).catch((e: unknown) => e)) as SyncSafekeepersError;
    expect(err.kind).toBe('spawn');
    expect(err.message).toMatch(/cannot start postgres: .*ENOENT/);
    expect(existsSync('/nonexistent')).toBe(false);
  });
});

describe('TIMELINE_STATUS over libpq and the quorum check (crafted safekeepers)', () => {
  const tenant = neonId();
  const timeline = neonId();
  const servers: PgWireServer[] = [];
  const seen: PgWireSession[] = [];
  let silent: net.Server;
  let silentPort: number;
  const silentSockets = new Set<net.Socket>();

  /** A libpq server answering TIMELINE_STATUS like a safekeeper holding `lsns` (null = unknown timeline). */
  async function fakeSafekeeper(lsns: { commit: string; flush: string } | null, opts: { password?: string; delayMs?: number } = {}) {
    const server = await startPgWireServer({
      host: '127.0.0.1',
      port: 0,
      ...(opts.password ? { password: opts.password } : {}),
      async onQuery(session, sql) {
        seen.push(session);
        if (sql.trim() !== 'TIMELINE_STATUS') throw new PgWireError(`unsupported command ${sql}`, '42601');
        if (opts.delayMs) await sleep(opts.delayMs);
        const known = lsns && session.params.tenant_id === tenant && session.params.timeline_id === timeline;
        return { kind: 'rows', columns: ['flush_lsn', 'commit_lsn'], rows: known ? [[lsns.flush, lsns.commit]] : [] };
      },
    });
    servers.push(server);
    return `127.0.0.1:${server.port}`;
  }

  beforeAll(async () => {
    // Accepts connections, reads what comes and never says a word: a hung safekeeper.
    silent = net.createServer((socket) => {
      silentSockets.add(socket);
      socket.on('close', () => silentSockets.delete(socket));
      socket.on('error', () => undefined);
      socket.resume();
    });
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    silentPort = (silent.address() as net.AddressInfo).port;
  });
  afterAll(async () => {
    await Promise.all(servers.map((s) => s.close()));
    // Our clients must have hung up on it: every connection it accepted is closed by now.
    const deadline = Date.now() + 5000;
    while (silentSockets.size > 0 && Date.now() < deadline) await sleep(20);
    expect(silentSockets.size).toBe(0);
    await new Promise<void>((resolve) => silent.close(() => resolve()));
  });

  it('parses safekeeper addresses', () => {
    expect(parseSafekeeperAddress('sk-1.local:5454')).toEqual({ host: 'sk-1.local', port: 5454 });
    expect(parseSafekeeperAddress('[::1]:5454')).toEqual({ host: '::1', port: 5454 });
    expect(() => parseSafekeeperAddress('postgresql://sk:5454')).toThrow(/host:port/);
    expect(() => parseSafekeeperAddress('sk:0')).toThrow(/host:port/);
  });

  it('sends tenant and timeline in the options and reads both LSNs; no row means unknown', async () => {
    const addr = await fakeSafekeeper({ commit: '0/2000028', flush: '0/2000028' });
    expect(await queryTimelineStatus(addr, tenant, timeline, { timeoutMs: 5000 })).toEqual({ commit_lsn: '0/2000028', flush_lsn: '0/2000028' });
    const session = seen.at(-1)!;
    expect(session.params.tenant_id).toBe(tenant);
    expect(session.params.timeline_id).toBe(timeline);
    expect(session.applicationName).toBe('compute_ctl');
    expect(await queryTimelineStatus(addr, tenant, neonId(), { timeoutMs: 5000 })).toBeNull();
  });

  it('uses the token as password and classifies a refused one as permanent', async () => {
    const addr = await fakeSafekeeper({ commit: '0/1', flush: '0/1' }, { password: 'sk-token-123' });
    expect(await queryTimelineStatus(addr, tenant, timeline, { timeoutMs: 5000, token: 'sk-token-123' })).not.toBeNull();
    const wrong = (await queryTimelineStatus(addr, tenant, timeline, { timeoutMs: 5000, token: 'nope' }).catch((e: unknown) => e)) as StorageError;
    expect(wrong).toBeInstanceOf(StorageError);
    expect(wrong.kind).toBe('auth');
    expect(wrong.retryable).toBe(false);
    const none = (await queryTimelineStatus(addr, tenant, timeline, { timeoutMs: 5000 }).catch((e: unknown) => e)) as StorageError;
    expect(none.kind).toBe('auth');
    expect(none.message).toMatch(/no storage auth token/);
  });

  it('tells refused connections from hung ones', async () => {
    const refused = (await queryTimelineStatus(`127.0.0.1:${await freePort()}`, tenant, timeline, { timeoutMs: 2000 }).catch((e: unknown) => e)) as StorageError;
    expect(refused.kind).toBe('connection-refused');
    expect(refused.retryable).toBe(true);
    const started = Date.now();
    const hung = (await queryTimelineStatus(`127.0.0.1:${silentPort}`, tenant, timeline, { timeoutMs: 150 }).catch((e: unknown) => e)) as StorageError;
    expect(['timeout', 'connect-timeout']).toContain(hung.kind);
    expect(hung.retryable).toBe(true);
    expect(Date.now() - started).toBeLessThan(3000);
  });

  it('is synced when a quorum agrees, even with one safekeeper hung', async () => {
    const a = await fakeSafekeeper({ commit: '0/3000000', flush: '0/3000000' });
    const b = await fakeSafekeeper({ commit: '0/3000000', flush: '0/3000000' });
    const r = await checkSafekeepersSynced({ safekeepers: [a, `127.0.0.1:${silentPort}`, b], tenantId: tenant, timelineId: timeline, timeoutMs: 2000 });
    expect(r).toMatchObject({ synced: true, lsn: '0/3000000', quorum: 2 });
    // It stopped at the quorum instead of waiting for the hung one.
    expect(r.answers.filter((x) => x.outcome === 'status')).toHaveLength(2);
  });

  it('is not synced when too few answer within the per-safekeeper timeout', async () => {
    const a = await fakeSafekeeper({ commit: '0/3000000', flush: '0/3000000' });
    const slow = await fakeSafekeeper({ commit: '0/3000000', flush: '0/3000000' }, { delayMs: 1000 });
    const started = Date.now();
    const r = await checkSafekeepersSynced({ safekeepers: [a, slow, `127.0.0.1:${silentPort}`], tenantId: tenant, timelineId: timeline, timeoutMs: 100 });
    expect(r.synced).toBe(false);
    expect(r.synced ? '' : r.reason).toMatch(/only 1 of 3 safekeepers answered/);
    expect(Date.now() - started).toBeLessThan(1000);
  });

  it('is not synced when answers disagree or a safekeeper lacks the timeline', async () => {
    const a = await fakeSafekeeper({ commit: '0/3000000', flush: '0/3000000' });
    const ahead = await fakeSafekeeper({ commit: '0/3000000', flush: '0/3000100' });
    const unknown = await fakeSafekeeper(null);
    const split = await checkSafekeepersSynced({ safekeepers: [a, ahead], tenantId: tenant, timelineId: timeline, timeoutMs: 2000 });
    expect(split.synced ? '' : split.reason).toMatch(/disagree on flush_lsn/);
    const missing = await checkSafekeepersSynced({ safekeepers: [a, unknown], tenantId: tenant, timelineId: timeline, timeoutMs: 2000 });
    expect(missing.synced ? '' : missing.reason).toMatch(/does not know the timeline/);
  });
});
