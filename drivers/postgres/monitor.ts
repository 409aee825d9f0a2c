import type pg from 'pg';

/**
 * compute_ctl's activity monitor. last_active is "now" while any client backend other than the
 * admin's own is doing something (or a walsender, an active subscription or an autovacuum worker
 * exists); otherwise the newest state change of the idle backends. It never moves backwards, so
 * a control plane deciding on suspension only ever sees activity get newer.
 */

export interface BackendState {
  /** pg_stat_activity.state: active, idle, idle in transaction, ...; null when unknown. */
  state: string | null;
  /** ISO timestamp of the last state change; null when unknown. */
  stateChange: string | null;
}

export interface ActivitySample {
  backends: BackendState[];
  walsenders: number;
  activeSubscriptions: number;
  autovacuumWorkers: number;
}

/** Client backends except our own connection and the admin user's (monitors, compute_ctl itself). */
export const BACKENDS_QUERY = `
  SELECT state, state_change AS "stateChange"
    FROM pg_catalog.pg_stat_activity
   WHERE backend_type OPERATOR(pg_catalog.=) 'client backend'
     AND pid OPERATOR(pg_catalog.<>) pg_catalog.pg_backend_pid()
     AND usename OPERATOR(pg_catalog.<>) $1::pg_catalog.name`;

export const BACKGROUND_ACTIVITY_QUERY = `
  SELECT (SELECT count(*) FROM pg_catalog.pg_stat_replication WHERE application_name <> 'walproposer')::int AS walsenders,
         (SELECT count(*) FROM pg_catalog.pg_stat_subscription WHERE pid IS NOT NULL)::int AS "activeSubscriptions",
         (SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE backend_type = 'autovacuum worker')::int AS "autovacuumWorkers"`;

function later(a: string | null, b: string | null): string | null {
  if (a === null) return b;
  if (b === null) return a;
  return Date.parse(b) > Date.parse(a) ? b : a;
}

/** The new last_active from the previous one and a sample taken at `now`. Pure. */
export function computeLastActive(previous: string | null, sample: ActivitySample, now: Date): string | null {
  const nowIso = now.toISOString();
  let candidate: string | null = null;
  if (sample.backends.some((b) => b.state !== null && b.state !== 'idle')) candidate = nowIso;
  else {
    for (const b of sample.backends) {
      if (b.state === 'idle' && b.stateChange !== null && !Number.isNaN(Date.parse(b.stateChange))) candidate = later(candidate, b.stateChange);
    }
    if (sample.walsenders > 0 || sample.activeSubscriptions > 0 || sample.autovacuumWorkers > 0) candidate = nowIso;
  }
  return later(previous, candidate);
}

/** Takes one sample over `client` (connected to the compute as the admin user). */
export async function sampleActivity(client: pg.Client, adminUser: string): Promise<ActivitySample> {
  const backends = await client.query<{ state: string | null; stateChange: Date | null }>(BACKENDS_QUERY, [adminUser]);
  const background = await client.query<Omit<ActivitySample, 'backends'>>(BACKGROUND_ACTIVITY_QUERY);
  const counts = background.rows[0] ?? { walsenders: 0, activeSubscriptions: 0, autovacuumWorkers: 0 };
  return {
    backends: backends.rows.map((r) => ({ state: r.state, stateChange: r.stateChange ? r.stateChange.toISOString() : null })),
    ...counts,
  };
}
