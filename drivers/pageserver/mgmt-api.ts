import { z } from 'zod';
import { assertNeonId } from '../../model/ids';
import { formatLsn, isLsn, parseLsn } from '../../model/lsn';
import { createStorageHttpClient, StorageHttpError, type HttpRequestOptions } from './http';

/**
 * The pageserver's management API (`/v1/tenant/<tenant>/timeline...`), as Neon's pageserver serves
 * it: create (bootstrap, branch, import), get, list and delete timelines.
 */

export class PageserverHttpError extends StorageHttpError {
  override name = 'PageserverHttpError';
}

export function isPageserverNotFound(err: unknown): boolean {
  return err instanceof PageserverHttpError && err.status === 404;
}

const lsnText = z.string().refine(isLsn, 'expected an LSN (X/Y)');

/** "Active", "Loading", "Stopping" or `{"Broken": {reason, backtrace}}`. */
const timelineState = z.union([z.string(), z.looseObject({ Broken: z.looseObject({ reason: z.string().optional() }) })]);

const timelineInfoSchema = z.looseObject({
  tenant_id: z.string(),
  timeline_id: z.string(),
  ancestor_timeline_id: z.string().nullish(),
  ancestor_lsn: lsnText.nullish(),
  last_record_lsn: lsnText,
  prev_record_lsn: lsnText.nullish(),
  disk_consistent_lsn: lsnText.optional(),
  remote_consistent_lsn: lsnText.optional(),
  initdb_lsn: lsnText.optional(),
  pg_version: z.number().int().optional(),
  state: timelineState.optional(),
  /**
   * The pageserver's record of the import that created the timeline (in progress, failed or done),
   * null for a timeline made otherwise. Its idempotency key proves which import the timeline is.
   */
  import_pgdata: z.looseObject({ idempotency_key: z.string().nullish() }).nullish(),
});

export type TimelineInfo = z.infer<typeof timelineInfoSchema>;

export interface BootstrapTimelineRequest {
  new_timeline_id: string;
  pg_version: number;
  existing_initdb_timeline_id?: string;
}

export interface BranchTimelineRequest {
  new_timeline_id: string;
  ancestor_timeline_id: string;
  /** Branch point; the ancestor's last record LSN when absent. */
  ancestor_start_lsn?: string;
  pg_version?: number;
}

export interface ImportTimelineRequest {
  new_timeline_id: string;
  import_pgdata: {
    idempotency_key: string;
    location: { AwsS3: { region: string; bucket: string; key: string } };
  };
}

export type CreateTimelineRequest = BootstrapTimelineRequest | BranchTimelineRequest | ImportTimelineRequest;

export interface PageserverClientOptions {
  /** The management API, e.g. http://127.0.0.1:9898. */
  httpUrl: string;
  /** Sent as `Authorization: Bearer <token>`. */
  token?: string;
  /** Default per-request timeout; 30 s. */
  timeoutMs?: number;
}

export interface PageserverClient {
  /** 201 (or 200) with the timeline; PageserverHttpError 409 if it exists differently, 429 while an import still runs. */
  createTimeline(tenantId: string, request: CreateTimelineRequest, opts?: HttpRequestOptions): Promise<{ status: number; timeline: TimelineInfo }>;
  /** PageserverHttpError 404 for an unknown tenant or timeline. */
  getTimeline(tenantId: string, timelineId: string, opts?: HttpRequestOptions): Promise<TimelineInfo>;
  listTimelines(tenantId: string, opts?: HttpRequestOptions): Promise<TimelineInfo[]>;
  /** Resolves with the status (200, or 202 while deletion continues in the background). */
  deleteTimeline(tenantId: string, timelineId: string, opts?: HttpRequestOptions): Promise<{ status: number }>;
}

function validatedRequest(request: CreateTimelineRequest): Record<string, unknown> {
  assertNeonId(request.new_timeline_id, 'new_timeline_id');
  if ('import_pgdata' in request) {
    const { idempotency_key, location } = request.import_pgdata;
    if (!idempotency_key) throw new RangeError('import_pgdata.idempotency_key must not be empty');
    const s3 = location?.AwsS3;
    if (!s3?.region || !s3.bucket || !s3.key) throw new RangeError('import_pgdata.location.AwsS3 needs region, bucket and key');
    return { new_timeline_id: request.new_timeline_id, import_pgdata: { idempotency_key, location: { AwsS3: { region: s3.region, bucket: s3.bucket, key: s3.key } } } };
  }
  if ('ancestor_timeline_id' in request) {
    assertNeonId(request.ancestor_timeline_id, 'ancestor_timeline_id');
    return {
      new_timeline_id: request.new_timeline_id,
      ancestor_timeline_id: request.ancestor_timeline_id,
      ...(request.ancestor_start_lsn !== undefined ? { ancestor_start_lsn: formatLsn(parseLsn(request.ancestor_start_lsn)) } : {}),
      ...(request.pg_version !== undefined ? { pg_version: request.pg_version } : {}),
    };
  }
  if (!Number.isInteger(request.pg_version) || request.pg_version < 14) throw new RangeError(`pg_version must be a PostgreSQL major version, got ${request.pg_version}`);
  if (request.existing_initdb_timeline_id !== undefined) assertNeonId(request.existing_initdb_timeline_id, 'existing_initdb_timeline_id');
  return { ...request };
}

export function createPageserverClient(options: PageserverClientOptions): PageserverClient {
  const http = createStorageHttpClient(
    'pageserver',
    options.httpUrl,
    options.token,
    (status, msg, method, path, cause) => new PageserverHttpError('pageserver', status, msg, method, path, cause === undefined ? undefined : { cause }),
    options.timeoutMs,
  );
  const parseInfo = (json: unknown, method: string, path: string): TimelineInfo => {
    const parsed = timelineInfoSchema.safeParse(json);
    if (!parsed.success) {
      const problem = parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ');
      throw new PageserverHttpError('pageserver', 200, `unexpected TimelineInfo: ${problem}`, method, path);
    }
    return parsed.data;
  };
  const tenantPath = (tenantId: string) => `/v1/tenant/${assertNeonId(tenantId, 'tenant_id')}/timeline`;
  return {
    async createTimeline(tenantId, request, opts) {
      const path = tenantPath(tenantId);
      const { status, json } = await http.request('POST', path, validatedRequest(request), opts);
      return { status, timeline: parseInfo(json, 'POST', path) };
    },
    async getTimeline(tenantId, timelineId, opts) {
      const path = `${tenantPath(tenantId)}/${assertNeonId(timelineId, 'timeline_id')}`;
      const { json } = await http.request('GET', path, undefined, opts);
      return parseInfo(json, 'GET', path);
    },
    async listTimelines(tenantId, opts) {
      const path = tenantPath(tenantId);
      const { json } = await http.request('GET', path, undefined, opts);
      if (!Array.isArray(json)) throw new PageserverHttpError('pageserver', 200, 'expected a JSON array of timelines', 'GET', path);
      return json.map((item) => parseInfo(item, 'GET', path));
    },
    async deleteTimeline(tenantId, timelineId, opts) {
      const path = `${tenantPath(tenantId)}/${assertNeonId(timelineId, 'timeline_id')}`;
      const { status } = await http.request('DELETE', path, undefined, opts);
      return { status };
    },
  };
}
