import { defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';

/** Must match common/search-attributes.ts, which registers them on the dev server. */
export const COMPUTE_ID = defineSearchAttributeKey('ComputeId', SearchAttributeType.KEYWORD);
export const TENANT_ID = defineSearchAttributeKey('TenantId', SearchAttributeType.KEYWORD);
export const TIMELINE_ID = defineSearchAttributeKey('TimelineId', SearchAttributeType.KEYWORD);
export const COMPUTE_STATUS = defineSearchAttributeKey('ComputeStatus', SearchAttributeType.KEYWORD);
