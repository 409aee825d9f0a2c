/**
 * The safekeeper clients against the dev safekeepers: TIMELINE_STATUS over libpq, the HTTP status,
 * the quorum check, and runSyncSafekeepers driving the stock sync command.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { StorageError } from '../drivers/pageserver/errors';
import { checkSafekeepersSynced } from '../drivers/safekeepers/sync-check';
import { runSyncSafekeepers } from '../drivers/safekeepers/sync-safekeepers';
import { getTimelineStatus, queryTimelineStatus, SafekeeperHttpError } from '../drivers/safekeepers/timeline-status';
import { projectRoot, tsNodeArgs } from '../common/paths';
import { startSafekeeper, type RunningSafekeeper } from '../dev/storage/safekeeper/safekeeper';
import { neonId } from './helpers/ids';

const TOKEN = 'sk-e2e-token';
let root: string;
const safekeepers: RunningSafekeeper[] = [];
const closed = new Set<RunningSafekeeper>();

/** Registers a timeline on a dev safekeeper (a dev-only route; Neon's storage controller does this). */
async function createOn(sk: RunningSafekeeper, tenantId: string, timelineId: string, startLsn: string, commitLsn?: string): Promise<void> {
  const res = await fetch(`${sk.httpUrl}/v1/tenant/timeline`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${TOKEN}` },
    body: JSON.stringify({ tenant_id: tenantId, timeline_id: timelineId, start_lsn: startLsn, ...(commitLsn ? { commit_lsn: commitLsn } : {}), pg_version: 15 }),
  });
  if (res.status !== 201) throw new Error(`creating the timeline on safekeeper ${sk.id}: HTTP ${res.status} ${await res.text()}`);
}

beforeAll(async () => {
  root = mkdtempSync(path.join(os.tmpdir(), 'dc-sk-e2e-'));
  for (let id = 1; id <= 3; id++) {
    safekeepers.push(await startSafekeeper({ id, dir: path.join(root, `sk${id}`), host: '127.0.0.1', pgPort: 0, httpPort: 0, authToken: TOKEN }));
  }
});

afterAll(async () => {
  await Promise.all(safekeepers.filter((s) => !closed.has(s)).map((s) => s.close()));
  rmSync(root, { recursive: true, force: true });
});

describe('against the dev safekeepers', () => {
  const tenant = neonId();
  const timeline = neonId();
  const addresses = () => safekeepers.map((s) => s.pgAddress);

  it('reads TIMELINE_STATUS over libpq and the status over HTTP', async () => {
    for (const sk of safekeepers) await createOn(sk, tenant, timeline, '0/2000028');
    for (const sk of safekeepers) {
      expect(await queryTimelineStatus(sk.pgAddress, tenant, timeline, { token: TOKEN, timeoutMs: 5000 })).toEqual({ commit_lsn: '0/2000028', flush_lsn: '0/2000028' });
    }
    expect(await queryTimelineStatus(safekeepers[0]!.pgAddress, tenant, neonId(), { token: TOKEN, timeoutMs: 5000 })).toBeNull();

    const status = await getTimelineStatus(safekeepers[1]!.httpUrl, tenant, timeline, { token: TOKEN });
    expect(status).toMatchObject({ tenant_id: tenant, timeline_id: timeline, commit_lsn: '0/2000028', flush_lsn: '0/2000028', timeline_start_lsn: '0/2000028' });
    expect(await getTimelineStatus(safekeepers[1]!.httpUrl, tenant, neonId(), { token: TOKEN })).toBeNull();
  });

  it('refuses wrong tokens on both paths', async () => {
    const libpq = (await queryTimelineStatus(safekeepers[0]!.pgAddress, tenant, timeline, { token: 'wrong', timeoutMs: 5000 }).catch((e: unknown) => e)) as StorageError;
    expect(libpq).toBeInstanceOf(StorageError);
    expect(libpq.kind).toBe('auth');
    const httpErr = (await getTimelineStatus(safekeepers[0]!.httpUrl, tenant, timeline, { token: 'wrong' }).catch((e: unknown) => e)) as SafekeeperHttpError;
    expect(httpErr).toBeInstanceOf(SafekeeperHttpError);
    expect(httpErr.status).toBe(401);
    expect(httpErr.retryable).toBe(false);
  });

  it('decides synced / not synced from real answers', async () => {
    const synced = await checkSafekeepersSynced({ safekeepers: addresses(), tenantId: tenant, timelineId: timeline, token: TOKEN, timeoutMs: 2000 });
    expect(synced).toMatchObject({ synced: true, lsn: '0/2000028', quorum: 2 });

    // Known to one safekeeper only.
    const lonely = neonId();
    await createOn(safekeepers[0]!, tenant, lonely, '0/3000028');
    const partial = await checkSafekeepersSynced({ safekeepers: addresses(), tenantId: tenant, timelineId: lonely, token: TOKEN, timeoutMs: 2000 });
    expect(partial.synced).toBe(false);
    expect(partial.synced ? '' : partial.reason).toMatch(/does not know the timeline/);

    // Committed beyond what is flushed: not a state to start from without the sync.
    const ahead = neonId();
    for (const sk of safekeepers) await createOn(sk, tenant, ahead, '0/3000028', '0/3000100');
    const unsynced = await checkSafekeepersSynced({ safekeepers: addresses(), tenantId: tenant, timelineId: ahead, token: TOKEN, timeoutMs: 2000 });
    expect(unsynced.synced ? '' : unsynced.reason).toMatch(/commit_lsn 0\/3000100 differs from flush_lsn 0\/3000028/);

    // Without a token the safekeepers refuse: no quorum of answers.
    const noToken = await checkSafekeepersSynced({ safekeepers: addresses(), tenantId: tenant, timelineId: timeline, timeoutMs: 2000 });
    expect(noToken.synced ? '' : noToken.reason).toMatch(/only 0 of 3 safekeepers answered/);
  });

  it('runs the stock sync command through runSyncSafekeepers', async () => {
    const pgdata = path.join(root, 'compute-pgdata');
    mkdirSync(pgdata);
    writeFileSync(
      path.join(pgdata, 'postgresql.conf'),
      [`neon.safekeepers = '${addresses().join(',')}'`, `neon.tenant_id = '${tenant}'`, `neon.timeline_id = '${timeline}'`, ''].join('\n'),
    );
    const r = await runSyncSafekeepers({
      command: [process.execPath, ...tsNodeArgs(), path.join(projectRoot, 'drivers/storage-backend/stock/sync-safekeepers-main.ts')],
      pgdata,
      timeoutMs: 60_000,
      token: TOKEN,
    });
    expect(r.lsn).toBe('0/2000028');
    const after = await checkSafekeepersSynced({ safekeepers: addresses(), tenantId: tenant, timelineId: timeline, token: TOKEN, timeoutMs: 2000 });
    expect(after).toMatchObject({ synced: true, lsn: r.lsn });
  });

  it('still reaches a quorum with one safekeeper down', async () => {
    const down = safekeepers[2]!;
    await down.close();
    closed.add(down);
    const r = await checkSafekeepersSynced({ safekeepers: addresses(), tenantId: tenant, timelineId: timeline, token: TOKEN, timeoutMs: 2000 });
    expect(r).toMatchObject({ synced: true, lsn: '0/2000028', responded: 2 });
  });
});
