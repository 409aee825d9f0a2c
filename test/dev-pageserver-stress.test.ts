/**
 * Stress for the intermittent hang of "serves older LSNs of a timeline" (issue 15): base backups
 * at older LSNs of a timeline, several at once, while a compute keeps committing new rows through
 * the dev safekeepers, with garbage collection between rounds so older states are rebuilt from
 * the first image again and again. Every request has a deadline: a hang fails the run with what
 * was waiting, the pageserver's log and the replay servers still running, instead of a timeout.
 *
 * npm test runs 1 round; `npm run stress:pageserver` runs PAGESERVER_STRESS_ROUNDS (default 40).
 *
 * The second block pins the hang that was found: a base backup whose unpacking failed after the
 * COPY had started waited forever (the client for a graceful end on a socket it no longer read,
 * the page service for that client to read), instead of failing with the unpack error.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, promises as fsp, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stockStorageBackend } from '../drivers/storage-backend';
import { livePusherPid } from '../drivers/storage-backend/stock/pusher-files';
import { findPostgres, pgBin } from '../common/pg-binaries';
import { pgSpawnIdentity } from '../common/pg-identity';
import { formatLsn, parseLsn } from '../model/lsn';
import { readControlFile } from '../dev/storage/pg-control';
import { startPageserver, type Pageserver } from '../dev/storage/pageserver/pageserver';
import { startSafekeeper, type RunningSafekeeper } from '../dev/storage/safekeeper/safekeeper';
import { neonId } from './helpers/ids';
import { waitFor } from './helpers/wait';
import { basebackupCommand, fetchBasebackupInto, startBareCompute, stopBareComputes, type BareCompute } from './helpers/bare-compute';

const run = promisify(execFile);
const install = findPostgres({ pgBinDir: process.env.PG_BIN_DIR });

const ROUNDS = Number(process.env.PAGESERVER_STRESS_ROUNDS ?? 1);
/** Older-LSN base backups requested at once per round. */
const PARALLEL = Number(process.env.PAGESERVER_STRESS_PARALLEL ?? 3);
/** What a hang is: no base backup here needs more than a few seconds on an idle machine. */
const REQUEST_DEADLINE_MS = Number(process.env.PAGESERVER_STRESS_DEADLINE_MS ?? 60_000);

/** `work`, or a failure naming what did not finish within `ms` and what was running then. */
async function withDeadline<T>(what: string, ms: number, work: Promise<T>, context: () => Promise<string>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      void context().then((c) => reject(new Error(`HANG: ${what} did not finish within ${ms} ms\n${c}`)));
    }, ms);
  });
  try {
    return await Promise.race([work, expired]);
  } finally {
    clearTimeout(timer);
  }
}

describe.runIf(ROUNDS > 0)('dev pageserver under stress: older LSNs replayed while new WAL arrives', () => {
  let root: string;
  let sks: RunningSafekeeper[] = [];
  let ps: Pageserver;
  let writer: BareCompute | undefined;
  const logs: string[] = [];
  const tenant = neonId();
  const main = neonId();

  beforeAll(async () => {
    root = mkdtempSync(path.join(os.tmpdir(), 'dc-ps-stress-'));
    await fsp.chmod(root, 0o755);
    sks = await Promise.all([1, 2, 3].map((id) => startSafekeeper({ id, dir: path.join(root, `sk${id}`), host: '127.0.0.1', pgPort: 0, httpPort: 0 })));
    ps = await startPageserver({
      dir: path.join(root, 'ps'),
      host: '127.0.0.1',
      pgPort: 0,
      httpPort: 0,
      safekeepers: sks.map((s) => s.httpUrl),
      materializeTimeoutMs: REQUEST_DEADLINE_MS,
      log: (l) => logs.push(`${new Date().toISOString()} ${l}`),
    });
  });

  afterAll(async () => {
    if (writer) {
      await run(pgBin(install, 'pg_ctl'), ['-D', writer.pgdata, '-m', 'immediate', '-w', 'stop'], pgSpawnIdentity()).catch(() => undefined);
      const pusher = livePusherPid(writer.pgdata);
      if (pusher !== undefined) process.kill(pusher, 'SIGKILL');
    }
    await stopBareComputes();
    await ps?.close();
    await Promise.all(sks.map((s) => s.close()));
    if (root) rmSync(root, { recursive: true, force: true });
  });

  /** What was going on when something hung: the pageserver's recent log and its replay servers. */
  async function hangContext(): Promise<string> {
    const procs = await run('ps', ['-eo', 'pid,ppid,etimes,args', '--no-headers']).then(
      (r) => r.stdout.split('\n').filter((l) => /postgres -D .*dc-ps-s/.test(l)),
      () => [] as string[],
    );
    return `replay servers running:\n${procs.join('\n') || '(none)'}\npageserver log (last 40 lines):\n${logs.slice(-40).join('\n')}`;
  }

  it(`${ROUNDS} rounds of ${PARALLEL} concurrent older-LSN base backups against a timeline being written`, { timeout: 60_000 + ROUNDS * (REQUEST_DEADLINE_MS + 30_000) }, async () => {
    const created = await fetch(`http://127.0.0.1:${ps.httpPort}/v1/tenant/${tenant}/timeline`, {
      method: 'POST',
      body: JSON.stringify({ new_timeline_id: main, pg_version: 15 }),
    });
    expect(created.status).toBe(201);

    const safekeepers = sks.map((s) => s.pgAddress);
    const wdir = path.join(root, 'writer');
    await fetchBasebackupInto({ port: ps.pgPort }, basebackupCommand(tenant, main), path.join(wdir, 'pgdata'));
    writer = await startBareCompute(
      wdir,
      ['fsync = off', stockStorageBackend.postgresqlConf({ tenantId: tenant, timelineId: main, safekeepers, mode: 'Primary' })],
      stockStorageBackend.hbaLines(),
    );
    await stockStorageBackend.afterPostgresReady({ pgdata: writer.pgdata, socketDir: wdir, port: writer.port, tenantId: tenant, timelineId: main, safekeepers, superuser: 'cloud_admin' });
    await writer.query('create table t (id int primary key)');

    // The writer commits row n, then records the flush LSN: the state at that LSN holds rows 1..n.
    // Commits wait for the pusher's acknowledgement, so the safekeepers have that WAL by then.
    const states: { rows: number; lsn: string }[] = [];
    let writing = true;
    let written = 0;
    const writes = (async () => {
      while (writing) {
        const n = written + 1;
        await withDeadline(`commit of row ${n}`, REQUEST_DEADLINE_MS, writer!.query(`insert into t values (${n})`), hangContext);
        const lsn = (await writer!.query<{ l: string }>('select pg_current_wal_flush_lsn()::text as l'))[0]!.l;
        written = n;
        states.push({ rows: n, lsn });
      }
    })();

    let served = 0;
    let slowestMs = 0;
    let verified = 0;
    const started = Date.now();
    try {
      while (states.length < PARALLEL) await new Promise((r) => setTimeout(r, 50));
      for (let round = 1; round <= ROUNDS; round++) {
        // Older states, picked at random among those recorded so far (distinct LSNs).
        const picks = [...new Map(Array.from({ length: PARALLEL }, () => states[Math.floor(Math.random() * states.length)]!).map((s) => [s.lsn, s])).values()];
        const fetched = await Promise.all(
          picks.map(async (state, i) => {
            const dir = path.join(root, `r${round}-${i}`);
            const requested = Date.now();
            await withDeadline(
              `round ${round}: base backup of ${tenant}/${main} at ${state.lsn} (row ${state.rows})`,
              REQUEST_DEADLINE_MS,
              fetchBasebackupInto({ port: ps.pgPort }, basebackupCommand(tenant, main, state.lsn), path.join(dir, 'pgdata')),
              hangContext,
            );
            // The image ends at the state's LSN or at the end of the last record before it.
            expect(readControlFile(path.join(dir, 'pgdata')).minRecoveryPoint).toBeLessThanOrEqual(parseLsn(state.lsn));
            served++;
            slowestMs = Math.max(slowestMs, Date.now() - requested);
            return { dir, state };
          }),
        );
        // One of them, started: exactly the rows committed up to its LSN.
        const check = fetched[round % fetched.length]!;
        const c = await startBareCompute(check.dir, ['fsync = off']);
        try {
          expect((await c.query<{ n: number }>('select count(*)::int as n, max(id) as m from t'))[0]).toMatchObject({ n: check.state.rows });
          verified++;
        } finally {
          await c.stop('immediate');
        }
        for (const { dir } of fetched) await fsp.rm(dir, { recursive: true, force: true });
        console.log(`round ${round}/${ROUNDS}: ${served} served, slowest ${slowestMs} ms, ${written} rows written, ${((Date.now() - started) / 1000).toFixed(0)} s`);
        // Drop every image but the first and the newest: the next older states are rebuilt from
        // scratch. A horizon beyond all the WAL keeps the GC cutoff at the start, so every state stays servable.
        const gc = await fetch(`http://127.0.0.1:${ps.httpPort}/v1/tenant/${tenant}/timeline/${main}/do_gc`, {
          method: 'PUT',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ gc_horizon: Number.MAX_SAFE_INTEGER }),
        });
        expect(gc.status, await gc.text()).toBe(200);
      }
    } finally {
      writing = false;
      await writes;
    }
    console.log(
      `pageserver stress: ${ROUNDS} rounds, ${served} older-LSN base backups (${verified} started and checked, slowest ${slowestMs} ms) while ${written} rows were committed, in ${Date.now() - started} ms; ` +
        `${logs.filter((l) => l.includes('materialized')).length} replays; last LSN ${states.length > 0 ? states[states.length - 1]!.lsn : formatLsn(0n)}`,
    );
    console.log(logs.filter((l) => l.includes('materialized')).join('\n'));
  });
});

describe('a base backup that fails on the client side fails, it does not hang', () => {
  it('reports the unpack error at once, and the page service lets go of a client that stopped reading', async () => {
    const root = mkdtempSync(path.join(os.tmpdir(), 'dc-ps-stall-'));
    await fsp.chmod(root, 0o755);
    const logs: string[] = [];
    const ps = await startPageserver({ dir: path.join(root, 'ps'), host: '127.0.0.1', pgPort: 0, httpPort: 0, safekeepers: [], log: (l) => logs.push(l), writeStallTimeoutMs: 2_000 });
    try {
      const tenant = neonId();
      const timeline = neonId();
      const created = await fetch(`http://127.0.0.1:${ps.httpPort}/v1/tenant/${tenant}/timeline`, { method: 'POST', body: JSON.stringify({ new_timeline_id: timeline, pg_version: 15 }) });
      expect(created.status).toBe(201);

      // The first directory of the tar cannot be created (a file is in the way): the unpack fails
      // after the COPY started. Before the fix this waited forever for a graceful end of the connection.
      const target = path.join(root, 'c', 'pgdata');
      await fsp.mkdir(target, { recursive: true });
      writeFileSync(path.join(target, 'base'), 'not a directory');
      await withDeadline(
        'a failing base backup',
        30_000,
        expect(fetchBasebackupInto({ port: ps.pgPort }, basebackupCommand(tenant, timeline), target)).rejects.toThrow(/ENOTDIR|EEXIST|not a directory/),
        async () => logs.join('\n'),
      );

      // A raw client that asks for a base backup and never reads: the server closes it after the bound.
      const socket = net.connect(ps.pgPort, '127.0.0.1');
      await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
      const params = Buffer.from('user\0cloud_admin\0database\0postgres\0\0');
      const startup = Buffer.alloc(8);
      startup.writeInt32BE(8 + params.length, 0);
      startup.writeInt32BE(196608, 4);
      socket.write(Buffer.concat([startup, params]));
      const sql = Buffer.from(`${basebackupCommand(tenant, timeline, undefined, false)}\0`);
      const query = Buffer.alloc(5);
      query.write('Q', 0);
      query.writeInt32BE(4 + sql.length, 1);
      socket.write(Buffer.concat([query, sql]));
      socket.pause();
      try {
        const stalled = /closed the connection of .*read nothing of what was sent for 2000 ms/;
        await waitFor('the page service to close a connection that reads nothing', async () => (logs.some((l) => stalled.test(l)) ? true : undefined), 30_000);
      } finally {
        socket.destroy();
      }
    } finally {
      await ps.close();
      rmSync(root, { recursive: true, force: true });
    }
  });
});
