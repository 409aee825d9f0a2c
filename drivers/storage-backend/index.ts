/** Storage backends for computes; see types.ts. Runs on the compute VM: nothing from dev/ here. */
import { neonStorageBackend } from './neon';
import { stockStorageBackend } from './stock/backend';
import type { ComputeStorageBackend } from './types';

export type { ComputeMode, ComputeStorageBackend, PostgresConfContext, PostgresReadyContext } from './types';
export { neonStorageBackend } from './neon';
export { stockStorageBackend, walPusherStatus } from './stock/backend';

export function computeStorageBackend(name: 'stock' | 'neon'): ComputeStorageBackend {
  switch (name) {
    case 'stock':
      return stockStorageBackend;
    case 'neon':
      return neonStorageBackend;
    default:
      throw new Error(`unknown storage backend ${JSON.stringify(name)} (expected stock or neon)`);
  }
}
