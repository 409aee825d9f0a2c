/**
 * A stock Replica compute streams its timeline's WAL from the safekeepers, as Neon's replicas do:
 * a hot standby whose `primary_conninfo` lists every safekeeper (libpq tries them in turn, as
 * neon_local writes it), with the tenant and timeline in the connection options. The safekeepers
 * serve physical replication (dev/storage/safekeeper/physical-replication.ts).
 *
 * The storage token never enters postgresql.conf: the walreceiver reads it from a password file in
 * PGDATA that only the Postgres OS user can read.
 */
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { chownForPostgres } from '../../../common/pg-identity';
import { maskSecrets } from '../../../common/errors';
import { formatLsn, parseLsn } from '../../../model/lsn';
import { defaultLogPath } from '../../postgres/process';
import { queryTimelineStatus } from '../../safekeepers';
import type { PostgresConfContext, PostgresReadyContext } from '../types';
import type { ConfSetting } from '../../postgres/config';
import { connectHost, readPostmasterPid } from './local-postgres';
import { PgConnection } from './pg-client';
import { splitHostPort } from './safekeeper-client';
import { nonRetryable } from '../../../common/failures';

/** The walreceiver's password file, relative to PGDATA (the postmaster's working directory). */
export const SAFEKEEPER_PASSFILE = 'safekeepers.pgpass';
export const REPLICA_APPLICATION_NAME = 'replica';
const STREAMING_TIMEOUT_MS = 30_000;

/** ApplicationFailure type of a replica that cannot stream for a reason a retry will not cure (an unknown timeline). */
export const REPLICA_SETUP_FAILED = 'ReplicaSetupFailed';

function conninfoValue(value: string): string {
  return `'${value.replaceAll('\\', '\\\\').replaceAll("'", "\\'")}'`;
}

/** primary_conninfo naming every safekeeper; libpq moves to the next host when one is down. */
export function replicaConninfo(ctx: Pick<PostgresConfContext, 'tenantId' | 'timelineId' | 'safekeepers'>): string {
  const hosts = ctx.safekeepers.map((sk) => splitHostPort(sk));
  return [
    `host=${conninfoValue(hosts.map((h) => h.host).join(','))}`,
    `port=${conninfoValue(hosts.map((h) => String(h.port)).join(','))}`,
    'user=no_user',
    `application_name=${REPLICA_APPLICATION_NAME}`,
    `passfile=${SAFEKEEPER_PASSFILE}`,
    'connect_timeout=5',
    `options=${conninfoValue(`-c tenant_id=${ctx.tenantId} -c timeline_id=${ctx.timelineId}`)}`,
  ].join(' ');
}

/** postgresql.conf lines of a streaming Replica (a Static compute stays at its LSN and streams nothing). */
export function replicaSettings(ctx: PostgresConfContext): ConfSetting[] {
  if (ctx.mode !== 'Replica') return [];
  return [
    { name: 'primary_conninfo', value: replicaConninfo(ctx) },
    // A safekeeper that was down is tried again soon, not after the default 5 s.
    { name: 'wal_retrieve_retry_interval', value: '1s' },
  ];
}

/** The password file the walreceiver reads: any host, port, database and user get the token. */
export function writeSafekeeperPassfile(pgdata: string, token: string | undefined): void {
  const file = path.join(pgdata, SAFEKEEPER_PASSFILE);
  rmSync(file, { force: true });
  if (token === undefined) return;
  const escaped = token.replaceAll('\\', '\\\\').replaceAll(':', '\\:');
  writeFileSync(file, `*:*:*:*:${escaped}\n`, { mode: 0o600, flag: 'wx' });
  chownForPostgres(file, false);
}

async function connectLocal(ctx: { pgdata: string; superuser?: string }): Promise<PgConnection> {
  const postmaster = readPostmasterPid(ctx.pgdata);
  return PgConnection.connect({
    host: connectHost(postmaster),
    port: postmaster.port,
    user: ctx.superuser ?? 'cloud_admin',
    database: 'postgres',
    connectTimeoutMs: 10_000,
    params: { application_name: 'compute_ctl:replica' },
  });
}

/** The safekeepers' commit LSN: the highest any of them reports (each only reports what a quorum has). */
export async function safekeepersCommitLsn(ctx: { tenantId: string; timelineId: string; safekeepers: string[]; authToken?: string }): Promise<{ commitLsn: bigint | null; known: number; errors: string[] }> {
  const answers = await Promise.allSettled(
    ctx.safekeepers.map((sk) => queryTimelineStatus(sk, ctx.tenantId, ctx.timelineId, { timeoutMs: 2000, ...(ctx.authToken !== undefined ? { token: ctx.authToken } : {}) })),
  );
  let commitLsn: bigint | null = null;
  let known = 0;
  const errors: string[] = [];
  answers.forEach((a, i) => {
    if (a.status === 'rejected') {
      errors.push(`${ctx.safekeepers[i]}: ${(a.reason as Error).message}`);
    } else if (a.value) {
      known += 1;
      const c = parseLsn(a.value.commit_lsn);
      if (commitLsn === null || c > commitLsn) commitLsn = c;
    }
  });
  return { commitLsn, known, errors };
}

/**
 * After a Replica's Postgres started: the safekeepers must know the timeline (else the standby
 * would wait forever for WAL that never comes), then the walreceiver must stream.
 */
export async function startReplicaStreaming(ctx: PostgresReadyContext): Promise<void> {
  const status = await safekeepersCommitLsn(ctx);
  if (status.known === 0) {
    if (status.errors.length === ctx.safekeepers.length) {
      throw new Error(`no safekeeper answered about timeline ${ctx.tenantId}/${ctx.timelineId}: ${maskSecrets(status.errors.join('; '))}`);
    }
    throw nonRetryable(REPLICA_SETUP_FAILED, `timeline ${ctx.tenantId}/${ctx.timelineId} is not known to the safekeepers (${ctx.safekeepers.join(', ')}): a replica needs a timeline a primary has written to`);
  }
  writeSafekeeperPassfile(ctx.pgdata, ctx.authToken);
  const deadline = Date.now() + STREAMING_TIMEOUT_MS;
  const conn = await connectLocal(ctx);
  try {
    for (;;) {
      // The walreceiver says 'streaming' before it has even connected; a message received is proof.
      const r = await conn.query('SELECT status, last_msg_receipt_time IS NOT NULL FROM pg_catalog.pg_stat_wal_receiver');
      if (r.rows[0]?.[0] === 'streaming' && r.rows[0]?.[1] === 't') return;
      if (Date.now() > deadline) {
        throw new Error(`the replica's walreceiver did not start streaming from the safekeepers within ${STREAMING_TIMEOUT_MS / 1000} s; last log lines:\n${walReceiverLog(ctx.pgdata)}`);
      }
      await sleep(100);
    }
  } finally {
    await conn.close();
  }
}

function walReceiverLog(pgdata: string): string {
  try {
    const lines = readFileSync(defaultLogPath(pgdata), 'utf8').trimEnd().split('\n');
    return maskSecrets(lines.filter((l) => /wal ?receiver|replication|could not connect/i.test(l)).slice(-5).join('\n') || lines.slice(-5).join('\n'));
  } catch {
    return '(no log)';
  }
}

/** What a Replica reports about its replay: how far it replayed and how far behind the safekeepers' commits it is. */
export interface ReplayLag {
  replay_lsn: string | null;
  commit_lsn: string | null;
  /** commit_lsn - replay_lsn in bytes (0 when caught up); null if either is unknown. */
  lag_bytes: number | null;
  measured_at: string;
}

export async function measureReplayLag(ctx: { pgdata: string; superuser?: string; tenantId: string; timelineId: string; safekeepers: string[]; authToken?: string }): Promise<ReplayLag> {
  const [replay, sk] = await Promise.all([
    (async () => {
      const conn = await connectLocal(ctx);
      try {
        const r = await conn.query('SELECT pg_catalog.pg_last_wal_replay_lsn()');
        const v = r.rows[0]?.[0];
        return v ? parseLsn(v) : null;
      } finally {
        await conn.close();
      }
    })(),
    safekeepersCommitLsn(ctx),
  ]);
  const commit = sk.commitLsn;
  return {
    replay_lsn: replay === null ? null : formatLsn(replay),
    commit_lsn: commit === null ? null : formatLsn(commit),
    lag_bytes: replay === null || commit === null ? null : commit > replay ? Number(commit - replay) : 0,
    measured_at: new Date().toISOString(),
  };
}
