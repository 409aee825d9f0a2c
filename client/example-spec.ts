import { readFileSync } from 'node:fs';
import path from 'node:path';
import { projectRoot } from '../common/paths';

export interface ExampleSpecTarget {
  tenantId: string;
  timelineId: string;
  /** host:port of the pageserver's page service. */
  pageserverPg: string;
  /** host:port of each safekeeper. */
  safekeepers: string[];
  /** The compute's Postgres port. */
  port: number;
  endpointId?: string;
  /** The storage services' token, if they demand one (the dev stack's do). */
  storageAuthToken?: string;
}

/** examples/compute-spec.json with its placeholders filled for a concrete timeline and stack. */
export function exampleComputeConfig(target: ExampleSpecTarget): Record<string, unknown> {
  const config = JSON.parse(readFileSync(path.join(projectRoot, 'examples', 'compute-spec.json'), 'utf8')) as {
    spec: Record<string, unknown> & { cluster: { settings: { name: string; value: string }[] } };
  };
  const spec = config.spec;
  spec.tenant_id = target.tenantId;
  spec.timeline_id = target.timelineId;
  spec.pageserver_connstring = `postgresql://cloud_admin@${target.pageserverPg}`;
  spec.safekeeper_connstrings = target.safekeepers;
  if (target.endpointId) spec.endpoint_id = target.endpointId;
  if (target.storageAuthToken) spec.storage_auth_token = target.storageAuthToken;
  for (const setting of spec.cluster.settings) {
    if (setting.name === 'port') setting.value = String(target.port);
  }
  return config;
}
