import type { AppConfig } from '../../common/config';
import { createPageserverClient } from '../../drivers/pageserver';
import { createS3Client } from '../../drivers/s3/client';
import { createImportControlActivities } from './control-plane';

export { createImportControlActivities, IMPORT_CONTROL_FAILURES, type ImportControlActivities, type ImportControlDeps, type PageserverImportState } from './control-plane';

/** The import workflow's control-plane activities, wired from the configuration. */
export function importControlActivitiesFor(config: AppConfig) {
  return createImportControlActivities({
    s3: createS3Client(config.s3),
    bucket: config.s3.bucket,
    region: config.s3.region,
    pageserver: config.storage.pageserverHttp ? createPageserverClient({ httpUrl: config.storage.pageserverHttp, token: config.storage.authToken }) : undefined,
    safekeepersHttp: config.storage.safekeepersHttp,
    storageToken: config.storage.authToken,
  });
}
