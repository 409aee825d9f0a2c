export { importPgdataFromS3, PgdataImportError, type ImportPgdataOptions, type ImportPgdataResult } from './import';
export { parsePgControl, majorOfCatalogVersion, walSegmentName, resealPgControl, PgControlError, PG_CONTROL_FILE_SIZE, crc32c, type PgControlInfo } from '../pg-control';
export { classifyEntry, checkRelativePath, PgdataLayoutError, SKELETON_DIRS, type PgdataEntry, type FileKind } from './layout';
export { createImportPgdataHandler } from './handler';
