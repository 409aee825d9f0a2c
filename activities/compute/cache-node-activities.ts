import pg from 'pg';
import { createCacheActivities, createCacheStateStore } from '../cache';
import type { S3Config } from '../../common/config';
import type { OffloadResult, PrewarmResult } from '../../model/cache-state';
import type { Failpoint } from '../failpoints';
import { readPostmasterPid } from '../postgres/process';
import { createS3Client } from '../s3/client';

export interface ComputeCacheDeps {
  pgdata: string;
  backend: 'stock' | 'neon';
  s3: S3Config;
  /** Key prefix under which `<tenant>/<timeline>/<endpoint>/lfc_state` objects live. */
  prefix: string;
  adminUser?: string;
  failpoint: Failpoint;
}

export interface ComputeCacheActivities {
  offloadCacheState(input: { tenantId: string; timelineId: string; endpointId: string }): Promise<OffloadResult>;
  prewarmCache(input: { tenantId: string; timelineId: string; endpointId: string; fromEndpointId?: string }): Promise<PrewarmResult>;
}

/** Cache offload and prewarm against this VM's Postgres, reached over its local socket as the admin. */
export function createComputeCacheActivities(deps: ComputeCacheDeps): ComputeCacheActivities {
  const connect = async (database: string): Promise<pg.Client> => {
    const pid = await readPostmasterPid(deps.pgdata);
    if (!pid) throw new Error(`Postgres is not running on ${deps.pgdata}`);
    const client = new pg.Client({ host: pid.socketDir ?? '127.0.0.1', port: pid.port, user: deps.adminUser ?? 'cloud_admin', database });
    await client.connect();
    return client;
  };
  const cache = createCacheActivities({
    connect,
    store: createCacheStateStore({ s3: createS3Client(deps.s3), bucket: deps.s3.bucket, prefix: deps.prefix }),
    backend: deps.backend,
    afterPrewarmBatch: (heartbeat) => deps.failpoint('prewarmBatch', { heartbeatDetails: heartbeat }),
  });
  return {
    async offloadCacheState(input) {
      await deps.failpoint('offloadCacheState');
      return cache.offloadCacheState(input);
    },
    async prewarmCache(input) {
      await deps.failpoint('prewarmCache');
      return cache.prewarmCache(input);
    },
  };
}
