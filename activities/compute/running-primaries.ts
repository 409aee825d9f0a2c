/**
 * Which other computes run as a primary on a timeline: a promote is refused while one does (its
 * WAL pusher would be fenced off by the new primary's election, and its commits would stop).
 * Asked of Temporal, which holds every compute's state: running compute workflows on the timeline
 * (visibility), then each one's mode (the workflow's `computeMode` query).
 */
import { Context } from '@temporalio/activity';
import { assertNeonId } from '../../model/ids';
import { computeModeQuery } from '../../workflows/compute/promote-messages';
import { COMPUTE_ID, COMPUTE_STATUS } from '../../model/search-attributes';

/** Statuses in which a compute's Postgres may be running. */
const LIVE_STATUSES = new Set(['init', 'running', 'configuration_pending', 'configuration', 'termination_pending_fast', 'termination_pending_immediate']);

export async function findRunningPrimaries(input: { tenantId: string; timelineId: string; exceptComputeId: string }): Promise<{ computeId: string; how: string }[]> {
  // Validated hex IDs: safe inside the visibility query's quotes.
  const tenantId = assertNeonId(input.tenantId, 'tenant_id');
  const timelineId = assertNeonId(input.timelineId, 'timeline_id');
  const client = Context.current().client;
  const found: { computeId: string; how: string }[] = [];
  const query = `WorkflowType = 'computeWorkflow' AND ExecutionStatus = 'Running' AND TenantId = '${tenantId}' AND TimelineId = '${timelineId}'`;
  for await (const wf of client.workflow.list({ query })) {
    const computeId = wf.typedSearchAttributes.get(COMPUTE_ID) ?? wf.workflowId;
    const status = wf.typedSearchAttributes.get(COMPUTE_STATUS) ?? 'unknown';
    if (computeId === input.exceptComputeId || !LIVE_STATUSES.has(status)) continue;
    let mode: string | null;
    try {
      mode = await client.workflow.getHandle(wf.workflowId).query(computeModeQuery);
    } catch {
      // A compute that cannot say (an older workflow): counted as a primary, to be safe.
      found.push({ computeId, how: `status ${status}, mode unknown` });
      continue;
    }
    if (mode === 'Primary') found.push({ computeId, how: `primary, status ${status}` });
  }
  return found;
}
