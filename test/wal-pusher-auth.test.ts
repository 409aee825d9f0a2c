/**
 * Local replication is the WAL pusher's alone: a compute started by the workflow on the stock
 * backend lets only the pusher's role replicate, with a password set afresh at each pusher start
 * and handed over in a file the pusher removes; every other client, local or not, superuser or
 * REPLICATION role, is refused a replication connection, so only the pusher acknowledges commits.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ComputeClient } from '../client/compute-client';
import { PUSHER_ROLE } from '../drivers/storage-backend/stock/backend';
import { PgConnection } from '../drivers/storage-backend/stock/pg-client';
import { livePusherPid, PUSHER_PASSWORD_FILE } from '../drivers/storage-backend/stock/pusher-files';
import { cleanupComputes, createTestTimeline, exampleSpecFor, startComputeWorker, testComputeClient, testPgdata, TEST_WORKFLOW_OPTIONS } from './helpers/compute';
import { uniqueId } from './helpers/ids';
import { killAllProcesses } from '../dev/child-processes';

let computes: ComputeClient;
let close: () => Promise<void>;
beforeAll(async () => {
  ({ computes, close } = await testComputeClient());
});
afterAll(async () => {
  await close();
  await killAllProcesses();
  await cleanupComputes();
});

function postmaster(pgdata: string): { port: number; socketDir: string } {
  const lines = readFileSync(path.join(pgdata, 'postmaster.pid'), 'utf8').split('\n');
  return { port: Number(lines[3]), socketDir: lines[4]!.trim() };
}

async function replicationAttempt(opts: { host: string; port: number; user: string; password?: string }): Promise<string> {
  try {
    const c = await PgConnection.connect({ ...opts, database: 'postgres', connectTimeoutMs: 10_000, params: { replication: 'true', application_name: 'wal_pusher' } });
    await c.close();
    return 'connected';
  } catch (err) {
    return (err as Error).message;
  }
}

describe('the stock backend: only the WAL pusher may replicate', () => {
  it('refuses replication to every other client; the pusher streams with its own password and commits are acknowledged', async () => {
    const computeId = uniqueId('repl');
    const pgdata = testPgdata();
    const { spec, port } = await exampleSpecFor(await createTestTimeline());
    await startComputeWorker(computeId, pgdata);
    await computes.start(computeId, spec, TEST_WORKFLOW_OPTIONS);
    expect((await computes.waitForRunning(computeId, 180_000)).status).toBe('running');
    const pm = postmaster(pgdata);
    expect(pm.port).toBe(port);

    const admin = await PgConnection.connect({ host: pm.socketDir, port, user: 'cloud_admin', database: 'postgres' });
    try {
      // A role with the REPLICATION attribute and a known password is still refused by pg_hba.
      await admin.query("CREATE ROLE other_replicator WITH LOGIN REPLICATION PASSWORD 'known-password'");

      // Over the local socket: the superuser, another replication role, the pusher's role without or with a wrong password.
      expect(await replicationAttempt({ host: pm.socketDir, port, user: 'cloud_admin' })).toMatch(/pg_hba\.conf rejects replication connection/);
      expect(await replicationAttempt({ host: pm.socketDir, port, user: 'other_replicator', password: 'known-password' })).toMatch(/pg_hba\.conf rejects replication connection/);
      expect(await replicationAttempt({ host: pm.socketDir, port, user: PUSHER_ROLE })).toMatch(/asks for a password but none was given/);
      expect(await replicationAttempt({ host: pm.socketDir, port, user: PUSHER_ROLE, password: 'guessed' })).toMatch(/password authentication failed/);
      // Over TCP, whoever it is.
      expect(await replicationAttempt({ host: '127.0.0.1', port, user: 'other_replicator', password: 'known-password' })).toMatch(/pg_hba\.conf rejects replication connection/);
      expect(await replicationAttempt({ host: '127.0.0.1', port, user: PUSHER_ROLE, password: 'guessed' })).toMatch(/pg_hba\.conf rejects replication connection|password authentication failed/);

      // The pusher is the one synchronous standby, connected as its own role.
      const standbys = await admin.query('SELECT usename, application_name, sync_state FROM pg_catalog.pg_stat_replication');
      expect(standbys.rows).toEqual([[PUSHER_ROLE, 'wal_pusher', 'sync']]);

      // The socket is for the compute's own processes, not every OS user.
      expect(statSync(path.join(pm.socketDir, `.s.PGSQL.${port}`)).mode & 0o777).toBe(0o700);
      // The password file was read and removed; the pusher's command line does not carry a password.
      expect(existsSync(path.join(pgdata, PUSHER_PASSWORD_FILE))).toBe(false);
      const pusher = livePusherPid(pgdata)!;
      expect(readFileSync(`/proc/${pusher}/cmdline`, 'utf8')).not.toMatch(/password/i);

      // Commits still wait for and get the pusher's acknowledgement.
      await admin.query('CREATE TABLE acked (id int)');
      const result = await admin.query('INSERT INTO acked SELECT generate_series(1, 10)');
      expect(result.tag).toBe('INSERT 0 10');
    } finally {
      await admin.close();
    }
    await computes.terminate(computeId);
  });
});
