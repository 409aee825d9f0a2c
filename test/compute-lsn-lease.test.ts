import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inject } from 'vitest';
import type { ComputeClient } from '../client/compute-client';
import { killAllProcesses } from '../dev/child-processes';
import { fetchBasebackup, leaseLsn, StorageError } from '../drivers/pageserver';
import { parseLsn } from '../model/lsn';
import { renewAfterMs } from '../drivers/pageserver/lease-keeper';
import { cleanupComputes, createTestTimeline, exampleSpecFor, startComputeWorker, testComputeClient, testPgdata, TEST_WORKFLOW_OPTIONS, type TestTimeline } from './helpers/compute';
import { uniqueId } from './helpers/ids';
import { testConfig } from './helpers/stack';
import { appSql } from './helpers/app-sql';

type Spec = { spec: Record<string, unknown> };


/** The dev pageserver's management API on the test stack, with the storage token. */
async function pageserverApi(method: string, route: string, body?: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  const token = testConfig().storage.authToken;
  const res = await fetch(`${inject('stack').pageserver.http}${route}`, {
    method,
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

/** The page service's libpq URL on the test stack (its endpoint is host:port). */
const pageserverUrl = () => `postgresql://cloud_admin@${inject('stack').pageserver.pg}`;

// Renewed every half length: 8 s leaves 4 s of slack for a renewal delayed by a loaded machine
// (with 3 s, one late renewal in a full suite run let GC pass the lease).
const LEASE_SECONDS = 8;
// One watch round outlasts the whole held-lease check, so only the renewal inside the round keeps the lease.
const STATIC_OPTIONS = { ...TEST_WORKFLOW_OPTIONS, watchReportSeconds: 60, watchHeartbeatTimeoutSeconds: 20 };

describe('LSN leases: a Static compute holds its LSN against pageserver GC (embedded stack)', () => {
  let computes: ComputeClient;
  let close: () => Promise<void>;
  let timeline: TestTimeline;
  // One compute (one worker, as one VM) runs the whole story in turn: the primary, then a Static
  // compute at L1, then another start at L1 once GC has taken it.
  const computeId = uniqueId('lease');
  let l1 = '';
  let initdbLsn = '';
  const scratch = mkdtempSync(path.join(os.tmpdir(), 'dc-lease-'));

  const basebackupAt = (lsn: string) =>
    fetchBasebackup({
      connstring: pageserverUrl(),
      tenantId: timeline.tenantId,
      timelineId: timeline.timelineId,
      lsn,
      replica: true,
      token: testConfig().storage.authToken,
      targetDir: mkdtempSync(path.join(scratch, 'bb-')),
    });

  beforeAll(async () => {
    ({ computes, close } = await testComputeClient());
    timeline = await createTestTimeline();
    await startComputeWorker(computeId, testPgdata());
    // Leases of this tenant last 3 s (Neon's tenant config lsn_lease_length), so renewal is seen within seconds.
    expect((await pageserverApi('PUT', '/v1/tenant/config', { tenant_id: timeline.tenantId, lsn_lease_length: `${LEASE_SECONDS}s` })).status).toBe(200);
  });
  afterAll(async () => {
    await computes.terminate(computeId, 'immediate').catch(() => undefined);
    await close();
    await killAllProcesses();
    await cleanupComputes();
    rmSync(scratch, { recursive: true, force: true });
  });

  it('renews at compute_ctl\'s schedule: max(valid - 60 s, valid / 2)', () => {
    expect(renewAfterMs(10 * 60_000)).toBe(9 * 60_000);
    expect(renewAfterMs(3000)).toBe(1500);
    expect(renewAfterMs(-5)).toBe(0);
  });

  it('the lease API answers, and refuses bad input clearly', async () => {
    const info = (await pageserverApi('GET', `/v1/tenant/${timeline.tenantId}/timeline/${timeline.timelineId}`)).json;
    initdbLsn = info.initdb_lsn as string;
    const http = await pageserverApi('POST', `/v1/tenant/${timeline.tenantId}/timeline/${timeline.timelineId}/lsn_lease`, { lsn: initdbLsn });
    expect(http.status).toBe(200);
    const until = Date.parse(http.json.valid_until as string);
    expect(until - Date.now()).toBeGreaterThan(1000);
    expect(until - Date.now()).toBeLessThanOrEqual(LEASE_SECONDS * 1000);
    expect((await pageserverApi('POST', `/v1/tenant/${timeline.tenantId}/timeline/${timeline.timelineId}/lsn_lease`, { lsn: 'zz' })).json.msg).toMatch(/invalid lsn "zz"/);
    expect((await pageserverApi('PUT', '/v1/tenant/config', { tenant_id: timeline.tenantId, lsn_lease_length: 'soon' })).json.msg).toMatch(/invalid lsn_lease_length "soon"/);
    expect((await pageserverApi('PUT', '/v1/tenant/config', { tenant_id: timeline.tenantId, gc_period: '1h' })).json.msg).toMatch(/knows only lsn_lease_length, not gc_period/);
    const viaLibpq = await leaseLsn({ connstring: pageserverUrl(), tenantShardId: timeline.tenantId, timelineId: timeline.timelineId, lsn: initdbLsn, token: testConfig().storage.authToken });
    expect(viaLibpq.getTime()).toBeGreaterThan(Date.now());
  });

  it('a leased Static compute keeps its LSN through GC; unleased history is collected and refused clearly', async () => {
    // History: row 1 at L1, row 2 after it, then the primary stops (its WAL is on the safekeepers).
    const primary = (await exampleSpecFor(timeline)) as { spec: Spec; port: number };
    await computes.start(computeId, primary.spec, TEST_WORKFLOW_OPTIONS);
    await computes.waitForRunning(computeId);
    await appSql(primary.port, 'create table t (id int primary key)');
    await appSql(primary.port, 'insert into t values (1)');
    l1 = (await appSql<{ lsn: string }>(primary.port, 'select pg_current_wal_flush_lsn()::text as lsn'))[0]!.lsn;
    await appSql(primary.port, 'insert into t select generate_series(2, 500)');
    const { lsn: end } = await computes.terminate(computeId, 'fast');
    expect(parseLsn(end!)).toBeGreaterThan(parseLsn(l1));

    // A Static compute at L1: it takes the lease while starting and renews it while it runs.
    const held = (await exampleSpecFor(timeline)) as { spec: Spec; port: number };
    held.spec.spec.mode = { Static: l1 };
    await computes.start(computeId, held.spec, STATIC_OPTIONS);
    await computes.waitForRunning(computeId);
    expect(await appSql(held.port, 'select count(*)::int as n from t')).toEqual([{ n: 1 }]);

    // Past the lease's length: only renewal keeps it. GC with no horizon would collect everything
    // below the last record; the lease holds the cutoff at L1.
    await sleep((LEASE_SECONDS + 1.5) * 1000);
    const gc = await pageserverApi('PUT', `/v1/tenant/${timeline.tenantId}/timeline/${timeline.timelineId}/do_gc`, { gc_horizon: 0 });
    expect(gc.status).toBe(200);
    expect(gc.json.gc_cutoff_lsn).toBe(l1);
    const info = (await pageserverApi('GET', `/v1/tenant/${timeline.tenantId}/timeline/${timeline.timelineId}`)).json;
    expect(info.latest_gc_cutoff_lsn).toBe(l1);
    // A new base backup at L1 is still served; one below it is gone, with an error that says so.
    expect((await basebackupAt(l1)).files).toBeGreaterThan(0);
    const below = await basebackupAt(initdbLsn).catch((e: unknown) => e);
    expect(below).toBeInstanceOf(StorageError);
    expect((below as StorageError).message).toMatch(new RegExp(`LSN ${initdbLsn} is earlier than the GC cutoff ${l1}.*garbage-collected`));
    expect((below as StorageError).retryable).toBe(false);
    // The Static compute still reads its snapshot.
    expect(await appSql(held.port, 'select count(*)::int as n from t')).toEqual([{ n: 1 }]);

    // Once the compute is gone its lease runs out; the next GC takes L1 too.
    await computes.terminate(computeId, 'fast');
    await sleep((LEASE_SECONDS + 0.5) * 1000);
    const gc2 = await pageserverApi('PUT', `/v1/tenant/${timeline.tenantId}/timeline/${timeline.timelineId}/do_gc`, { gc_horizon: 0 });
    expect(parseLsn(gc2.json.gc_cutoff_lsn as string)).toBeGreaterThan(parseLsn(l1));
    await expect(basebackupAt(l1)).rejects.toThrow(/earlier than the GC cutoff/);
    const refused = await leaseLsn({ connstring: pageserverUrl(), tenantShardId: timeline.tenantId, timelineId: timeline.timelineId, lsn: l1, token: testConfig().storage.authToken }).catch((e: unknown) => e);
    expect(refused).toMatchObject({ kind: 'lease-refused', retryable: false });
    expect((refused as Error).message).toMatch(/did not grant a lease on LSN .* below its GC cutoff/);

    // A Static compute started at L1 now fails at once, naming the cutoff.
    const late = (await exampleSpecFor(timeline)) as { spec: Spec; port: number };
    late.spec.spec.mode = { Static: l1 };
    await computes.start(computeId, late.spec, STATIC_OPTIONS);
    const failed = await computes.waitFor(computeId, (s) => s.status === 'failed', 60_000);
    expect(failed.error).toMatch(/earlier than the GC cutoff/);
  });
});
