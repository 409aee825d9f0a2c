import { DeleteObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { Client, Connection } from '@temporalio/client';
import { defaultPayloadConverter } from '@temporalio/common';
import { temporal } from '@temporalio/proto';
import pg from 'pg';
import { statSync, openSync, readSync, closeSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { deflateSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCacheStateStore, decodeCacheState, type PrewarmHeartbeat } from '../drivers/cache';
import { crc32 } from '../drivers/cache/state-codec';
import { readPostmasterPid } from '../drivers/postgres/process';
import { createS3Client } from '../drivers/s3/client';
import type { ComputeClient } from '../client/compute-client';
import { EncryptionCodec } from '../common/codec/encryption-codec';
import { FORK_NAMES, cacheStateKey, cacheStatePages, type BlockRange, type CacheState } from '../model/cache-state';
import { computeWorkflowId } from '../model/compute-status';
import { cleanupComputes, createTestTimeline, exampleSpecFor, startComputeWorker, testComputeClient, testPgdata, TEST_WORKFLOW_OPTIONS } from './helpers/compute';
import { uniqueId } from './helpers/ids';
import { killAllProcesses, type WorkerProcess } from '../dev/child-processes';
import { testConfig } from './helpers/stack';
import { appSql, hotHitRatio } from './helpers/app-sql';
import { waitFor } from './helpers/wait';

type Spec = { spec: Record<string, unknown> & { cluster: { settings: { name: string; value: string; vartype: string }[] } } };



async function waitForOutput(worker: WorkerProcess, pattern: RegExp, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!pattern.test(worker.output())) {
    if (Date.now() > deadline) throw new Error(`worker never printed ${pattern}:\n${worker.output()}`);
    await sleep(100);
  }
}

/** A superuser session on the compute's Postgres over its local socket, as the compute worker connects. */
async function adminClient(pgdata: string, database: string): Promise<pg.Client> {
  const pid = await readPostmasterPid(pgdata);
  if (!pid?.port) throw new Error(`Postgres is not running on ${pgdata}`);
  const client = new pg.Client({ host: pid.socketDir ?? '127.0.0.1', port: pid.port, user: 'cloud_admin', database });
  await client.connect();
  return client;
}

async function adminSql<T extends pg.QueryResultRow>(pgdata: string, database: string, text: string, values: unknown[] = []): Promise<T[]> {
  const client = await adminClient(pgdata, database);
  try {
    return (await client.query<T>(text, values)).rows;
  } finally {
    await client.end();
  }
}

/**
 * Statements only a prewarm runs (its session setup, pg_buffercache, relation lookups,
 * pg_prewarm), as pg_stat_statements normalizes them.
 */
const PREWARM_SQL = ['pg_backend_pid\\(\\) as pid, set_config', 'pg_buffercache', 'pg_filenode_relation\\(', 'pg_prewarm\\('];

async function prewarmStatementsRun(pgdata: string): Promise<string[]> {
  await adminSql(pgdata, 'postgres', 'create extension if not exists pg_stat_statements');
  const rows = await adminSql<{ query: string }>(pgdata, 'postgres', 'select query from pg_stat_statements where query ~ $1', [PREWARM_SQL.join('|')]);
  return rows.map((r) => r.query);
}

// ---------------------------------------------------------------------------------------------
// A write workload: transfers between accounts, with the balances they must leave kept here.

const ACCOUNTS = 2000;
const INITIAL_BALANCE = 1000;
const TRANSFER = `
  with debit as (update accounts set balance = balance - $3 where id = $1 returning id),
       credit as (update accounts set balance = balance + $3 where id = $2 returning id)
  insert into ledger (debit, credit, amount) select debit.id, credit.id, $3 from debit, credit`;

interface TransferOutcome {
  /** Expected balance by account ID (index 0 unused). */
  balances: number[];
  committed: number;
  moved: number;
}

/** Random transfers, one transaction each, until stopped; stop() reports what must now be in the tables. */
async function startTransfers(pgdata: string) {
  const client = await adminClient(pgdata, 'app');
  // The test reads the prewarm's statements from the server log; this load stays out of it.
  await client.query("set log_statement = 'none'");
  const balances = new Array<number>(ACCOUNTS + 1).fill(INITIAL_BALANCE);
  let committed = 0;
  let moved = 0;
  let stopping = false;
  const loop = (async () => {
    while (!stopping) {
      const from = 1 + Math.floor(Math.random() * ACCOUNTS);
      const to = 1 + ((from + Math.floor(Math.random() * (ACCOUNTS - 1))) % ACCOUNTS);
      const amount = 1 + Math.floor(Math.random() * 100);
      const { rowCount } = await client.query(TRANSFER, [from, to, amount]);
      if (rowCount !== 1) throw new Error(`transfer ${from} -> ${to} wrote ${rowCount} ledger rows`);
      balances[from]! -= amount;
      balances[to]! += amount;
      committed += 1;
      moved += amount;
      await sleep(2);
    }
  })();
  const failure = loop.then(
    () => undefined,
    (err: unknown) => err,
  );
  let stopped: Promise<TransferOutcome> | undefined;
  return {
    committed: () => committed,
    stop(): Promise<TransferOutcome> {
      stopping = true;
      stopped ??= (async () => {
        const err = await failure;
        await client.end();
        if (err) throw err;
        return { balances, committed, moved };
      })();
      return stopped;
    },
  };
}

/** The accounts and the ledger hold exactly what the committed transfers left, read by index and by sequential scan. */
async function expectTransfersIntact(pgdata: string, outcome: TransferOutcome): Promise<void> {
  const client = await adminClient(pgdata, 'app');
  try {
    for (const plan of ['set enable_seqscan = off', 'set enable_seqscan = on; set enable_indexscan = off; set enable_bitmapscan = off']) {
      await client.query(plan);
      const { rows } = await client.query<{ balance: string }>('select balance from accounts order by id');
      expect(rows.map((r) => Number(r.balance)), plan).toEqual(outcome.balances.slice(1));
    }
    const { rows } = await client.query('select count(*)::int8 as n, coalesce(sum(amount), 0)::int8 as moved, (select sum(balance) from accounts)::int8 as total from ledger');
    expect(rows[0]).toEqual({ n: String(outcome.committed), moved: String(outcome.moved), total: String(ACCOUNTS * INITIAL_BALANCE) });
  } finally {
    await client.end();
  }
}

// ---------------------------------------------------------------------------------------------
// What Postgres received: the statements its log records (log_statement = all), with parameters.

interface LoggedStatement {
  database: string;
  text: string;
  params: string[];
}

/** Bytes [from, to) of a file, as text. */
function readSlice(file: string, from: number, to = statSync(file).size): string {
  const fd = openSync(file, 'r');
  try {
    const buf = Buffer.alloc(to - from);
    return buf.toString('utf8', 0, readSync(fd, buf, 0, buf.length, from));
  } finally {
    closeSync(fd);
  }
}

// log_line_prefix '%m [%p] %q%u@%d ' (the example spec's).
const LOG_PREFIX = /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \S+ \[(\d+)\] (?:\S*@(\S*) )?([A-Z]+): {2}/;

function loggedStatements(log: string): LoggedStatement[] {
  const statements: LoggedStatement[] = [];
  const lastByPid = new Map<string, LoggedStatement>();
  let message: { pid: string; database: string; level: string; body: string } | undefined;
  const finish = () => {
    if (!message) return;
    const statement = /^(?:execute [^:]*|statement): ([\s\S]*)$/.exec(message.body);
    if (message.level === 'LOG' && statement) {
      const s = { database: message.database, text: statement[1]!, params: [] };
      statements.push(s);
      lastByPid.set(message.pid, s);
    } else if (message.level === 'DETAIL' && message.body.startsWith('parameters: ')) {
      const s = lastByPid.get(message.pid);
      if (s) for (const m of message.body.matchAll(/\$(\d+) = (?:NULL|'((?:[^']|'')*)')/g)) s.params[Number(m[1]) - 1] = (m[2] ?? '').replaceAll("''", "'");
    }
  };
  for (const line of log.split('\n')) {
    const m = LOG_PREFIX.exec(line);
    if (m) {
      finish();
      message = { pid: m[1]!, database: m[2] ?? '', level: m[3]!, body: line.slice(m[0].length) };
    } else if (message) {
      message.body += `\n${line}`;
    }
  }
  finish();
  return statements;
}

/** A one-dimensional array literal of plain values, as node-postgres sends arrays. */
const pgArray = (literal: string | undefined): string[] => (!literal || literal === '{}' ? [] : literal.slice(1, -1).split(',').map((v) => v.replace(/^"(.*)"$/, '$1')));
const forkNumber = (name: string | undefined): number => (FORK_NAMES as readonly (string | undefined)[]).indexOf(name);

/** A relation fork as a cache state names it: database OID (0: shared catalog), relfilenode, fork number. */
const rangeKey = (r: BlockRange): string => `${r.database}/${r.relfilenode}/${r.fork}`;
const GLOBAL_TABLESPACE = 1664;

interface Catalog {
  dbOid: Map<string, number>;
  /** Per database name: relation OID to its file node and whether it is a shared catalog. */
  relations: Map<string, Map<number, { filenode: number; shared: boolean }>>;
}

async function catalogOf(pgdata: string, databases: string[]): Promise<Catalog> {
  const dbOid = new Map((await adminSql<{ oid: string; datname: string }>(pgdata, 'postgres', 'select oid::int8 as oid, datname from pg_database')).map((r) => [r.datname, Number(r.oid)]));
  const relations = new Map<string, Map<number, { filenode: number; shared: boolean }>>();
  for (const db of databases) {
    const rows = await adminSql<{ oid: string; filenode: string; shared: boolean }>(
      pgdata,
      db,
      'select oid::int8 as oid, pg_relation_filenode(oid)::int8 as filenode, relisshared as shared from pg_class where pg_relation_filenode(oid) is not null',
    );
    relations.set(db, new Map(rows.map((r) => [Number(r.oid), { filenode: Number(r.filenode), shared: r.shared }])));
  }
  return { dbOid, relations };
}

interface RequestedBlocks {
  key: string;
  first: number;
  last: number;
}

interface PrewarmRequests {
  /** The block ranges each pg_prewarm() statement asked for. */
  loads: RequestedBlocks[][];
  /** Every relation fork looked up with pg_filenode_relation(). */
  resolved: string[];
}

function prewarmRequests(statements: LoggedStatement[], catalog: Catalog): PrewarmRequests {
  const out: PrewarmRequests = { loads: [], resolved: [] };
  for (const s of statements) {
    const db = catalog.dbOid.get(s.database);
    if (s.text.includes('pg_prewarm(')) {
      const [rels, forks, firsts, lasts] = s.params.slice(0, 4).map(pgArray);
      out.loads.push(
        rels!.map((rel, i) => {
          const info = catalog.relations.get(s.database)?.get(Number(rel));
          if (!info || db === undefined) throw new Error(`pg_prewarm() of relation ${rel} in ${s.database}, which the test cannot place`);
          return { key: `${info.shared ? 0 : db}/${info.filenode}/${forkNumber(forks![i])}`, first: Number(firsts![i]), last: Number(lasts![i]) };
        }),
      );
    } else if (s.text.includes('pg_filenode_relation(')) {
      const [spcs, rels, forks] = s.params.slice(0, 3).map(pgArray);
      rels!.forEach((rel, i) => out.resolved.push(`${Number(spcs![i]) === GLOBAL_TABLESPACE ? 0 : db}/${rel}/${forkNumber(forks![i])}`));
    }
  }
  return out;
}

const blockCount = (pieces: RequestedBlocks[]) => pieces.reduce((n, p) => n + p.last - p.first + 1, 0);

/** Pairs of requests that share a block of the same relation fork. */
function overlapping(pieces: RequestedBlocks[]): string[] {
  const sorted = [...pieces].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : a.first - b.first));
  const out: string[] = [];
  for (let i = 1; i < sorted.length; i++) {
    const [a, b] = [sorted[i - 1]!, sorted[i]!];
    if (a.key === b.key && b.first <= a.last) out.push(`${a.key} ${a.first}-${a.last} and ${b.first}-${b.last}`);
  }
  return out;
}

/** A place in the state's prewarm order (range index, blocks into it) as one comparable number. */
const orderPosition = (rangeIndex: number, blockOffset: number) => rangeIndex * 2 ** 32 + blockOffset;

/** Where requested blocks lie in the state's prewarm order: [start, end). */
function placeInState(ranges: readonly BlockRange[], p: RequestedBlocks): { start: number; end: number } {
  const i = ranges.findIndex((r) => rangeKey(r) === p.key && p.first >= r.firstBlock && p.last < r.firstBlock + r.blockCount);
  if (i < 0) throw new Error(`pg_prewarm() asked for ${p.key} blocks ${p.first}-${p.last}, which the state does not hold`);
  const r = ranges[i]!;
  return { start: orderPosition(i, p.first - r.firstBlock), end: orderPosition(i, p.last + 1 - r.firstBlock) };
}

// ---------------------------------------------------------------------------------------------
// What the Temporal server recorded.

/** The running prewarm activity as the server sees it: attempt, last worker, last heartbeat details (decrypted). */
async function pendingPrewarm(raw: Client, codec: EncryptionCodec, computeId: string) {
  const { raw: description } = await raw.workflow.getHandle(computeWorkflowId(computeId)).describe();
  const pending = description.pendingActivities?.find((a) => a.activityType?.name === 'prewarmCache');
  if (!pending) return undefined;
  const payload = pending.heartbeatDetails?.payloads?.[0];
  const details = payload ? defaultPayloadConverter.fromPayload<PrewarmHeartbeat>((await codec.decode([payload]))[0]!) : undefined;
  return { attempt: pending.attempt ?? 0, identity: pending.lastWorkerIdentity ?? '', details };
}

type HistoryRecord =
  | { kind: 'scheduled' | 'completed'; activity: string }
  | { kind: 'started'; activity: string; attempt: number; identity: string }
  | { kind: 'failed'; activity: string; retryState: number }
  | { kind: 'timer' };

/** Activity and timer events of the compute workflow from run `runId` on, across continue-as-new. */
async function historyFrom(raw: Client, computeId: string, runId: string): Promise<HistoryRecord[]> {
  const out: HistoryRecord[] = [];
  let next: string | undefined = runId;
  while (next) {
    const history: temporal.api.history.v1.IHistory = await raw.workflow.getHandle(computeWorkflowId(computeId), next).fetchHistory();
    const events = history.events ?? [];
    next = undefined;
    const typeOf = new Map<string, string>();
    const activity = (scheduledEventId: unknown) => typeOf.get(String(scheduledEventId)) ?? '?';
    for (const e of events) {
      const scheduled = e.activityTaskScheduledEventAttributes;
      if (scheduled) {
        typeOf.set(String(e.eventId), scheduled.activityType?.name ?? '?');
        out.push({ kind: 'scheduled', activity: scheduled.activityType?.name ?? '?' });
      }
      const started = e.activityTaskStartedEventAttributes;
      if (started) out.push({ kind: 'started', activity: activity(started.scheduledEventId), attempt: started.attempt ?? 0, identity: started.identity ?? '' });
      const completed = e.activityTaskCompletedEventAttributes;
      if (completed) out.push({ kind: 'completed', activity: activity(completed.scheduledEventId) });
      const failed = e.activityTaskFailedEventAttributes;
      if (failed) out.push({ kind: 'failed', activity: activity(failed.scheduledEventId), retryState: failed.retryState ?? 0 });
      if (e.timerFiredEventAttributes) out.push({ kind: 'timer' });
      next = e.workflowExecutionContinuedAsNewEventAttributes?.newExecutionRunId ?? next;
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Crafted cache states.

/**
 * Blobs that fail validation at different places, each with the problem its error must name. The
 * last three are well-formed around a hostile content, with a checksum that matches.
 */
function craftedStates(good: Buffer, state: Extract<CacheState, { kind: 'block-ranges' }>): { name: string; blob: Buffer; error: RegExp }[] {
  const header = (f: { records: number; pages: number; bodyLength: number; compressedLength: number }) => {
    const h = Buffer.alloc(28);
    h.write('DCCS', 0, 'latin1');
    h.writeUInt16BE(1, 4); // format version
    h.writeUInt16BE(1, 6); // deflate, block ranges
    h.writeUInt32BE(state.blockSize, 8);
    h.writeUInt32BE(f.records, 12);
    h.writeUInt32BE(f.pages, 16);
    h.writeUInt32BE(f.bodyLength, 20);
    h.writeUInt32BE(f.compressedLength, 24);
    return h;
  };
  const sealed = (h: Buffer, body: Buffer, compressed: Buffer) => {
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32([h, body]));
    return Buffer.concat([h, compressed, crc]);
  };
  const target = state.ranges[0]!;
  const range = (first: number, count: number) => {
    const b = Buffer.alloc(21);
    b.writeUInt32BE(target.database, 0);
    b.writeUInt32BE(target.tablespace, 4);
    b.writeUInt32BE(target.relfilenode, 8);
    b.writeUInt8(target.fork, 12);
    b.writeUInt32BE(first, 13);
    b.writeUInt32BE(count, 17);
    return b;
  };
  const overlap = Buffer.concat([range(0, 10), range(5, 10)]);
  const overlapCompressed = deflateSync(overlap);
  const bomb = deflateSync(Buffer.alloc(16 * 1024 * 1024));
  const badMagic = Buffer.from(good);
  badMagic.write('MZ\x90\x00', 0, 'latin1');
  return [
    { name: 'truncated', blob: good.subarray(0, good.length - 9), error: /^corrupt cache state: blob is \d+ bytes but its header describes \d+ \(truncated or padded\)$/ },
    { name: 'bad magic', blob: badMagic, error: /^corrupt cache state: bad magic/ },
    {
      name: 'decompression bomb',
      blob: sealed(header({ records: 1, pages: 1, bodyLength: 21, compressedLength: bomb.length }), Buffer.alloc(21), bomb),
      error: /^corrupt cache state: body decompresses to more than the declared 21 bytes$/,
    },
    {
      name: 'overlapping ranges',
      blob: sealed(header({ records: 2, pages: 20, bodyLength: overlap.length, compressedLength: overlapCompressed.length }), overlap, overlapCompressed),
      error: /^corrupt cache state: ranges 0 and 1 overlap$/,
    },
    {
      name: 'absurd declared size',
      blob: sealed(header({ records: 0xffffffff, pages: 0, bodyLength: 0xffffffff, compressedLength: 0 }), Buffer.alloc(0), Buffer.alloc(0)),
      error: /^corrupt cache state: uncompressed size 4294967295 exceeds the \d+-byte limit$/,
    },
  ];
}

describe('cache offload and prewarm in the compute workflow', () => {
  const computeId = uniqueId('lfc');
  const pgdata = testPgdata();
  let computes: ComputeClient;
  let close: () => Promise<void>;
  let raw: Client;
  let rawConnection: Connection;
  const codec = () => new EncryptionCodec(testConfig().payloadKeys!.current);
  let spec: Spec;
  let port: number;
  let worker: WorkerProcess;
  /** The workflow run the last (re)start began. */
  let runId = '';
  /** The state stored for this compute before the crafted ones replace it. */
  let stored: { blob: Buffer; state: Extract<CacheState, { kind: 'block-ranges' }> } | undefined;

  const restart = async (autoprewarm: boolean, offloadInterval?: number) => {
    await computes.terminate(computeId, 'fast');
    spec.spec.autoprewarm = autoprewarm;
    if (offloadInterval === undefined) delete spec.spec.offload_lfc_interval_seconds;
    else spec.spec.offload_lfc_interval_seconds = offloadInterval;
    await computes.start(computeId, spec, { ...TEST_WORKFLOW_OPTIONS, maxWatchRoundsPerRun: 5 });
    runId = (await raw.workflow.getHandle(computeWorkflowId(computeId)).describe()).runId;
    await computes.waitForRunning(computeId);
  };

  const stateKey = () => cacheStateKey(testConfig().cacheStatePrefix, spec.spec.tenant_id as string, spec.spec.timeline_id as string, spec.spec.endpoint_id as string);

  beforeAll(async () => {
    ({ computes, close } = await testComputeClient());
    rawConnection = await Connection.connect({ address: testConfig().temporal.address });
    raw = new Client({ connection: rawConnection, namespace: testConfig().temporal.namespace });
    const example = await exampleSpecFor(await createTestTimeline());
    spec = example.spec as Spec;
    port = example.port;
    // A small shared_buffers (16 MB), so the big table does not fit and the hot one does.
    for (const s of spec.spec.cluster.settings) if (s.name === 'shared_buffers') s.value = '2048';
    spec.spec.autoprewarm = true;
    worker = await startComputeWorker(computeId, pgdata);
  });
  afterAll(async () => {
    await computes.terminate(computeId, 'immediate').catch(() => undefined);
    await close();
    await rawConnection.close();
    await killAllProcesses();
  });

  it('first start with nothing stored: the prewarm is skipped, not failed', async () => {
    await computes.start(computeId, spec, TEST_WORKFLOW_OPTIONS);
    await computes.waitForRunning(computeId);
    const lfc = await computes.waitForLfc(computeId, (s) => s.prewarm.status !== 'prewarming');
    expect(lfc.prewarm).toEqual({ status: 'skipped' });
    expect(lfc.offload).toEqual({ status: 'not_offloaded' });
  });

  it('offloads the hot set, and a restarted compute serves it from shared_buffers after autoprewarm', async () => {
    await appSql(port, "create table big as select g as id, repeat('b', 500) as payload from generate_series(1, 80000) g");
    await appSql(port, "create table hot as select g as id, repeat('h', 500) as payload from generate_series(1, 6000) g");
    // The write workload's tables, and a warm table in two more databases: the state spans
    // several databases, which the stock backend loads with one statement each.
    await appSql(port, 'create table accounts (id int primary key, balance bigint not null, pad text not null)');
    await appSql(port, `insert into accounts select g, ${INITIAL_BALANCE}, repeat('a', 300) from generate_series(1, ${ACCOUNTS}) g`);
    await appSql(port, 'create table ledger (id bigserial primary key, debit int not null, credit int not null, amount int not null)');
    for (const db of ['postgres', 'analytics']) await adminSql(pgdata, db, "create table warm as select g as id, repeat('w', 500) as payload from generate_series(1, 1500) g");
    // Read big, then the others several times: they end up the hottest part of shared_buffers.
    await appSql(port, 'select count(*) from big');
    for (let i = 0; i < 5; i++) {
      await appSql(port, 'select sum(length(payload)) from hot');
      await appSql(port, 'select sum(balance) from accounts');
      for (const db of ['postgres', 'analytics']) await adminSql(pgdata, db, 'select sum(length(payload)) from warm');
    }
    expect(await hotHitRatio(port)).toBeGreaterThan(0.95);

    await computes.offload(computeId);
    const offloaded = await computes.waitForLfc(computeId, (s) => s.offload.status !== 'offloading');
    expect(offloaded.offload).toMatchObject({ status: 'completed' });
    expect(offloaded.metrics.compute_ctl_lfc_offloads_total).toBe(1);

    // A cold compute reads the hot table from disk.
    await restart(false);
    expect(await hotHitRatio(port)).toBeLessThan(0.2);

    await restart(true);
    const warmed = await computes.waitForLfc(computeId, (s) => s.prewarm.status !== 'prewarming');
    expect(warmed.prewarm).toMatchObject({ status: 'completed' });
    if (warmed.prewarm.status !== 'completed') throw new Error('unreachable');
    expect(warmed.prewarm.total).toBeGreaterThan(0);
    expect(warmed.prewarm.prewarmed).toBeGreaterThan(0);
    expect(warmed.prewarm.total).toBe(warmed.prewarm.prewarmed + warmed.prewarm.skipped);
    expect(await hotHitRatio(port)).toBeGreaterThan(0.95);
  });

  it('offloads periodically, never while a prewarm runs, and the prewarm resumes on a new worker', async () => {
    // A worker that stops inside the next prewarm: it stays 'prewarming' as long as we let it.
    const paused = await startComputeWorker(computeId, pgdata, ['prewarmCache']);
    await worker.kill('SIGKILL');
    worker = paused;
    await restart(true, 1);
    await waitForOutput(worker, /failpoint prewarmCache reached/);
    const during = await computes.lfcStatus(computeId);
    expect(during.prewarm).toEqual({ status: 'prewarming' });
    // A second prewarm is refused while one runs.
    await expect(computes.prewarm(computeId)).rejects.toThrow(/a prewarm is already running/);
    await sleep(4000);
    expect((await computes.lfcStatus(computeId)).metrics.compute_ctl_lfc_offloads_total).toBe(during.metrics.compute_ctl_lfc_offloads_total);

    // Kill the worker mid-prewarm: the prewarm continues on the next worker and completes.
    await worker.kill('SIGKILL');
    worker = await startComputeWorker(computeId, pgdata);
    const done = await computes.waitForLfc(computeId, (s) => s.prewarm.status !== 'prewarming', 120_000);
    expect(done.prewarm).toMatchObject({ status: 'completed' });
    // With the prewarm complete, the periodic offloads run.
    const later = await computes.waitForLfc(computeId, (s) => s.metrics.compute_ctl_lfc_offloads_total >= done.metrics.compute_ctl_lfc_offloads_total + 2, 60_000);
    expect(later.offload).toMatchObject({ status: 'completed' });
  });

  it('cancels a running prewarm', async () => {
    // This worker also stops the next prewarm after its first statement (the next test).
    const paused = await startComputeWorker(computeId, pgdata, ['prewarmCache', 'prewarmBatch']);
    await worker.kill('SIGKILL');
    worker = paused;
    await restart(false);
    await computes.prewarm(computeId);
    await waitForOutput(worker, /failpoint prewarmCache reached/);
    expect(await computes.cancelPrewarm(computeId)).toEqual({ status: 'cancelled' });
  });

  it('a later prewarm, its worker killed between statements, resumes from the heartbeat: no block requested twice, concurrent writes intact', async () => {
    const tenantId = spec.spec.tenant_id as string;
    const timelineId = spec.spec.timeline_id as string;
    const store = createCacheStateStore({ s3: createS3Client(testConfig().s3), bucket: testConfig().s3.bucket, prefix: testConfig().cacheStatePrefix });
    const blob = await store.get(tenantId, timelineId, spec.spec.endpoint_id as string);
    if (!blob) throw new Error('no cache state stored');
    const state = decodeCacheState(blob);
    if (state.kind !== 'block-ranges') throw new Error('expected a stock PostgreSQL state');
    stored = { blob, state };

    // From here on the server log shows every statement Postgres receives, with its parameters.
    // ALTER SYSTEM lives in this PGDATA only: the next start's spec statements are not logged.
    await adminSql(pgdata, 'postgres', "alter system set log_statement = 'all'");
    await adminSql(pgdata, 'postgres', 'select pg_reload_conf()');
    await waitFor('log_statement = all in new sessions', async () => ((await adminSql<{ v: string }>(pgdata, 'postgres', "select current_setting('log_statement') as v"))[0]!.v === 'all' ? true : undefined));
    const logFile = `${pgdata}.log`;

    const transfers = await startTransfers(pgdata);
    try {
      await waitFor('transfers under way', async () => (transfers.committed() >= 20 ? true : undefined));
      const logFrom = statSync(logFile).size;
      const beforePrewarm = transfers.committed();
      await computes.prewarm(computeId);
      await waitForOutput(worker, /failpoint prewarmBatch reached/);
      // Heartbeats are throttled (up to 8 s here): kill only once the server holds the progress
      // of the first statement. The replacement worker starts meanwhile.
      const [replacement, paused] = await Promise.all([
        startComputeWorker(computeId, pgdata),
        waitFor(
          "the first statement's progress in the server's heartbeat details",
          async () => {
            const p = await pendingPrewarm(raw, codec(), computeId);
            return p?.details && p.details.progress.prewarmed > 0 ? { ...p, details: p.details } : undefined;
          },
          30_000,
        ),
      ]);
      expect(paused.attempt).toBe(1);
      expect(paused.details.stateCrc).toBe(crc32([blob]));
      await worker.kill('SIGKILL');
      worker = replacement;
      const killedAt = statSync(logFile).size;
      const atKill = transfers.committed();

      const done = await computes.waitForLfc(computeId, (s) => s.prewarm.status !== 'prewarming', 120_000);
      const atDone = transfers.committed();
      const outcome = await transfers.stop();
      expect(done.prewarm).toMatchObject({ status: 'completed' });
      if (done.prewarm.status !== 'completed') throw new Error('unreachable');
      expect(done.prewarm.total).toBe(cacheStatePages(state));
      expect(done.prewarm.total).toBe(done.prewarm.prewarmed + done.prewarm.skipped);

      // The writes ran all along (before the kill and while the retry was pending and running),
      // and every committed transfer is there, nothing else.
      expect(atKill).toBeGreaterThan(beforePrewarm);
      expect(atDone).toBeGreaterThan(atKill);
      await expectTransfersIntact(pgdata, outcome);

      // What Postgres received, split at the kill: attempt 1 before it, attempt 2 after.
      const catalog = await catalogOf(pgdata, ['postgres', 'app', 'analytics']);
      const first = prewarmRequests(loggedStatements(readSlice(logFile, logFrom, killedAt)), catalog);
      const second = prewarmRequests(loggedStatements(readSlice(logFile, killedAt)), catalog);
      expect(first.loads).toHaveLength(1);
      expect(second.loads.length).toBeGreaterThan(0);
      const requested = [...first.loads.flat(), ...second.loads.flat()];
      expect(overlapping(requested)).toEqual([]);
      // Attempt 1 requested only blocks before the heartbeated position, attempt 2 only blocks
      // after it, and attempt 2 did not even look up a relation of the finished part.
      const { progress } = paused.details;
      const resumeAt = orderPosition(progress.rangeIndex, progress.blockOffset);
      for (const p of first.loads.flat()) expect(placeInState(state.ranges, p).end).toBeLessThanOrEqual(resumeAt);
      for (const p of second.loads.flat()) expect(placeInState(state.ranges, p).start).toBeGreaterThanOrEqual(resumeAt);
      const keysLeft = new Set(state.ranges.slice(progress.rangeIndex).map(rangeKey));
      expect(second.resolved.length).toBeGreaterThan(0);
      expect(second.resolved.filter((k) => !keysLeft.has(k))).toEqual([]);
      // The counters agree with what Postgres loaded: attempt 1's blocks count once, as prewarmed.
      expect(progress.prewarmed).toBe(blockCount(first.loads.flat()));
      expect(done.prewarm.prewarmed).toBe(blockCount(requested));
      // pg_stat_statements counted the same pg_prewarm() statements, and sees each kind of
      // statement a prewarm runs (the next test checks that none ran).
      const ran = await prewarmStatementsRun(pgdata);
      const counted = await adminSql<{ calls: string }>(pgdata, 'postgres', 'select coalesce(sum(calls), 0)::int8 as calls from pg_stat_statements where query like $1', ['%pg_prewarm(%']);
      expect(Number(counted[0]!.calls)).toBe(first.loads.length + second.loads.length);
      for (const pattern of PREWARM_SQL) expect(ran.some((q) => new RegExp(pattern).test(q)), pattern).toBe(true);

      // The second attempt ran on the replacement worker.
      const started = (await historyFrom(raw, computeId, runId)).filter((e) => e.kind === 'started' && e.activity === 'prewarmCache');
      expect(started.at(-1)).toMatchObject({ attempt: 2 });
      expect(started.at(-1)).not.toMatchObject({ identity: paused.identity });
    } finally {
      await transfers.stop().catch(() => undefined);
    }
  });

  it('refuses crafted cache states with a clear error before any SQL, and makes no offload after the failed prewarm', async () => {
    if (!stored) throw new Error('the previous test stores no state');
    const s3 = createS3Client(testConfig().s3);
    const put = (blob: Buffer) => s3.send(new PutObjectCommand({ Bucket: testConfig().s3.bucket, Key: stateKey(), Body: blob }));
    const cases = craftedStates(stored.blob, stored.state);
    // The first is found by the autoprewarm, the others by prewarms asked for.
    await put(cases[0]!.blob);
    await restart(true, 1);
    for (const [i, c] of cases.entries()) {
      if (i > 0) {
        await put(c.blob);
        await computes.prewarm(computeId);
      }
      const lfc = await computes.waitForLfc(computeId, (s) => s.prewarm.status !== 'prewarming');
      expect(lfc.prewarm, c.name).toEqual({ status: 'failed', error: expect.stringMatching(c.error) });
      expect(lfc.metrics.compute_ctl_lfc_prewarm_errors_total, c.name).toBe(i + 1);
    }
    // None of the prewarm's SQL ran since this Postgres started: no session set up, no
    // pg_buffercache, no relation lookup, no pg_prewarm().
    expect(await prewarmStatementsRun(pgdata)).toEqual([]);

    // The periodic offload keeps ticking and skips every tick after the failed prewarm.
    const history = await waitFor(
      'two periodic offload ticks after the last failed prewarm',
      async () => {
        const h = await historyFrom(raw, computeId, runId);
        let lastFailure = -1;
        h.forEach((e, i) => {
          if (e.kind === 'failed' && e.activity === 'prewarmCache') lastFailure = i;
        });
        return lastFailure >= 0 && h.slice(lastFailure).filter((e) => e.kind === 'timer').length >= 2 ? h : undefined;
      },
      30_000,
    );
    expect(history.filter((e) => e.kind === 'scheduled' && e.activity === 'offloadCacheState')).toEqual([]);
    // Each crafted state failed its first attempt for good: nothing to retry.
    const failures = history.filter((e) => e.kind === 'failed' && e.activity === 'prewarmCache');
    expect(failures).toHaveLength(cases.length);
    for (const f of failures) expect(f).toMatchObject({ retryState: temporal.api.enums.v1.RetryState.RETRY_STATE_NON_RETRYABLE_FAILURE });
    expect(history.filter((e) => e.kind === 'started' && e.activity === 'prewarmCache' && e.attempt !== 1)).toEqual([]);
    const after = await computes.lfcStatus(computeId);
    expect(after.offload).toEqual({ status: 'not_offloaded' });
    expect(after.metrics.compute_ctl_lfc_offloads_total).toBe(0);
    await s3.send(new DeleteObjectCommand({ Bucket: testConfig().s3.bucket, Key: stateKey() }));
  });

  it('continues as new to keep history bounded, carrying the cache state over', async () => {
    const before = await raw.workflow.getHandle(computeWorkflowId(computeId)).describe();
    // maxWatchRoundsPerRun 5 with 2 s rounds: a new run within ~10 s.
    const deadline = Date.now() + 60_000;
    let current = before.runId;
    while (current === before.runId && Date.now() < deadline) {
      await sleep(1000);
      current = (await raw.workflow.getHandle(computeWorkflowId(computeId)).describe()).runId;
    }
    expect(current).not.toBe(before.runId);
    const status = await computes.status(computeId);
    expect(status.status).toBe('running');
    expect((await computes.lfcStatus(computeId)).prewarm).toMatchObject({ status: 'failed' });
  });
});

// Whatever a failed compute left running dies with this file's tests.
afterAll(async () => {
  await killAllProcesses();
  await cleanupComputes();
});
