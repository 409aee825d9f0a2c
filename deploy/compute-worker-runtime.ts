/**
 * How the compute worker's Node process is started in production: the systemd unit and the
 * container entrypoint `npm run build` writes use these, and so do the bundle test and the
 * benchmark, so what is measured is what ships.
 */

/**
 * A 1 MiB young generation instead of 16 MiB: the agent allocates little between activities, and
 * the default semi-spaces alone add ~15 MiB of resident memory. No old-space cap: a prewarm may
 * decode a cache state of up to 100 MiB.
 */
export const COMPUTE_WORKER_NODE_FLAGS = ['--max-semi-space-size=1'];

/**
 * glibc keeps freed memory of the main arena (V8's parser and compiler scratch) resident;
 * allocations of 32 KiB and more get their own mappings instead, which go back to the kernel when
 * freed. About 17 MiB less resident memory at idle, measured.
 */
export const COMPUTE_WORKER_ENV: Record<string, string> = { MALLOC_MMAP_THRESHOLD_: '32768' };
