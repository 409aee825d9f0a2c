import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { RestoreJournal, readRestoreJournal } from '../drivers/importer/restore-journal';
import { rowBatches, sliceBatch } from '../drivers/importer/copy-row-batches';
import { uncoveredParts } from '../drivers/importer/restore-table-batches';
import { dataFileSizes, isIndependentPostData, isTableData, listFileText, parseTocList } from '../drivers/importer/restore-toc';
import { formatImportStatus, readConnstring } from '../client/commands/import';
import { progressFromHeartbeat } from '../client/import-client';
import { s3PrefixProblem } from '../model/import-status';

const root = mkdtempSync(path.join(os.tmpdir(), 'dc-dr-units-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** `pg_restore -l --section=...` output of PostgreSQL 15 for a small database (names with spaces included). */
const POST_DATA_LIST = `;
; Archive created at 2026-12-07 04:37:07 UTC
;     dbname: postgres
;
; Selected TOC Entries:
;
3206; 2606 16390 CONSTRAINT public a a_pkey postgres
3207; 1259 16399 INDEX public bi postgres
3208; 2606 16394 FK CONSTRAINT public b x b x_id_fkey postgres
3355; 0 16401 MATERIALIZED VIEW DATA public mv postgres
`;

describe('the dump TOC as pg_restore lists it', () => {
  it('parses kinds of several words and keeps each line as -L takes it back', () => {
    const post = parseTocList(POST_DATA_LIST, 'post-data');
    expect(post.map((e) => [e.id, e.desc, e.rest])).toEqual([
      [3206, 'CONSTRAINT', 'public a a_pkey postgres'],
      [3207, 'INDEX', 'public bi postgres'],
      [3208, 'FK CONSTRAINT', 'public b x b x_id_fkey postgres'],
      [3355, 'MATERIALIZED VIEW DATA', 'public mv postgres'],
    ]);
    // Indexes and table constraints run in parallel; foreign keys and refreshes wait their turn.
    expect(post.filter(isIndependentPostData).map((e) => e.id)).toEqual([3206, 3207]);
    expect(listFileText(post.slice(2, 3))).toBe('3208; 2606 16394 FK CONSTRAINT public b x b x_id_fkey postgres\n');
    const data = parseTocList('3352; 0 16384 TABLE DATA public b x postgres\n3363; 0 0 SEQUENCE SET public sq postgres\n', 'data');
    expect(data.map((e) => [e.desc, isTableData(e)])).toEqual([
      ['TABLE DATA', true],
      ['SEQUENCE SET', false],
    ]);
    expect(() => parseTocList('garbage\n', 'data')).toThrow(/Unexpected line/);
  });

  it("sizes each entry's data file, whatever its compression", () => {
    const dir = mkdtempSync(path.join(root, 'dump-'));
    writeFileSync(path.join(dir, '3352.dat.gz'), 'x'.repeat(10));
    writeFileSync(path.join(dir, '3353.dat'), 'x'.repeat(7));
    writeFileSync(path.join(dir, 'toc.dat'), 'x');
    expect([...dataFileSizes(dir)].sort()).toEqual([
      [3352, 10],
      [3353, 7],
    ]);
  });
});

describe('the restore journal', () => {
  it('remembers started and done entries of the same dump, survives a torn last line, and forgets another dump', () => {
    const file = path.join(root, 'journal.jsonl');
    const j = RestoreJournal.open(file, 'sha-a');
    j.recordStart([1, 2, 3], 1);
    j.recordDone([1, 2, 3], 1);
    j.recordStart([10], 1);
    j.close();
    writeFileSync(file, `${readFileSync(file, 'utf8')}{"t":"done","ids":[1`); // a crash mid-write
    const again = RestoreJournal.open(file, 'sha-a');
    expect([...again.done].sort()).toEqual([1, 2, 3]);
    expect([...again.started].sort((a, b) => a - b)).toEqual([1, 2, 3, 10]);
    // Heartbeat details of the same dump add to it; of another dump they are ignored.
    again.merge({ tocSha256: 'sha-a', done: [10], started: [10, 11] });
    again.merge({ tocSha256: 'sha-b', done: [99] });
    expect(again.done.has(10) && again.started.has(11) && !again.done.has(99)).toBe(true);
    again.close();
    const other = RestoreJournal.open(file, 'sha-b');
    expect(other.done.size + other.started.size).toBe(0);
    other.close();
    expect(readRestoreJournal(file)).toEqual([{ t: 'dump', tocSha256: 'sha-b' }]);
  });
});

describe('dump-restore options and status', () => {
  it("checks --s3-prefix as fast_import's prefix: relative, no .., no empty segments", () => {
    expect(s3PrefixProblem('imports/a-1')).toBeUndefined();
    expect(s3PrefixProblem('/imports/a')).toMatch(/no leading \//);
    expect(s3PrefixProblem('a/../b')).toMatch(/must not contain \.\./);
    expect(s3PrefixProblem('..')).toMatch(/must not contain \.\./);
    expect(s3PrefixProblem('a//b')).toMatch(/empty or \. segments/);
    expect(s3PrefixProblem('a/')).toMatch(/must not end with \//);
    expect(s3PrefixProblem('')).toMatch(/empty/);
    expect(s3PrefixProblem('a b')).toMatch(/may hold only/);
  });

  it('reads the destination like the source, naming the flag', () => {
    const file = path.join(root, 'dest');
    writeFileSync(file, 'postgresql://u:pw@h/db\n');
    expect(readConnstring('destination', undefined, file)).toBe('postgresql://u:pw@h/db');
    expect(() => readConnstring('destination', undefined, undefined)).toThrow(/the destination is required: --destination-file FILE/);
    expect(() => readConnstring('destination', 'x', file)).toThrow(/either --destination or --destination-file/);
  });

  it("shows the restore's heartbeat as tables and bytes", () => {
    const progress = progressFromHeartbeat({ phase: 'restore-destination', section: 'data', tablesDone: 2, tablesTotal: 5, bytesDone: 10, bytesTotal: 40, done: [1], started: [1] });
    expect(progress).toEqual({ bytesDone: 10, bytesTotal: 40, filesDone: null, filesTotal: null, tablesDone: 2, tablesTotal: 5, section: 'data' });
    const text = formatImportStatus({
      import_id: 'x',
      tenant_id: '',
      timeline_id: '',
      database: 'db',
      phase: 'restore',
      host: 'h',
      host_changes: [],
      local_run: 1,
      started_at: '',
      finished_at: null,
      error: null,
      steps: [],
      progress,
      dump: null,
      upload: null,
      start_lsn: null,
      mode: 'dump-restore',
      destination: 'postgresql://u@h/db',
      workflow_status: 'RUNNING',
      running_step: null,
    });
    expect(text).toContain('into:      postgresql://u@h/db');
    expect(text).toMatch(/progress: +0\.0 MiB of 0\.0 MiB, 2\/5 tables \(data\)/);
  });
});

describe('batches of a large table', () => {
  async function* chunks(text: string, size: number): AsyncGenerator<Buffer> {
    for (let i = 0; i < text.length; i += size) yield Buffer.from(text.slice(i, i + size));
  }
  const collect = async (text: string, chunk: number, batch: number) => {
    const out: { start: number; rows: string }[] = [];
    for await (const b of rowBatches(chunks(text, chunk), batch)) {
      expect(b.chunks.reduce((n, c) => n + c.length, 0)).toBe(b.length);
      out.push({ start: b.start, rows: Buffer.concat(b.chunks).toString() });
      // Any part of a batch, as the chunks' views, is the same bytes.
      const mid = b.start + Math.floor(b.length / 2);
      expect(Buffer.concat(sliceBatch(b, mid, b.start + b.length)).toString()).toBe(out.at(-1)!.rows.slice(mid - b.start));
    }
    return out;
  };

  it('cuts COPY data at row ends into batches of at least the size asked, up to the \\. line, wherever the chunks end', async () => {
    const rows = Array.from({ length: 50 }, (_, i) => `${i}\tvalue ${'x'.repeat(i % 7)}\\n escaped\n`).join('');
    const text = `${rows}\\.\n\n\n-- PostgreSQL database dump complete\n`;
    for (const chunk of [1, 3, 17, 64, 10_000]) {
      for (const batch of [1, 40, 100, 5000]) {
        const got = await collect(text, chunk, batch);
        expect(got.map((b) => b.rows).join(''), `chunk ${chunk} batch ${batch}`).toBe(rows);
        let at = 0;
        for (const b of got) {
          expect(b.start).toBe(at);
          expect(b.rows.endsWith('\n')).toBe(true);
          at += b.rows.length;
        }
        // Every batch but the last holds at least `batch` bytes (it ends at the first row end after them, or at the \. line).
        for (const b of got.slice(0, -1)) expect(b.rows.length).toBeGreaterThanOrEqual(Math.min(batch, rows.length) - 64);
      }
    }
    // An empty table: only the end marker.
    expect(await collect('\\.\n\n\n', 2, 10)).toEqual([]);
    expect(await collect('\\.\n\n\n', 1, 1)).toEqual([]);
    // The marker split across chunks in every way.
    for (let chunk = 1; chunk <= 6; chunk++) expect(await collect('ab\n\\.\n\nx\n', chunk, 1), `chunk ${chunk}`).toEqual([{ start: 0, rows: 'ab\n' }]);
    // No end marker (the data ends with the stream), last row without its newline.
    expect(await collect('a\nb', 1, 1000)).toEqual([{ start: 0, rows: 'a\nb\n' }]);
  });

  it('sends only the byte ranges no committed batch covers', () => {
    expect(uncoveredParts(0, 100, [])).toEqual([[0, 100]]);
    expect(uncoveredParts(0, 100, [[0, 100]])).toEqual([]);
    expect(uncoveredParts(100, 200, [[0, 100], [200, 300]])).toEqual([[100, 200]]);
    // Batches of another size committed by an earlier attempt: only the gaps between them.
    expect(uncoveredParts(0, 100, [[10, 20], [30, 50], [90, 150]])).toEqual([[0, 10], [20, 30], [50, 90]]);
    expect(uncoveredParts(40, 60, [[0, 45], [55, 70]])).toEqual([[45, 55]]);
  });
});
