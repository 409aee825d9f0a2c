/** Cache-state offload and prewarm (Neon LFC and stock PostgreSQL 15 shared_buffers). */
export { createOffloadPrewarm, type OffloadPrewarm, type OffloadPrewarmDeps, type OffloadCacheStateInput, type PrewarmCacheInput, type PrewarmHeartbeat } from './offload-prewarm';
export { INCOMPATIBLE_CACHE_STATE, type CacheBackend, type PrewarmCounts, type PrewarmOptions } from './backend';
export { createNeonCacheBackend, type NeonCacheBackendOptions } from './neon-backend';
export { type ConnectFn } from './pg-session';
export { CORRUPT_CACHE_STATE, decodeCacheState, encodeCacheState, type Compression } from './state-codec';
export { createStockCacheBackend, stockCacheSettings, type StockCacheBackendOptions } from './stock-backend';
export { createEndpointStorageStore, ENDPOINT_STORAGE_REFUSED, type EndpointStorageStoreOptions } from './endpoint-storage-store';
export { decodeNeonEndpointState, encodeNeonEndpointState, neonStateAsBlockRanges, NEON_PAGE_BYTES } from './neon-endpoint-format';
export { createCacheStateStore, type CacheStateStore, type CacheStateStoreOptions } from './store';
