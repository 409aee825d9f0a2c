/**
 * A timeline's garbage-collection horizon and the LSN leases that hold it back, as Neon's
 * pageserver keeps them: GC moves a timeline's cutoff forward to `last_record_lsn - gc_horizon`,
 * but never past the LSN of a lease that is still valid, and never backwards. History below the
 * cutoff is gone: no base backup, branch or lease below it is served. Kept in `gc.json` beside
 * `timeline.json` (written atomically), so a restart neither forgets a lease nor reopens history.
 */
import path from 'node:path';
import { formatLsn, parseLsn } from '../../../model/lsn';
import { exists, readJson, writeJsonAtomic } from './fs-util';

/** Neon's default `lsn_lease_length` (LsnLease::DEFAULT_LENGTH). */
export const DEFAULT_LSN_LEASE_LENGTH_MS = 10 * 60 * 1000;
/** Neon's default `gc_horizon`: 64 MiB of WAL behind the last record are kept. */
export const DEFAULT_GC_HORIZON_BYTES = 64n * 1024n * 1024n;

export const GC_STATE_FILE = 'gc.json';
export const TENANT_CONFIG_FILE = 'tenant-config.json';

export interface GcState {
  /** Nothing below this LSN can be served any more; null until the first GC. */
  gc_cutoff_lsn: string | null;
  /** Leases by LSN (`X/Y`): when each ends, in milliseconds since the Unix epoch. */
  leases: Record<string, number>;
}

export async function readGcState(timelineDir: string): Promise<GcState> {
  const file = path.join(timelineDir, GC_STATE_FILE);
  if (!(await exists(file))) return { gc_cutoff_lsn: null, leases: {} };
  return readJson<GcState>(file);
}

export async function writeGcState(timelineDir: string, state: GcState): Promise<void> {
  await writeJsonAtomic(path.join(timelineDir, GC_STATE_FILE), state);
}

/** The cutoff in force: the recorded one, or the timeline's start before any GC. */
export function cutoffOf(state: GcState, startLsn: bigint): bigint {
  return state.gc_cutoff_lsn === null ? startLsn : parseLsn(state.gc_cutoff_lsn);
}

/** The LSNs of the leases still valid at `now`, lowest first. */
export function validLeaseLsns(state: GcState, now: number): bigint[] {
  return Object.entries(state.leases)
    .filter(([, until]) => until > now)
    .map(([lsn]) => parseLsn(lsn))
    .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

/**
 * A lease at `lsn` for `lengthMs` from `now` (an existing longer one is kept); expired leases are
 * dropped. Refused (undefined) below the cutoff: that history may already be gone.
 */
export function grantLease(state: GcState, lsn: bigint, startLsn: bigint, lengthMs: number, now: number): { state: GcState; validUntil: number } | undefined {
  if (lsn < cutoffOf(state, startLsn)) return undefined;
  const key = formatLsn(lsn);
  const leases = Object.fromEntries(Object.entries(state.leases).filter(([, until]) => until > now));
  const validUntil = Math.max(leases[key] ?? 0, now + lengthMs);
  return { state: { ...state, leases: { ...leases, [key]: validUntil } }, validUntil };
}

/**
 * The cutoff a GC moves to: `lastRecordLsn - horizonBytes`, held at the lowest valid lease, never
 * below the current cutoff (it only moves forward) nor the timeline's start.
 */
export function nextCutoff(state: GcState, opts: { startLsn: bigint; lastRecordLsn: bigint; horizonBytes: bigint; now: number }): bigint {
  const current = cutoffOf(state, opts.startLsn);
  let wanted = opts.lastRecordLsn > opts.horizonBytes ? opts.lastRecordLsn - opts.horizonBytes : 0n;
  const lowestLease = validLeaseLsns(state, opts.now)[0];
  if (lowestLease !== undefined && lowestLease < wanted) wanted = lowestLease;
  return wanted > current ? wanted : current;
}

/** Neon's humantime durations as tenant config takes them (`10m`, `30s`, `1500ms`, `1h`). */
export function parseDurationMs(value: unknown, what: string): number {
  const m = typeof value === 'string' ? /^(\d+)\s*(ms|s|m|h)$/.exec(value.trim()) : null;
  if (!m) throw new Error(`invalid ${what} ${JSON.stringify(value)}: expected a duration like 10m, 30s or 1500ms`);
  const n = Number(m[1]);
  const ms = m[2] === 'ms' ? n : m[2] === 's' ? n * 1000 : m[2] === 'm' ? n * 60_000 : n * 3_600_000;
  if (ms <= 0) throw new Error(`invalid ${what} ${JSON.stringify(value)}: must be longer than zero`);
  return ms;
}

/** The tenant's lease length (tenant config `lsn_lease_length`), else `fallbackMs`. */
export async function tenantLeaseLengthMs(tenantDir: string, fallbackMs: number): Promise<number> {
  const file = path.join(tenantDir, TENANT_CONFIG_FILE);
  if (!(await exists(file))) return fallbackMs;
  const config = await readJson<{ lsn_lease_length?: string }>(file);
  return config.lsn_lease_length === undefined ? fallbackMs : parseDurationMs(config.lsn_lease_length, 'lsn_lease_length');
}

export async function writeTenantConfig(tenantDir: string, config: { lsn_lease_length?: string }): Promise<void> {
  await writeJsonAtomic(path.join(tenantDir, TENANT_CONFIG_FILE), config);
}
