/** The `neon` storage backend: Neon's Postgres does everything itself, from the spec's neon.* settings. */
import path from 'node:path';
import { bareServerConf, type ComputeStorageBackend } from './types';

export const neonStorageBackend: ComputeStorageBackend = {
  name: 'neon',
  postgresqlSettings() {
    // walproposer pushes WAL to the safekeepers the spec names; nothing else to set.
    return [];
  },
  postgresqlConf(ctx) {
    return bareServerConf([], ctx);
  },
  hbaLines() {
    return [];
  },
  async afterPostgresReady() {
    // walproposer runs inside Postgres.
  },
  syncSafekeepersCommand(pgBinDir) {
    return [path.join(pgBinDir, 'postgres'), '--sync-safekeepers'];
  },
  // Postgres exits 1 on any FATAL, a lost connection as well as a refusal: all are retried.
  permanentSyncExitCodes: [],
};
