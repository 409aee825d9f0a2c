/**
 * The one door from the product into dev/: the embedded dev stack that the `dev`, `main` and
 * `dev temporal-server` commands start, and whose endpoints the CLI falls back to when the
 * environment leaves them unset. eslint.config.mjs allows dev/ imports in this file only.
 */
export { assertPortFree, freePort } from '../dev/processes';
export {
  devPayloadKeyFile,
  devS3Credentials,
  devStorageTokenFile,
  previousStackSettings,
  runningStack,
  stackDown,
  stackStatus,
  stackUp,
  type StackEndpoints,
} from '../dev/stack';
export { mintDevEndpointStorageToken } from '../dev/endpoint-storage/keys';
export { resolveStackSettings } from '../dev/stack-settings';
export { provisionTemporalCli } from '../dev/temporal-cli';
export { provisionTemporalServer, TEMPORAL_SERVER_VERSION } from '../dev/temporal-server/binaries';
export { sqlTemporalServerStatus, startSqlTemporalServer, stopSqlTemporalServer } from '../dev/temporal-server/server';
