import { setTimeout as sleep } from 'node:timers/promises';
import {
  WorkflowExecutionAlreadyStartedError,
  WorkflowFailedError,
  WorkflowNotFoundError,
  type Client,
  type WorkflowHandle,
} from '@temporalio/client';
import { WorkflowIdReusePolicy } from '@temporalio/common';
import { decodeArrayFromPayloads } from '@temporalio/common/lib/internal-non-workflow';
import { parseKeyValueConninfo, splitPassword } from '../drivers/conninfo';
import { importKeyProviders, specKeyOf } from '../drivers/secrets/import-keys';
import { buildImportSpec } from '../drivers/secrets/import-spec';
import type { KeyProviders } from '../drivers/secrets/key-provider';
import type { ImportConfig } from '../common/config';
import { maskSecrets, UserFacingError } from '../common/errors';
import { isNeonId } from '../model/ids';
import {
  defaultTargetDatabase,
  importWorkflowId,
  isFinalImportPhase,
  isValidImportId,
  s3PrefixProblem,
  targetDatabaseProblem,
  type ImportProgress,
  type ImportStatus,
} from '../model/import-status';
import { importStatusQuery } from '../workflows/import/messages';
import { IMPORT_ID, TENANT_ID, TIMELINE_ID } from '../model/search-attributes';
import type { importWorkflow, ImportWorkflowOptions } from '../workflows/import/workflow';
import type { dumpRestoreImportWorkflow, DumpRestoreImportInput } from '../workflows/import/dump-restore-workflow';

/** `import status`: the workflow's own status plus what the running step's heartbeats say. */
export interface ImportStatusView extends ImportStatus {
  /** RUNNING, COMPLETED, FAILED, CANCELED, TERMINATED... */
  workflow_status: string;
  running_step: { name: string; attempt: number; last_heartbeat: string | null; started_at: string | null } | null;
}

export interface StartImportRequest {
  importId: string;
  /** libpq URL or key=value conninfo; encrypted here, never sent or stored in clear text. */
  sourceConnstring: string;
  tenantId: string;
  timelineId: string;
  /** Target database; default: the source's (or neondb for postgres/template*). */
  database?: string;
  jobs?: number;
  /** fast_import's --s3-prefix: where spec.json, pgdata/ and status/ live; imports/<id> by default. */
  s3Prefix?: string;
  options?: ImportWorkflowOptions;
}

/** `import start --mode dump-restore`: from a source database straight into a destination database. */
export interface StartDumpRestoreRequest {
  importId: string;
  /** Both encrypted here, never sent or stored in clear text. */
  sourceConnstring: string;
  destinationConnstring: string;
  jobs?: number;
  /** Replace the destination's relations of the same names (refused otherwise). */
  clean?: boolean;
  s3Prefix?: string;
  /** Tuning of the batched copy of large tables (restore-table-batches.ts); the defaults otherwise. */
  batches?: Pick<DumpRestoreImportInput, 'splitTablesLargerThan' | 'batchBytes'>;
  options?: DumpRestoreImportInput['options'];
}

function requireS3Prefix(prefix: string | undefined): void {
  if (prefix === undefined) return;
  const problem = s3PrefixProblem(prefix);
  if (problem) throw new UserFacingError(`invalid --s3-prefix ${JSON.stringify(prefix)}: ${problem}`);
}

function requireImportId(importId: string): void {
  if (!isValidImportId(importId)) throw new UserFacingError(`invalid import ID ${JSON.stringify(importId)}: use 1-63 letters, digits, '.', '_' or '-'`);
}

/** The database a connection string names, if any (not a secret). Throws a masked error if it cannot be parsed. */
export function sourceDatabaseOf(connstring: string): string | undefined {
  return connstringDatabaseOf(connstring, 'source');
}

function connstringDatabaseOf(connstring: string, side: 'source' | 'destination'): string | undefined {
  const text = connstring.trim();
  try {
    splitPassword(text);
    if (/^postgres(?:ql)?:\/\//i.test(text)) {
      const url = new URL(text.replace(/^postgres(?:ql)?:/i, 'http:'));
      const fromQuery = url.searchParams.get('dbname');
      const fromPath = decodeURIComponent(url.pathname.replace(/^\//, ''));
      return fromQuery || fromPath || undefined;
    }
    return parseKeyValueConninfo(text).filter(([k]) => k === 'dbname').at(-1)?.[1] || undefined;
  } catch (err) {
    throw new UserFacingError(`The ${side} connection string cannot be parsed (${maskSecrets((err as Error).message)}): ${maskSecrets(text)}`);
  }
}

/** Bytes done and total from a step's heartbeat details (the upload's and the dump's shapes). */
export function progressFromHeartbeat(details: unknown): ImportProgress | null {
  if (typeof details !== 'object' || details === null) return null;
  const d = details as Record<string, unknown>;
  const num = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) ? v : null);
  if (d.phase === 'upload') {
    return { bytesDone: num(d.bytesDone) ?? 0, bytesTotal: num(d.bytesTotal), filesDone: num(d.filesDone), filesTotal: num(d.filesTotal) };
  }
  if (d.phase === 'restore-destination') {
    return {
      bytesDone: num(d.bytesDone) ?? 0,
      bytesTotal: num(d.bytesTotal),
      filesDone: null,
      filesTotal: null,
      tablesDone: num(d.tablesDone) ?? 0,
      tablesTotal: num(d.tablesTotal) ?? 0,
      ...(typeof d.section === 'string' ? { section: d.section } : {}),
    };
  }
  if (d.phase === 'dump') return { bytesDone: num(d.bytes) ?? 0, bytesTotal: null, filesDone: num(d.files), filesTotal: null };
  return null;
}

/** The control plane's typed API over import workflows. */
export class ImportClient {
  private providers: KeyProviders | undefined;

  constructor(
    private readonly client: Client,
    private readonly controlPlaneTaskQueue: string,
    private readonly imports: ImportConfig,
  ) {}

  private handle(importId: string): WorkflowHandle<typeof importWorkflow> {
    requireImportId(importId);
    return this.client.workflow.getHandle<typeof importWorkflow>(importWorkflowId(importId));
  }

  /**
   * Encrypts the source connection string into spec.json content and starts the import's
   * workflow. An import that is running or completed is not started again; a failed or
   * cancelled one may be (it starts over from an empty prefix).
   */
  async start(req: StartImportRequest): Promise<{ database: string }> {
    requireImportId(req.importId);
    if (!isNeonId(req.tenantId)) throw new UserFacingError(`invalid tenant ID ${JSON.stringify(req.tenantId)}: expected 32 lower-case hex characters`);
    if (!isNeonId(req.timelineId)) throw new UserFacingError(`invalid timeline ID ${JSON.stringify(req.timelineId)}: expected 32 lower-case hex characters`);
    if (req.jobs !== undefined && (!Number.isInteger(req.jobs) || req.jobs < 1 || req.jobs > 256)) throw new UserFacingError(`--jobs must be 1-256, got ${req.jobs}`);
    requireS3Prefix(req.s3Prefix);
    const database = req.database ?? defaultTargetDatabase(sourceDatabaseOf(req.sourceConnstring));
    const problem = targetDatabaseProblem(database);
    if (problem) throw new UserFacingError(`invalid target database ${JSON.stringify(database)}: ${problem}`);
    this.providers ??= importKeyProviders(this.imports);
    const { kind, keyId } = specKeyOf(this.imports);
    let spec;
    try {
      spec = await buildImportSpec({ providers: this.providers, kind, keyId, sourceConnstring: req.sourceConnstring.trim() });
    } catch (err) {
      throw new UserFacingError(`cannot encrypt the source connection string with the ${kind} key ${keyId}: ${maskSecrets((err as Error).message)}`);
    }
    try {
      await this.client.workflow.start<typeof importWorkflow>('importWorkflow', {
        taskQueue: this.controlPlaneTaskQueue,
        workflowId: importWorkflowId(req.importId),
        workflowIdReusePolicy: WorkflowIdReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
        args: [
          {
            importId: req.importId,
            tenantId: req.tenantId,
            timelineId: req.timelineId,
            database,
            jobs: req.jobs,
            spec,
            ...(req.s3Prefix !== undefined ? { s3Prefix: req.s3Prefix } : {}),
            options: { importerTaskQueue: this.imports.importer.sharedTaskQueue, ...req.options },
          },
        ],
        typedSearchAttributes: [
          { key: IMPORT_ID, value: req.importId },
          { key: TENANT_ID, value: req.tenantId },
          { key: TIMELINE_ID, value: req.timelineId },
        ],
        staticSummary: `import ${req.importId} into ${req.tenantId}/${req.timelineId} (database ${database})`,
      });
    } catch (err) {
      if (err instanceof WorkflowExecutionAlreadyStartedError) {
        const current = await this.status(req.importId).catch(() => undefined);
        throw new UserFacingError(
          `import ${req.importId} ${current ? `is ${current.phase}` : 'already exists'}; only a failed or cancelled import can be started again`,
        );
      }
      throw err;
    }
    return { database };
  }

  /**
   * Encrypts both connection strings into spec.json content (never sent in clear text) and starts
   * the import's dump-restore workflow, under the same workflow ID a pgdata import would have.
   */
  async startDumpRestore(req: StartDumpRestoreRequest): Promise<{ database: string }> {
    requireImportId(req.importId);
    requireS3Prefix(req.s3Prefix);
    if (req.jobs !== undefined && (!Number.isInteger(req.jobs) || req.jobs < 1 || req.jobs > 256)) throw new UserFacingError(`--jobs must be 1-256, got ${req.jobs}`);
    const database = connstringDatabaseOf(req.destinationConnstring, 'destination') ?? '(the default database)';
    connstringDatabaseOf(req.sourceConnstring, 'source');
    let destination: string;
    try {
      destination = maskSecrets(splitPassword(req.destinationConnstring.trim()).withoutPassword);
    } catch (err) {
      throw new UserFacingError(`The destination connection string cannot be parsed (${maskSecrets((err as Error).message)})`);
    }
    this.providers ??= importKeyProviders(this.imports);
    const { kind, keyId } = specKeyOf(this.imports);
    let spec;
    try {
      spec = await buildImportSpec({ providers: this.providers, kind, keyId, sourceConnstring: req.sourceConnstring.trim(), destinationConnstring: req.destinationConnstring.trim() });
    } catch (err) {
      throw new UserFacingError(`cannot encrypt the connection strings with the ${kind} key ${keyId}: ${maskSecrets((err as Error).message)}`);
    }
    const input: DumpRestoreImportInput = {
      importId: req.importId,
      spec,
      destination,
      database,
      jobs: req.jobs,
      clean: req.clean ?? false,
      ...(req.s3Prefix !== undefined ? { s3Prefix: req.s3Prefix } : {}),
      ...req.batches,
      options: { importerTaskQueue: this.imports.importer.sharedTaskQueue, ...req.options },
    };
    try {
      await this.client.workflow.start<typeof dumpRestoreImportWorkflow>('dumpRestoreImportWorkflow', {
        taskQueue: this.controlPlaneTaskQueue,
        workflowId: importWorkflowId(req.importId),
        workflowIdReusePolicy: WorkflowIdReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
        args: [input],
        typedSearchAttributes: [{ key: IMPORT_ID, value: req.importId }],
        staticSummary: `dump-restore import ${req.importId} into ${destination}`,
      });
    } catch (err) {
      if (err instanceof WorkflowExecutionAlreadyStartedError) {
        const current = await this.status(req.importId).catch(() => undefined);
        throw new UserFacingError(`import ${req.importId} ${current ? `is ${current.phase}` : 'already exists'}; only a failed or cancelled import can be started again`);
      }
      throw err;
    }
    return { database };
  }

  async status(importId: string): Promise<ImportStatusView> {
    const handle = this.handle(importId);
    let status: ImportStatus;
    let description;
    try {
      [status, description] = await Promise.all([handle.query(importStatusQuery), handle.describe()]);
    } catch (err) {
      if (err instanceof WorkflowNotFoundError) throw new UserFacingError(`no import with ID ${importId}`);
      throw err;
    }
    let runningStep: ImportStatusView['running_step'] = null;
    let progress = status.progress;
    const pending = description.raw.pendingActivities ?? [];
    // The step that moves data is the interesting one; claims and status writes are instants.
    const step = pending.find((a) => ['dumpSource', 'restoreDump', 'uploadPgdata', 'restoreIntoDestination'].includes(a.activityType?.name ?? '')) ?? pending[0];
    if (step) {
      const time = (t: { seconds?: unknown; nanos?: number | null } | null | undefined) =>
        Number(t?.seconds ?? 0) ? new Date(Number(t!.seconds) * 1000 + Math.floor((t!.nanos ?? 0) / 1e6)).toISOString() : null;
      runningStep = { name: step.activityType?.name ?? '?', attempt: step.attempt ?? 1, last_heartbeat: time(step.lastHeartbeatTime), started_at: time(step.lastStartedTime) };
      const details = step.heartbeatDetails?.payloads?.length
        ? (await decodeArrayFromPayloads(this.client.workflow.options.loadedDataConverter, step.heartbeatDetails.payloads))[0]
        : undefined;
      progress = progressFromHeartbeat(details) ?? progress;
    }
    return { ...status, progress, workflow_status: description.status.name, running_step: runningStep };
  }

  /**
   * Polls until the import ends; `onUpdate` sees every status. Resolves with the final status
   * when done; throws a UserFacingError with the reason when it failed or was cancelled.
   */
  async wait(importId: string, opts: { timeoutMs?: number; intervalMs?: number; onUpdate?: (s: ImportStatusView) => void } = {}): Promise<ImportStatusView> {
    const deadline = Date.now() + (opts.timeoutMs ?? 48 * 3600 * 1000);
    for (;;) {
      const s = await this.status(importId);
      opts.onUpdate?.(s);
      // The phase turns final just before the last cleanup step: the end is when the workflow closes.
      if (s.workflow_status !== 'RUNNING') {
        if (s.phase === 'done') return s;
        if (!isFinalImportPhase(s.phase)) throw new UserFacingError(`import ${importId} stopped in ${s.phase}: its workflow was ${s.workflow_status.toLowerCase()}`);
        throw new UserFacingError(`import ${importId} ${s.phase === 'cancelled' ? 'was cancelled' : 'failed'}: ${s.error ?? s.workflow_status}`);
      }
      if (Date.now() > deadline) throw new UserFacingError(`import ${importId} is still in ${s.phase} after ${(opts.timeoutMs ?? 0) / 1000} s`);
      await sleep(opts.intervalMs ?? 1000);
    }
  }

  /** Requests cancellation and waits until the workflow has cleaned up (timeline deleted, status written). */
  async cancel(importId: string, timeoutMs = 300_000): Promise<ImportStatusView> {
    const handle = this.handle(importId);
    const before = await this.status(importId);
    if (before.workflow_status !== 'RUNNING') throw new UserFacingError(`import ${importId} has already ended (${before.phase}); there is nothing to cancel`);
    await handle.cancel();
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const s = await this.status(importId);
      if (s.workflow_status !== 'RUNNING') return s;
      if (Date.now() > deadline) throw new UserFacingError(`import ${importId} is still cleaning up after ${timeoutMs / 1000} s`);
      await sleep(500);
    }
  }

  /** The import workflow's event history (payloads stay encrypted), e.g. to see which steps ran how often. */
  async historyOf(importId: string) {
    return this.handle(importId).fetchHistory();
  }

  /** The workflow's result: the final status, or the failure as a UserFacingError. */
  async result(importId: string): Promise<ImportStatus> {
    try {
      return await this.handle(importId).result();
    } catch (err) {
      if (err instanceof WorkflowFailedError) {
        let e: unknown = err;
        while (e instanceof Error && e.cause instanceof Error) e = e.cause;
        throw new UserFacingError(`import ${importId} failed: ${(e as Error).message}`);
      }
      throw err;
    }
  }
}
