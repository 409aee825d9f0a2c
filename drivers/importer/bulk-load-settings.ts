import os from 'node:os';

export interface HostResources {
  totalMemoryBytes: number;
  cpus: number;
}

/** The machine's memory (the cgroup limit when there is one) and CPU count. */
export function detectHostResources(): HostResources {
  const total = os.totalmem();
  const constrained = typeof process.constrainedMemory === 'function' ? process.constrainedMemory() : 0;
  return {
    totalMemoryBytes: constrained && constrained > 0 && constrained < total ? constrained : total,
    cpus: Math.max(1, os.availableParallelism?.() ?? os.cpus().length),
  };
}

const MiB = 1024 * 1024;

/**
 * Settings for a throwaway Postgres that only ever bulk-loads a restore and is then shut down
 * cleanly: no durability (fsync, full-page writes, synchronous commit off; minimal WAL), big
 * caches, and parallel index builds across every CPU. Values as in the reference (shared_buffers
 * 10% of memory, maintenance_work_mem 70%), except that the 70% is shared among the restore's
 * parallel jobs, since each may build an index at the same time.
 */
export function bulkLoadSettings(resources: HostResources, restoreJobs: number): Record<string, string> {
  const memMiB = Math.floor(resources.totalMemoryBytes / MiB);
  const sharedBuffersMiB = Math.max(128, Math.floor(memMiB * 0.1));
  const maintenanceMiB = Math.max(64, Math.floor((memMiB * 0.7) / Math.max(1, restoreJobs)));
  const cpus = Math.max(1, resources.cpus);
  return {
    wal_level: 'minimal',
    max_wal_senders: '0',
    fsync: 'off',
    full_page_writes: 'off',
    synchronous_commit: 'off',
    shared_buffers: `${sharedBuffersMiB}MB`,
    maintenance_work_mem: `${maintenanceMiB}MB`,
    max_parallel_maintenance_workers: String(cpus),
    max_parallel_workers: String(cpus),
    max_parallel_workers_per_gather: String(cpus),
    max_worker_processes: String(Math.max(8, cpus + 2)),
    effective_io_concurrency: '100',
    // Few checkpoints during the load; the clean shutdown writes the one that matters.
    checkpoint_timeout: '1h',
    max_wal_size: '4GB',
    // Recycled WAL segments would be uploaded for nothing.
    min_wal_size: '32MB',
  };
}
