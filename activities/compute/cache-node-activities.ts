import pg from 'pg';
import type { OffloadPrewarm } from '../../drivers/cache';
import type { S3Config } from '../../common/config';
import type { EndpointStorageTarget, OffloadResult, PrewarmResult } from '../../model/cache-state';
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
  offloadCacheState(input: { tenantId: string; timelineId: string; endpointId: string; endpointStorage?: EndpointStorageTarget }): Promise<OffloadResult>;
  prewarmCache(input: { tenantId: string; timelineId: string; endpointId: string; fromEndpointId?: string; endpointStorage?: EndpointStorageTarget }): Promise<PrewarmResult>;
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
  const afterPrewarmBatch = (heartbeat: unknown) => deps.failpoint('prewarmBatch', { heartbeatDetails: heartbeat });
  // The cache code and the AWS SDK load on the first offload or prewarm, not when the VM agent
  // starts: they are the heaviest modules it has, and a start without a cache never needs them.
  const runtime = () => import('./cache-runtime');
  let viaS3: Promise<OffloadPrewarm> | undefined;
  const overS3 = () =>
    (viaS3 ??= runtime().then(({ createOffloadPrewarm, createCacheStateStore, createS3Client }) =>
      createOffloadPrewarm({
        connect,
        store: createCacheStateStore({ s3: createS3Client(deps.s3), bucket: deps.s3.bucket, prefix: deps.prefix }),
        backend: deps.backend,
        afterPrewarmBatch,
      }),
    ));
  // Endpoint storage: the spec's address and token, Neon's state format, and no S3 client at all.
  const overEndpointStorage = async (target: EndpointStorageTarget) => {
    const { createOffloadPrewarm, createEndpointStorageStore } = await runtime();
    return createOffloadPrewarm({ connect, store: createEndpointStorageStore(target), backend: deps.backend, format: 'neon', afterPrewarmBatch });
  };
  const cacheFor = (input: { endpointStorage?: EndpointStorageTarget }) => (input.endpointStorage ? overEndpointStorage(input.endpointStorage) : overS3());
  return {
    async offloadCacheState({ endpointStorage, ...input }) {
      await deps.failpoint('offloadCacheState');
      return (await cacheFor({ endpointStorage })).offloadCacheState(input);
    },
    async prewarmCache({ endpointStorage, ...input }) {
      await deps.failpoint('prewarmCache');
      return (await cacheFor({ endpointStorage })).prewarmCache(input);
    },
  };
}
