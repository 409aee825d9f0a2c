/**
 * The chaos table's cells, kept as data (bench/results/chaos.json) so a run of some rows merges
 * into the table instead of replacing it, and its Markdown rendering (bench/results/chaos.md).
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { ALL_FAULT_NAMES, type Workflow } from './faults';

export interface Cell {
  workflow: Workflow;
  /** The step, as enumerated from the code (a failpoint or an activity type). */
  step: string;
  fault: string;
  /** null: not run (the note says why). */
  completed: boolean | null;
  /**
   * Set when the workflow cannot complete under the fault by design (the reason), and it failed
   * cleanly: the cell then meets its targets if no acknowledged commit was lost on the next compute.
   */
  failedByDesign?: string;
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
  const outcome = c.completed === true || (c.completed === false && !!c.failedByDesign && c.commits !== undefined);
  return outcome && c.redone.length === 0 && (c.commits?.lost ?? 0) === 0;
}

function kb(n: number): string {
  return n < 1024 ? `${n} B` : `${(n / 1024).toFixed(n < 10240 ? 1 : 0)} KiB`;
}

function short(c: Cell): string {
  if (c.completed === null) return 'n/a';
  const parts = [meetsTargets(c) ? (c.completed ? 'ok' : 'ok: fails by design, recovered') : 'MISS'];
  if (c.redone.length) parts.push(`redo ${c.redone.join('+')}`);
  if (c.bytesUp?.again) parts.push(`${kb(c.bytesUp.again)} re-sent`);
  if (c.bytesDown?.again) parts.push(`${kb(c.bytesDown.again)} re-read`);
  if (c.commits?.lost) parts.push(`${c.commits.lost} commits lost`);
  return parts.join(', ');
}

const WORKFLOWS: Workflow[] = ['compute', 'cache', 'import'];

/** One run of `npm run chaos` that contributed rows to the table. */
export interface TableRun {
  startedAt: string;
  wallMs: number;
  cores: number;
  /** The rows (workflow × fault) it ran, as "workflow × fault". */
  rows: string[];
  notes: string[];
}

/** Everything the table shows, as kept between runs. */
export interface TableData {
  version: 1;
  runs: TableRun[];
  cells: Cell[];
  /** How each workflow's steps were enumerated from the code (from the run that last ran it). */
  enumeration: Partial<Record<Workflow, string>>;
}

/** What one run measured, merged into the table by `mergeRun`. */
export interface RunPart {
  cells: Cell[];
  enumeration: Partial<Record<Workflow, string>>;
  notes: string[];
}

export const emptyTable = (): TableData => ({ version: 1, runs: [], cells: [], enumeration: {} });

export function loadTable(jsonFile: string): TableData {
  if (!existsSync(jsonFile)) return emptyTable();
  const data = JSON.parse(readFileSync(jsonFile, 'utf8')) as TableData;
  if (data.version !== 1) throw new Error(`${jsonFile}: unknown chaos table version ${String(data.version)}`);
  return data;
}

const rowKey = (c: Pick<Cell, 'workflow' | 'fault'>) => `${c.workflow} × ${c.fault}`;

/**
 * The table with a run's rows in place of the same rows before it (a row is a workflow × fault;
 * a row the run did not reach keeps its earlier cells). Cells are ordered by workflow, then fault,
 * in table order; within a row, as the run produced them.
 */
export function mergeRun(table: TableData, part: RunPart, run: Omit<TableRun, 'rows' | 'notes'>): TableData {
  const rows = [...new Set(part.cells.map(rowKey))];
  const kept = table.cells.filter((c) => !rows.includes(rowKey(c)));
  const rank = (c: Cell) => WORKFLOWS.indexOf(c.workflow) * 100 + Math.max(0, ALL_FAULT_NAMES.indexOf(c.fault));
  const cells = [...kept, ...part.cells].map((c, i) => ({ c, i })).sort((a, b) => rank(a.c) - rank(b.c) || a.i - b.i).map(({ c }) => c);
  // A run whose rows were all run again since is no longer in the table.
  const runs = [...table.runs.map((r) => ({ ...r, rows: r.rows.filter((row) => !rows.includes(row)) })).filter((r) => r.rows.length), { ...run, rows, notes: part.notes }].sort((a, b) =>
    a.startedAt.localeCompare(b.startedAt),
  );
  return { version: 1, runs: rows.length ? runs : table.runs, cells, enumeration: { ...table.enumeration, ...part.enumeration } };
}

/** Faults as the table's columns show them. */
export interface FaultLabel {
  name: string;
  label: string;
}

/** How the cells are made: the method, rendered with every table. */
const METHOD = `### How the cells are made (read before the figures)

- **Steps from the code.** Compute: \`computeStartupPoints()\` drives the real \`createStartCompute\`
  (activities/compute/startup.ts) once in a Temporal mock activity context with recording stand-in
  steps, and records each pause point it passes; cache: the keys of \`createComputeCacheActivities\`;
  import: the activity types a clean import scheduled, in order, read from its history.
- **Injection.** Compute and cache: the worker is armed with the failpoints of every step; at each
  pause the fault is applied, the step is let go into it (\`DURABLE_COMPUTE_FAILPOINT_RELEASE_DIR/<point>\`),
  held for the fault's window and healed. The worker kill replaces the paused worker with a new one
  armed with the remaining points. The import's activities have no failpoints: a watcher polls the
  workflow's pending activities every 50 ms and injects at the first sight of each step; a step that
  began and ended between two polls is shown as "not caught". Cells of one row share one workflow
  run; a cell's figures are the deltas from its fault to the next step's fault (the last one: to the
  end of the run).
- **S3 path.** workers → toxiproxy (stall: \`timeout\` toxic with 0 on the downstream, so the data is
  dropped while it holds; reset: \`reset_peer\`) → a labelled HTTP fault layer (test/chaos/http-faults.ts:
  500 InternalError / 503 SlowDown, since toxiproxy has no HTTP-status toxic; it also records the
  bytes of each forwarded request) → s3rver. Our own control-plane worker, the compute workers and
  the importer go through it; the dev pageserver reads the import's files from s3rver directly. The
  workers run with \`S3_REQUEST_TIMEOUT_MS=5000\` (the default is 30 s) so that the 15 s stall is past
  the S3 client's request timeout: a stalled request fails and is retried within the step.
- **Bytes again.** Per S3 object (multipart parts by part number): every byte moved minus the last
  successful transfer. A retried PUT whose answer was lost counts as re-sent even though S3 got it.
- **Commits.** On a running compute a writer inserts one row per autocommit transaction; after the
  fault the compute is terminated (fast) and a fresh compute on the same timeline counts the rows:
  an acknowledged id missing there is a lost commit ("unknown": sent, no answer; either outcome is
  correct). In the cache rows the writer runs across both cells and is counted on the same Postgres
  (or a fresh compute if Postgres died).
- **Fails by design.** Some cells cannot complete under their fault: a compute whose Postgres was
  killed fails (compute_ctl does not restart Postgres; the control plane starts a new compute), so
  an offload or a startup step on it cannot finish. Such a cell is recorded as not completed, "by
  design", and meets the targets only if the compute failed cleanly (a failed status with the reason,
  no hang), nothing completed was redone, and a fresh compute on the timeline found every
  acknowledged commit. The summary counts them apart from the cells that can complete.
- **n/a** cells name their reason: a fault that cannot apply to the workflow, a startup step not
  taken on that run, or an import step too quick for the watcher.`;

export function renderTable(data: TableData, faults: FaultLabel[], findings = ''): string {
  const cells = data.cells;
  const ran = cells.filter((c) => c.completed !== null);
  const met = ran.filter(meetsTargets);
  const completed = ran.filter((c) => c.completed);
  const byDesign = ran.filter((c) => !c.completed && c.failedByDesign);
  const canComplete = ran.length - byDesign.length;
  const redone = ran.reduce((n, c) => n + c.redone.length, 0);
  const commits = ran.flatMap((c) => (c.commits ? [c.commits] : []));
  const lost = commits.reduce((n, c) => n + c.lost, 0);
  const acked = commits.reduce((n, c) => n + c.acknowledged, 0);
  const lines = [
    '## Chaos table',
    '',
    `\`npm run chaos\` (the source is test/chaos/; the cells as data: chaos.json). The cells come from ${data.runs.length === 1 ? 'one run' : `${data.runs.length} runs`}:`,
    '',
    ...data.runs.map((r) => `- ${r.startedAt}, ${r.cores} cores, wall time ${Math.round(r.wallMs / 1000)} s: ${r.rows.join(', ')}${r.notes.length ? ` (${r.notes.join(' ')})` : ''}`),
    '',
    `**${ran.length} cells run; ${completed.length} of the ${canComplete} that can complete did (${canComplete ? ((100 * completed.length) / canComplete).toFixed(0) : 0} %); ` +
      `${byDesign.length} cannot complete by design (Postgres killed) and failed cleanly; ` +
      `${met.length} meet every target; ${redone} completed steps redone; ${lost} of ${acked} acknowledged commits lost.** ` +
      `${cells.length - ran.length} cells n/a (each with its reason). Targets: 100 % completed, 0 completed steps redone, 0 acknowledged commits lost.`,
    '',
    'Faults (columns):',
    '',
    ...faults.map((f) => `- \`${f.name}\`: ${f.label}`),
    '',
    'Steps (rows), enumerated from the code:',
    '',
    ...WORKFLOWS.flatMap((w) => (data.enumeration[w] ? [`- ${data.enumeration[w]}`] : [])),
    '',
  ];
  for (const workflow of WORKFLOWS) {
    const mine = cells.filter((c) => c.workflow === workflow);
    if (!mine.length) continue;
    const named = [...new Set(mine.map((c) => c.step))];
    // A fault that applies to no step of the workflow has one "(every step)" cell: shown in each row.
    const steps = named.length > 1 ? named.filter((s) => s !== '(every step)') : named;
    const columns = faults.map((f) => f.name).filter((f) => mine.some((c) => c.fault === f));
    lines.push(`### ${workflow}`, '', `| step | ${columns.join(' | ')} |`, `|---|${columns.map(() => '---').join('|')}|`);
    for (const step of steps) {
      const row = columns.map((f) => {
        const c = mine.find((x) => x.step === step && x.fault === f) ?? (step !== '(every step)' ? mine.find((x) => x.step === '(every step)' && x.fault === f) : undefined);
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
    const done = c.completed === null ? 'n/a' : c.completed ? 'yes' : c.failedByDesign ? 'no, by design' : 'NO';
    lines.push(
      `| ${c.workflow} | ${c.step} | ${c.fault} | ${done} | ${c.redone.join(', ')} | ${bytes(c.bytesUp)} | ${bytes(c.bytesDown)} | ${commitText} | ${c.ms !== undefined ? (c.ms / 1000).toFixed(1) : ''} | ${(c.note ?? '').replaceAll('|', '\\|').replaceAll('\n', ' ')} |`,
    );
  }
  lines.push('', METHOD, '');
  if (findings) lines.push(findings.trimEnd(), '');
  return lines.join('\n');
}

const FINDINGS = '### Findings';

/**
 * Writes the table data (`<out>.json`) and its Markdown (`out`). The Markdown's hand-written
 * findings (from its "### Findings" heading to the end) are kept across runs.
 */
export function writeTable(out: string, data: TableData, faults: FaultLabel[]): void {
  const previous = existsSync(out) ? readFileSync(out, 'utf8') : '';
  const at = previous.indexOf(`\n${FINDINGS}\n`);
  writeFileSync(out.replace(/\.md$/, '') + '.json', `${JSON.stringify(data, null, 1)}\n`);
  writeFileSync(out, renderTable(data, faults, at >= 0 ? previous.slice(at + 1) : ''));
}
