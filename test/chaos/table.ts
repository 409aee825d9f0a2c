/** The chaos table's cells and its Markdown writer (bench/results/chaos.md). */
import { writeFileSync } from 'node:fs';
import os from 'node:os';
import type { Workflow } from './faults';

export interface Cell {
  workflow: Workflow;
  /** The step, as enumerated from the code (a failpoint or an activity type). */
  step: string;
  fault: string;
  /** null: not run (the note says why). */
  completed: boolean | null;
  /** Steps completed before (or in) this cell that ran to completion again. */
  redone: string[];
  /** Bytes to S3 during the cell, and how many of them were sent again. */
  bytesUp?: { total: number; again: number };
  /** Bytes from S3 (downloads) during the cell, and how many were fetched again. */
  bytesDown?: { total: number; again: number };
  /** For a running compute: commits a writer saw acknowledged, rows found afterwards, and lost. */
  commits?: { acknowledged: number; found: number; lost: number; unknown: number };
  ms?: number;
  note?: string;
}

export function meetsTargets(c: Cell): boolean {
  return c.completed === true && c.redone.length === 0 && (c.commits?.lost ?? 0) === 0;
}

function kb(n: number): string {
  return n < 1024 ? `${n} B` : `${(n / 1024).toFixed(n < 10240 ? 1 : 0)} KiB`;
}

function short(c: Cell): string {
  if (c.completed === null) return 'n/a';
  const parts = [meetsTargets(c) ? 'ok' : 'MISS'];
  if (c.redone.length) parts.push(`redo ${c.redone.join('+')}`);
  if (c.bytesUp?.again) parts.push(`${kb(c.bytesUp.again)} re-sent`);
  if (c.bytesDown?.again) parts.push(`${kb(c.bytesDown.again)} re-read`);
  if (c.commits?.lost) parts.push(`${c.commits.lost} commits lost`);
  return parts.join(', ');
}

export interface TableRun {
  startedAt: Date;
  wallMs: number;
  faults: { name: string; label: string }[];
  enumeration: string[];
  notes: string[];
}

export function renderTable(cells: Cell[], run: TableRun): string {
  const ran = cells.filter((c) => c.completed !== null);
  const met = ran.filter(meetsTargets);
  const completed = ran.filter((c) => c.completed);
  const redone = ran.reduce((n, c) => n + c.redone.length, 0);
  const commits = ran.flatMap((c) => (c.commits ? [c.commits] : []));
  const lost = commits.reduce((n, c) => n + c.lost, 0);
  const acked = commits.reduce((n, c) => n + c.acknowledged, 0);
  const lines = [
    '## Chaos table',
    '',
    `Run ${run.startedAt.toISOString()} on ${os.cpus().length} cores, wall time ${Math.round(run.wallMs / 1000)} s (\`npm run chaos\`; the source is test/chaos/).`,
    '',
    `**${ran.length} cells run; ${completed.length} completed (${ran.length ? ((100 * completed.length) / ran.length).toFixed(0) : 0} %); ` +
      `${met.length} meet every target; ${redone} completed steps redone; ${lost} of ${acked} acknowledged commits lost.** ` +
      'Targets: 100 % completed, 0 completed steps redone, 0 acknowledged commits lost.',
    '',
    'Faults (columns):',
    '',
    ...run.faults.map((f) => `- \`${f.name}\`: ${f.label}`),
    '',
    'Steps (rows), enumerated from the code:',
    '',
    ...run.enumeration.map((e) => `- ${e}`),
    '',
  ];
  for (const workflow of ['compute', 'cache', 'import'] as const) {
    const mine = cells.filter((c) => c.workflow === workflow);
    if (!mine.length) continue;
    const steps = [...new Set(mine.map((c) => c.step))];
    const faults = run.faults.map((f) => f.name).filter((f) => mine.some((c) => c.fault === f));
    lines.push(`### ${workflow}`, '', `| step | ${faults.join(' | ')} |`, `|---|${faults.map(() => '---').join('|')}|`);
    for (const step of steps) {
      const row = faults.map((f) => {
        const c = mine.find((x) => x.step === step && x.fault === f);
        return c ? short(c) : 'not run';
      });
      lines.push(`| ${step} | ${row.join(' | ')} |`);
    }
    lines.push('');
  }
  lines.push(
    '### Every cell',
    '',
    '| workflow | step | fault | completed | steps redone | S3 bytes up (again) | S3 bytes down (again) | commits acked / found / lost (unknown) | s | note |',
    '|---|---|---|---|---|---|---|---|---|---|',
  );
  for (const c of cells) {
    const bytes = (b?: { total: number; again: number }) => (b ? `${b.total} (${b.again})` : '');
    const commitText = c.commits ? `${c.commits.acknowledged} / ${c.commits.found} / ${c.commits.lost} (${c.commits.unknown})` : '';
    const done = c.completed === null ? 'not run' : c.completed ? 'yes' : 'NO';
    lines.push(
      `| ${c.workflow} | ${c.step} | ${c.fault} | ${done} | ${c.redone.join(', ')} | ${bytes(c.bytesUp)} | ${bytes(c.bytesDown)} | ${commitText} | ${c.ms !== undefined ? (c.ms / 1000).toFixed(1) : ''} | ${(c.note ?? '').replaceAll('|', '\\|').replaceAll('\n', ' ')} |`,
    );
  }
  lines.push('', ...run.notes.map((n) => `- ${n}`), '');
  return lines.join('\n');
}

export function writeTable(file: string, cells: Cell[], run: TableRun): void {
  writeFileSync(file, renderTable(cells, run));
}
