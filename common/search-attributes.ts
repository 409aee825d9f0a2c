/**
 * Custom search attributes the workflows set, so operators can find runs in the Web UI. The dev
 * stack registers them at start; a real cluster needs them registered once
 * (`temporal operator search-attribute create --name ComputeId --type Keyword`, ...).
 */
export const SEARCH_ATTRIBUTES = {
  ComputeId: 'Keyword',
  TenantId: 'Keyword',
  TimelineId: 'Keyword',
  ComputeStatus: 'Keyword',
  ImportId: 'Keyword',
} as const;
