/**
 * The WAL pusher's files inside the compute's PGDATA: its pid (so a second start is a no-op), its
 * status (so the starter can wait for it), its durable state and its log.
 */
import { writeFileAtomicSync } from '../../../common/atomic-write';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { processStartTime } from '../../../common/process-start-time';

export const PUSHER_PID_FILE = 'wal_pusher.pid';
export const PUSHER_STATUS_FILE = 'wal_pusher.status';
export const PUSHER_STATE_FILE = 'wal_pusher.state';
export const PUSHER_LOG_FILE = 'wal_pusher.log';
/** The pusher's Postgres password, handed over at start: the pusher reads it and removes the file. */
export const PUSHER_PASSWORD_FILE = 'wal_pusher.password';

/** awaiting-password: started beside a Postgres still starting up, waiting for its password file. */
export type PusherPhase = 'awaiting-password' | 'starting' | 'streaming' | 'stopping' | 'exited' | 'failed';

export interface PusherStatus {
  pid: number;
  phase: PusherPhase;
  error?: string;
  term?: string;
  startLsn?: string;
  updatedAt: string;
}

/** Durable facts about this compute that later pusher runs (after a pusher crash) rely on. */
export interface PusherState {
  /** Terms this compute's pushers were elected in: WAL of these terms is this compute's own. */
  terms: string[];
  /** The shutdown checkpoint of the image the compute started from, and where the next record starts. */
  imageCheckpointLsn: string;
  imageNextRecordLsn: string;
}

function readJson<T>(file: string): T | undefined {
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as T;
  } catch {
    return undefined;
  }
}

export function writePusherStatus(pgdata: string, status: Omit<PusherStatus, 'updatedAt' | 'pid'>): void {
  writeFileAtomicSync(
    path.join(pgdata, PUSHER_STATUS_FILE),
    JSON.stringify({ pid: process.pid, ...status, updatedAt: new Date().toISOString() }),
    { mode: 0o600 },
  );
}

export function readPusherStatus(pgdata: string): PusherStatus | undefined {
  return readJson<PusherStatus>(path.join(pgdata, PUSHER_STATUS_FILE));
}

export function readPusherState(pgdata: string): PusherState | undefined {
  return readJson<PusherState>(path.join(pgdata, PUSHER_STATE_FILE));
}

export function writePusherState(pgdata: string, state: PusherState): void {
  writeFileAtomicSync(path.join(pgdata, PUSHER_STATE_FILE), JSON.stringify(state), { mode: 0o600, durability: 'file-and-dir' });
}

export function writePidFile(pgdata: string, pid: number): void {
  const start = processStartTime(pid);
  writeFileAtomicSync(path.join(pgdata, PUSHER_PID_FILE), `${pid}\n${start ?? ''}\n`, { mode: 0o600 });
}

/** The pid of the pusher recorded in PGDATA if that very process is still alive. */
export function livePusherPid(pgdata: string): number | undefined {
  let text: string;
  try {
    text = readFileSync(path.join(pgdata, PUSHER_PID_FILE), 'utf8');
  } catch {
    return undefined;
  }
  const [pidText, start] = text.split('\n');
  const pid = Number(pidText);
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  const now = processStartTime(pid);
  return now !== undefined && now === start ? pid : undefined;
}
