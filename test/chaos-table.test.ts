/**
 * The chaos table's data (test/chaos/table.ts): a run of some rows merges into the table, its
 * rows replacing the same rows and every other row kept; a cell that fails by design meets the
 * targets only with no acknowledged commit lost.
 */
import { describe, expect, it } from 'vitest';
import { emptyTable, meetsTargets, mergeRun, renderTable, type Cell } from './chaos/table';

const cell = (workflow: Cell['workflow'], step: string, fault: string, extra: Partial<Cell> = {}): Cell => ({ workflow, step, fault, completed: true, redone: [], ...extra });
const run = (startedAt: string) => ({ startedAt, wallMs: 1000, cores: 2 });

describe('the chaos table data', () => {
  it('merges a run of some rows: its rows replace the same rows, the others stay, in table order', () => {
    const first = mergeRun(
      emptyTable(),
      { cells: [cell('import', 'dumpSource', 's3-503'), cell('compute', 'applySpec', 'worker-kill'), cell('compute', 'applySpec', 'postgres-kill', { completed: null })], enumeration: { compute: 'c1' }, notes: [] },
      run('2026-01-01T00:00:00Z'),
    );
    const second = mergeRun(first, { cells: [cell('compute', 'applySpec', 'postgres-kill', { note: 'ran now' })], enumeration: { compute: 'c2' }, notes: [] }, run('2026-01-02T00:00:00Z'));
    expect(second.cells.map((c) => [c.workflow, c.fault, c.note])).toEqual([
      ['compute', 'worker-kill', undefined],
      ['compute', 'postgres-kill', 'ran now'],
      ['import', 's3-503', undefined],
    ]);
    expect(second.enumeration).toEqual({ compute: 'c2' });
    expect(second.runs.map((r) => r.rows)).toEqual([['import × s3-503', 'compute × worker-kill'], ['compute × postgres-kill']]);
    expect(renderTable(second, [{ name: 'worker-kill', label: 'w' }, { name: 'postgres-kill', label: 'p' }, { name: 's3-503', label: 's' }])).toMatch(/\*\*3 cells run; 3 of the 3 that can complete did/);
  });

  it('a cell that fails by design meets the targets only if the next compute lost no acknowledged commit', () => {
    const failed = cell('cache', 'offloadCacheState', 'postgres-kill', { completed: false, failedByDesign: 'Postgres died' });
    expect(meetsTargets({ ...failed, commits: { acknowledged: 5, found: 5, lost: 0, unknown: 0 } })).toBe(true);
    expect(meetsTargets({ ...failed, commits: { acknowledged: 5, found: 4, lost: 1, unknown: 0 } })).toBe(false);
    expect(meetsTargets(failed)).toBe(false);
    expect(meetsTargets({ ...failed, failedByDesign: undefined, commits: { acknowledged: 5, found: 5, lost: 0, unknown: 0 } })).toBe(false);
  });
});
