/** The `neon` storage backend: Neon's Postgres does everything itself; we only emit its GUCs. */
import path from 'node:path';
import { confLine } from './stock/pg-conf';
import type { ComputeStorageBackend } from './types';

export const neonStorageBackend: ComputeStorageBackend = {
  name: 'neon',
  postgresqlConf(ctx) {
    return [
      '# storage: Neon (walproposer pushes WAL to the safekeepers)',
      confLine('neon.tenant_id', ctx.tenantId),
      confLine('neon.timeline_id', ctx.timelineId),
      confLine('neon.safekeepers', ctx.safekeepers.join(',')),
      '',
    ].join('\n');
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
};
