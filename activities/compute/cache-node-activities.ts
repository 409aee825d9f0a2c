import pg from 'pg';
import type { OffloadPrewarm } from '../../drivers/cache';
import type { S3Config } from '../../common/config';
import type { OffloadResult, PrewarmResult } from '../../model/cache-state';
import type { Failpoint } from '../failpoints';
import { readPostmasterPid } from '../../drivers/postgres/process';

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
  // The cache code and the AWS SDK load on the first offload or prewarm, not when the VM agent
  // starts: they are the heaviest modules it has, and a start without a cache never needs them.
  let cache: Promise<OffloadPrewarm> | undefined;
  const loadCache = () =>
    (cache ??= import('./cache-runtime').then(({ createOffloadPrewarm, createCacheStateStore, createS3Client }) =>
      createOffloadPrewarm({
        connect,
        store: createCacheStateStore({ s3: createS3Client(deps.s3), bucket: deps.s3.bucket, prefix: deps.prefix }),
        backend: deps.backend,
        afterPrewarmBatch: (heartbeat) => deps.failpoint('prewarmBatch', { heartbeatDetails: heartbeat }),
      }),
    ));
  return {
    async offloadCacheState(input) {
      await deps.failpoint('offloadCacheState');
      return (await loadCache()).offloadCacheState(input);
    },
    async prewarmCache(input) {
      await deps.failpoint('prewarmCache');
      return (await loadCache()).prewarmCache(input);
    },
  };
}
