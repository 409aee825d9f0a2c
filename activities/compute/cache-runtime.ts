/**
 * What the compute worker's cache activities load on their first offload or prewarm: the cache
 * code and the AWS SDK, the heaviest modules the VM agent has. The compute-worker bundle keeps
 * them in a file of their own (cache-runtime.cjs) that is read only then, so an idle agent never
 * parses them.
 */
export { createOffloadPrewarm, createCacheStateStore, createEndpointStorageStore } from '../../drivers/cache';
export { createS3Client } from '../../drivers/s3/client';
