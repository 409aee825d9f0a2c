/**
 * `import_pgdata` as the pageserver runs it: an asynchronous task per timeline. The create call
 * only records the import and answers 201; the task waits (polling) for the upload's commit
 * marker, then validates and downloads the data directory and turns it into the timeline's first
 * image. While it runs, the same idempotency key gets 429 and any other key 409; once it is done
 * the timeline exists and the same key gets success again. A failed import stays visible (the
 * timeline is Broken, with the reason) until the timeline is deleted.
 *
 * Records are kept in `<dir>/imports/`, so a restarted pageserver resumes its imports.
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { exists, readJson, writeJsonAtomic } from './fs-util';

export interface PgdataImportRecord {
  tenant_id: string;
  timeline_id: string;
  idempotency_key: string | null;
  import_pgdata: unknown;
  state: 'running' | 'failed';
  error: string | null;
  started_at: string;
  finished_at: string | null;
}

export interface PgdataImportRunner {
  /** True once the upload's commit marker says done. */
  isCommitted(record: PgdataImportRecord): Promise<boolean>;
  /** Builds the timeline from the uploaded data directory; must stop early when `signal` aborts. */
  build(record: PgdataImportRecord, signal: AbortSignal): Promise<void>;
}

export interface PgdataImportsOptions {
  dir: string;
  runner: PgdataImportRunner;
  /** How often the commit marker is checked (Neon: 10 s). */
  pollIntervalMs: number;
  /** Called when an import ends (the storage controller's import_complete callback); errors are logged. */
  onComplete?: (record: PgdataImportRecord) => Promise<void>;
  log: (line: string) => void;
}

interface Running {
  abort: AbortController;
  done: Promise<void>;
}

export class PgdataImports {
  private readonly records = new Map<string, PgdataImportRecord>();
  private readonly running = new Map<string, Running>();
  private closed = false;

  constructor(private readonly opts: PgdataImportsOptions) {}

  private static key(tenantId: string, timelineId: string): string {
    return `${tenantId}/${timelineId}`;
  }

  private file(tenantId: string, timelineId: string): string {
    return path.join(this.opts.dir, `${tenantId}-${timelineId}.json`);
  }

  /** Loads the records and resumes every import that was still running. */
  async init(): Promise<void> {
    await fsp.mkdir(this.opts.dir, { recursive: true, mode: 0o755 });
    for (const name of await fsp.readdir(this.opts.dir)) {
      if (!/^[0-9a-f]{32}-[0-9a-f]{32}\.json$/.test(name)) continue;
      const record = await readJson<PgdataImportRecord>(path.join(this.opts.dir, name)).catch(() => undefined);
      if (!record) continue;
      this.records.set(PgdataImports.key(record.tenant_id, record.timeline_id), record);
      if (record.state === 'running') {
        this.opts.log(`resuming import_pgdata of ${record.tenant_id}/${record.timeline_id}`);
        this.launch(record);
      }
    }
  }

  get(tenantId: string, timelineId: string): PgdataImportRecord | undefined {
    return this.records.get(PgdataImports.key(tenantId, timelineId));
  }

  list(tenantId: string): PgdataImportRecord[] {
    return [...this.records.values()].filter((r) => r.tenant_id === tenantId);
  }

  async start(tenantId: string, timelineId: string, idempotencyKey: string | null, importPgdata: unknown): Promise<PgdataImportRecord> {
    const record: PgdataImportRecord = {
      tenant_id: tenantId,
      timeline_id: timelineId,
      idempotency_key: idempotencyKey,
      import_pgdata: importPgdata,
      state: 'running',
      error: null,
      started_at: new Date().toISOString(),
      finished_at: null,
    };
    await writeJsonAtomic(this.file(tenantId, timelineId), record);
    this.records.set(PgdataImports.key(tenantId, timelineId), record);
    this.opts.log(`import_pgdata of ${tenantId}/${timelineId} accepted; waiting for the commit marker`);
    this.launch(record);
    return record;
  }

  /** Stops a running import (waiting until it has stopped) and forgets the record. True if there was one. */
  async remove(tenantId: string, timelineId: string): Promise<boolean> {
    const key = PgdataImports.key(tenantId, timelineId);
    const run = this.running.get(key);
    if (run) {
      run.abort.abort(new Error('import cancelled: timeline deleted'));
      await run.done;
    }
    const had = this.records.delete(key);
    await fsp.rm(this.file(tenantId, timelineId), { force: true });
    return had || run !== undefined;
  }

  async close(): Promise<void> {
    this.closed = true;
    const runs = [...this.running.values()];
    for (const r of runs) r.abort.abort(new Error('pageserver stopping'));
    await Promise.all(runs.map((r) => r.done));
  }

  private launch(record: PgdataImportRecord): void {
    const key = PgdataImports.key(record.tenant_id, record.timeline_id);
    const abort = new AbortController();
    const done = this.run(record, abort.signal).finally(() => this.running.delete(key));
    this.running.set(key, { abort, done });
  }

  private async run(record: PgdataImportRecord, signal: AbortSignal): Promise<void> {
    const id = `${record.tenant_id}/${record.timeline_id}`;
    try {
      for (;;) {
        let committed = false;
        try {
          committed = await this.opts.runner.isCommitted(record);
        } catch (err) {
          // S3 unreachable for a moment is no reason to fail the import: look again later.
          this.opts.log(`import_pgdata of ${id}: cannot read the commit marker yet: ${(err as Error).message}`);
        }
        if (committed) break;
        await sleep(this.opts.pollIntervalMs, undefined, { signal });
      }
      this.opts.log(`import_pgdata of ${id}: commit marker found; importing`);
      await this.opts.runner.build(record, signal);
      if (signal.aborted) return;
      this.records.delete(PgdataImports.key(record.tenant_id, record.timeline_id));
      await fsp.rm(this.file(record.tenant_id, record.timeline_id), { force: true });
      this.opts.log(`import_pgdata of ${id} finished`);
      void this.complete({ ...record, finished_at: new Date().toISOString() });
    } catch (err) {
      if (signal.aborted) return;
      record.state = 'failed';
      record.error = err instanceof Error ? err.message : String(err);
      record.finished_at = new Date().toISOString();
      this.opts.log(`import_pgdata of ${id} failed: ${record.error}`);
      if (await exists(this.opts.dir)) await writeJsonAtomic(this.file(record.tenant_id, record.timeline_id), record).catch(() => undefined);
      void this.complete(record);
    }
  }

  private async complete(record: PgdataImportRecord): Promise<void> {
    if (!this.opts.onComplete || this.closed) return;
    await this.opts.onComplete(record).catch((err: Error) => this.opts.log(`import_complete callback for ${record.tenant_id}/${record.timeline_id} failed: ${err.message}`));
  }
}

/**
 * The storage controller's completion callback: `PUT <url>/import_complete {tenant_id,
 * timeline_id, error}`, repeated with backoff until acknowledged (the receiver must be idempotent).
 */
export function importCompleteNotifier(controlPlaneUrl: string, opts: { token?: string; maxAttempts?: number; log: (line: string) => void }) {
  const url = `${controlPlaneUrl.replace(/\/+$/, '')}/import_complete`;
  return async (record: PgdataImportRecord): Promise<void> => {
    const body = JSON.stringify({ tenant_id: record.tenant_id, timeline_id: record.timeline_id, error: record.state === 'failed' ? record.error : null });
    let delay = 500;
    for (let attempt = 1; ; attempt++) {
      try {
        const res = await fetch(url, {
          method: 'PUT',
          headers: { 'content-type': 'application/json', ...(opts.token ? { authorization: `Bearer ${opts.token}` } : {}) },
          body,
          signal: AbortSignal.timeout(10_000),
        });
        await res.arrayBuffer();
        if (res.ok) return;
        opts.log(`import_complete for ${record.tenant_id}/${record.timeline_id}: HTTP ${res.status}`);
      } catch (err) {
        opts.log(`import_complete for ${record.tenant_id}/${record.timeline_id}: ${(err as Error).message}`);
      }
      if (attempt >= (opts.maxAttempts ?? 20)) throw new Error(`not acknowledged after ${attempt} attempts`);
      await sleep(delay);
      delay = Math.min(delay * 2, 30_000);
    }
  };
}
