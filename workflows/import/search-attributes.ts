import { defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';

/** Must match common/search-attributes.ts, which registers it on the dev server. */
export const IMPORT_ID = defineSearchAttributeKey('ImportId', SearchAttributeType.KEYWORD);
export { TENANT_ID, TIMELINE_ID } from '../compute/search-attributes';
