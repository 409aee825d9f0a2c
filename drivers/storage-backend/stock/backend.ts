/**
 * The `stock` storage backend: stock PostgreSQL 15 made durable on the safekeepers by the WAL
 * pusher (wal-pusher.ts) and synced by sync-safekeepers-main.ts.
 */
import { spawn } from 'node:child_process';
import { createHash, createHmac, pbkdf2Sync, randomBytes } from 'node:crypto';
import { closeSync, openSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { pgServerChildEnv } from '../../../common/child-env';
import { maskSecrets } from '../../../common/errors';
import { writeFileAtomicSync } from '../../../common/atomic-write';
import { pgSpawnIdentity, postgresIdentity } from '../../../common/pg-identity';
import { isNeonId } from '../../../model/ids';
import { bareServerConf, type ComputeStorageBackend, type PostgresReadyContext } from '../types';
import { processStartTime } from '../../../common/process-start-time';
import type { ConfSetting } from '../../postgres/config';
import { connectHost, readPostmasterPid } from './local-postgres';
import { PgConnection } from './pg-client';
import { livePusherPid, PUSHER_LOG_FILE, PUSHER_PASSWORD_FILE, readPusherStatus, writePidFile, type PusherStatus } from './pusher-files';
import { replicaSettings, startReplicaStreaming } from './replica';
import { sidecarCommand } from './sidecars';
import { PUSHER_APPLICATION_NAME } from './wal-pusher';
import { UNKNOWN_TIMELINE_EXIT_CODE } from './sync-safekeepers';

const PUSHER_READY_TIMEOUT_MS = 60_000;

/**
 * The only role that may open a replication connection to a stock compute, and so the only one
 * whose walsender (application_name wal_pusher, the one synchronous standby) acknowledges commits.
 * It logs in with SCRAM-SHA-256 and a random password set afresh at every pusher start.
 */
export const PUSHER_ROLE = 'durable_compute_wal_pusher';

/** A SCRAM-SHA-256 verifier for `password`, so the clear password never reaches SQL text or logs. */
function scramVerifier(password: string): string {
  const salt = randomBytes(16);
  const iterations = 4096;
  const salted = pbkdf2Sync(password, salt, iterations, 32, 'sha256');
  const clientKey = createHmac('sha256', salted).update('Client Key').digest();
  const storedKey = createHash('sha256').update(clientKey).digest();
  const serverKey = createHmac('sha256', salted).update('Server Key').digest();
  return `SCRAM-SHA-256$${iterations}:${salt.toString('base64')}$${storedKey.toString('base64')}:${serverKey.toString('base64')}`;
}

/**
 * Creates the pusher's role if needed and gives it a new random password, as the compute's
 * superuser over the local socket. The commit must not wait for the synchronous standby: that is
 * the pusher this password is for.
 */
async function setPusherPassword(ctx: PostgresReadyContext, password: string): Promise<void> {
  const postmaster = readPostmasterPid(ctx.pgdata);
  const conn = await PgConnection.connect({
    host: connectHost(postmaster),
    port: postmaster.port,
    user: ctx.superuser ?? 'cloud_admin',
    database: 'postgres',
    connectTimeoutMs: 10_000,
    params: { application_name: 'durable-compute' },
  });
  try {
    await conn.query(
      [
        'BEGIN',
        'SET LOCAL synchronous_commit = local',
        `DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = '${PUSHER_ROLE}') THEN CREATE ROLE ${PUSHER_ROLE}; END IF; END $$`,
        `ALTER ROLE ${PUSHER_ROLE} WITH LOGIN REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS PASSWORD '${scramVerifier(password)}'`,
        // pg_control_checkpoint() and pg_settings, for the image's checkpoint.
        `GRANT pg_read_all_settings TO ${PUSHER_ROLE}`,
        'COMMIT',
      ].join('; '),
    );
  } finally {
    await conn.close();
  }
}

/**
 * The password file the pusher reads and removes at start; only the Postgres OS user can read it.
 * Renamed into place whole: a pusher started early waits for it to appear.
 */
function writePusherPassword(pgdata: string, password: string): void {
  writeFileAtomicSync(path.join(pgdata, PUSHER_PASSWORD_FILE), password, { mode: 0o600, owner: postgresIdentity() });
}

function logTail(file: string, lines = 20): string {
  try {
    return maskSecrets(readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n'));
  } catch {
    return '(no log)';
  }
}

/** The pusher's last reported status for this data directory (undefined if it never ran). */
export function walPusherStatus(pgdata: string): (PusherStatus & { alive: boolean }) | undefined {
  const status = readPusherStatus(pgdata);
  if (!status) return undefined;
  return { ...status, alive: livePusherPid(pgdata) === status.pid };
}

function validate(ctx: Pick<PostgresReadyContext, 'tenantId' | 'timelineId' | 'safekeepers'>): void {
  if (!isNeonId(ctx.tenantId)) throw new Error(`tenant ID ${JSON.stringify(ctx.tenantId)} is not 32 lower-case hex characters`);
  if (!isNeonId(ctx.timelineId)) throw new Error(`timeline ID ${JSON.stringify(ctx.timelineId)} is not 32 lower-case hex characters`);
  if (ctx.safekeepers.length === 0) throw new Error('a primary compute needs at least one safekeeper');
  for (const sk of ctx.safekeepers) {
    if (!/^[^\s,:]+:\d{1,5}$/.test(sk)) throw new Error(`safekeeper address ${JSON.stringify(sk)} is not host:port`);
  }
}

/** Gives the role a new password, then hands it to the pusher (a waiting one, or the one about to start). */
async function providePassword(ctx: PostgresReadyContext): Promise<void> {
  const password = randomBytes(32).toString('base64url');
  await setPusherPassword(ctx, password);
  writePusherPassword(ctx.pgdata, password);
}

async function startPusher(ctx: PostgresReadyContext): Promise<number> {
  await providePassword(ctx);
  return spawnPusher(ctx);
}

/**
 * How long a pusher started beside a starting Postgres waits for its password: Postgres's own
 * start timeout. One that waits in vain (Postgres never came up) exits by itself.
 */
const WAIT_FOR_POSTGRES_MS = 60_000;

/** Pushers this process started before Postgres was ready, by PGDATA: they wait for their password. */
const startedEarly = new Map<string, number>();

/** Whether the live pusher `pid` still waits for its password (started early, by us or by a worker before a restart). */
function awaitingPassword(pgdata: string, pid: number): boolean {
  if (startedEarly.get(path.resolve(pgdata)) === pid) return true;
  const status = readPusherStatus(pgdata);
  return status?.pid === pid && status.phase === 'awaiting-password';
}

function spawnPusher(ctx: Omit<PostgresReadyContext, 'socketDir' | 'port'>, waitForPostgresMs?: number): number {
  const logFile = path.join(ctx.pgdata, PUSHER_LOG_FILE);
  const fd = openSync(logFile, 'a', 0o600);
  try {
    const [node, ...script] = sidecarCommand('wal-pusher');
    const args = [
      ...script,
      '--pgdata',
      ctx.pgdata,
      '--user',
      PUSHER_ROLE,
      '--tenant-id',
      ctx.tenantId,
      '--timeline-id',
      ctx.timelineId,
      '--safekeepers',
      ctx.safekeepers.join(','),
      ...(waitForPostgresMs !== undefined ? ['--wait-for-postgres-ms', String(waitForPostgresMs)] : []),
    ];
    const child = spawn(node!, args, {
      // Its own session, so the pusher outlives a restart of the worker that started it.
      detached: true,
      stdio: ['ignore', fd, fd],
      cwd: ctx.pgdata,
      // As the user Postgres runs as (when we are root), so its files in PGDATA belong to that user.
      ...pgSpawnIdentity(),
      // A minimal environment: the pusher needs nothing of the worker's, except the token.
      env: pgServerChildEnv({ NEON_AUTH_TOKEN: ctx.authToken }),
    });
    if (child.pid === undefined) throw new Error('could not start the WAL pusher');
    child.unref();
    writePidFile(ctx.pgdata, child.pid);
    return child.pid;
  } finally {
    closeSync(fd);
  }
}

/** Waits until the pusher `pid` streams, or fails with its own words. */
async function waitForPusher(pgdata: string, pid: number): Promise<void> {
  const started = processStartTime(pid);
  const deadline = Date.now() + PUSHER_READY_TIMEOUT_MS;
  const logFile = path.join(pgdata, PUSHER_LOG_FILE);
  for (;;) {
    const status = readPusherStatus(pgdata);
    if (status?.pid === pid) {
      if (status.phase === 'streaming') return;
      if (status.phase === 'failed') throw new Error(`the WAL pusher failed: ${maskSecrets(status.error ?? 'unknown error')}\n${logTail(logFile)}`);
      if (status.phase === 'exited' || status.phase === 'stopping') throw new Error(`the WAL pusher stopped (${status.phase}): has Postgres exited?\n${logTail(logFile)}`);
    }
    if (started === undefined || processStartTime(pid) !== started) {
      throw new Error(`the WAL pusher (pid ${pid}) exited during startup. Last lines of ${logFile}:\n${logTail(logFile)}`);
    }
    if (Date.now() > deadline) {
      throw new Error(`the WAL pusher did not start streaming within ${PUSHER_READY_TIMEOUT_MS / 1000} s. Last lines of ${logFile}:\n${logTail(logFile)}`);
    }
    // A status file read is cheap; each step of this loop adds half of itself to every start.
    await sleep(10);
  }
}

export const stockStorageBackend: ComputeStorageBackend = {
  name: 'stock',

  postgresqlSettings(ctx) {
    const settings: ConfSetting[] = [
      // The local socket is for the compute's own processes (the worker, the pusher), not for
      // every OS user of the machine: pg_hba trusts the superuser there.
      { name: 'unix_socket_permissions', value: '0700' },
    ];
    if (ctx.mode === 'Primary') {
      settings.push(
        { name: 'wal_level', value: 'replica' },
        { name: 'max_wal_senders', value: 10 },
        { name: 'max_replication_slots', value: 10 },
        // COMMIT waits until the pusher reports that a quorum of safekeepers flushed it.
        { name: 'synchronous_standby_names', value: PUSHER_APPLICATION_NAME },
        { name: 'synchronous_commit', value: 'on' },
        { name: 'wal_sender_timeout', value: '60s' },
        // After a backend crash Postgres would re-run recovery and could rewrite WAL the pusher
        // already forwarded; stopping instead lets the control plane restart from the safekeepers.
        { name: 'restart_after_crash', value: false },
      );
    } else {
      settings.push({ name: 'hot_standby', value: true }, ...replicaSettings(ctx));
    }
    return settings;
  },

  postgresqlConf(ctx) {
    return bareServerConf(stockStorageBackend.postgresqlSettings(ctx), ctx);
  },

  hbaLines() {
    // Only the pusher's role may replicate, and only with its password: first in pg_hba.conf,
    // before any line of the image (initdb's `local replication all trust`) can match.
    return [
      `local\treplication\t${PUSHER_ROLE}\t\tscram-sha-256`,
      `local\tall\t${PUSHER_ROLE}\t\tscram-sha-256`,
      'local\treplication\tall\t\treject',
      'host\treplication\tall\t\tall\t\treject',
    ];
  },

  beforePostgresStart(ctx) {
    if ((ctx.mode ?? 'Primary') !== 'Primary') return;
    validate(ctx);
    if (livePusherPid(ctx.pgdata) !== undefined) return;
    // Node's start (~0.1 s of CPU) overlaps Postgres's instead of following it.
    startedEarly.set(path.resolve(ctx.pgdata), spawnPusher(ctx, WAIT_FOR_POSTGRES_MS));
  },

  async afterPostgresReady(ctx) {
    if (ctx.mode === 'Replica') return startReplicaStreaming(ctx);
    if ((ctx.mode ?? 'Primary') !== 'Primary') return;
    validate(ctx);
    const running = livePusherPid(ctx.pgdata);
    let pid: number;
    if (running !== undefined && awaitingPassword(ctx.pgdata, running)) {
      await providePassword(ctx);
      pid = running;
    } else {
      pid = running ?? (await startPusher(ctx));
    }
    startedEarly.delete(path.resolve(ctx.pgdata));
    await waitForPusher(ctx.pgdata, pid);
  },

  syncSafekeepersCommand(_pgBinDir) {
    return sidecarCommand('sync-safekeepers');
  },
  permanentSyncExitCodes: [UNKNOWN_TIMELINE_EXIT_CODE],
};
