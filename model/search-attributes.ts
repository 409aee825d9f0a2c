/**
 * The custom search attributes the workflows set, so operators can find runs in the Web UI:
 * declared once here, for the workflows that upsert them, the clients that query them and the dev
 * stack that registers them. A real cluster needs them registered once
 * (`temporal operator search-attribute create --name ComputeId --type Keyword`, ...).
 */
import { defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';

export const COMPUTE_ID = defineSearchAttributeKey('ComputeId', SearchAttributeType.KEYWORD);
export const TENANT_ID = defineSearchAttributeKey('TenantId', SearchAttributeType.KEYWORD);
export const TIMELINE_ID = defineSearchAttributeKey('TimelineId', SearchAttributeType.KEYWORD);
export const COMPUTE_STATUS = defineSearchAttributeKey('ComputeStatus', SearchAttributeType.KEYWORD);
export const IMPORT_ID = defineSearchAttributeKey('ImportId', SearchAttributeType.KEYWORD);

const ALL = [COMPUTE_ID, TENANT_ID, TIMELINE_ID, COMPUTE_STATUS, IMPORT_ID];

/** Name → type as the Temporal CLI spells it (`--search-attribute ComputeId=Keyword`), for registering them. */
export const SEARCH_ATTRIBUTES: Readonly<Record<string, 'Keyword'>> = Object.freeze(Object.fromEntries(ALL.map((key) => [key.name, 'Keyword' as const])));
