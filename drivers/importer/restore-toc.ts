import { readdirSync, statSync } from 'node:fs';
import path from 'node:path';

/**
 * The table of contents of a directory-format dump, as `pg_restore -l --section=S` lists it, and
 * the `-L` list files that restore a chosen part of it. Restoring entry by entry through such
 * lists keeps pg_restore's own semantics (its SQL, its COPY, its options) while letting the
 * importer record which entries are done.
 */

export const RESTORE_SECTIONS = ['pre-data', 'data', 'post-data'] as const;
export type RestoreSection = (typeof RESTORE_SECTIONS)[number];

export interface TocEntry {
  /** The dump ID: the first field of a list line, unique within the dump. */
  id: number;
  section: RestoreSection;
  /** The entry's kind: TABLE, TABLE DATA, SEQUENCE SET, INDEX, FK CONSTRAINT... */
  desc: string;
  /** What follows the kind: `<schema> <name> <owner>` (names may hold spaces, so it is kept whole). */
  rest: string;
  /** The list line itself, as `-L` takes it back. */
  line: string;
}

/** Kinds made of two or more words, longest first (a list line does not quote them). */
const MULTI_WORD_DESCS = [
  'MATERIALIZED VIEW DATA',
  'TEXT SEARCH CONFIGURATION',
  'TEXT SEARCH DICTIONARY',
  'TEXT SEARCH TEMPLATE',
  'TEXT SEARCH PARSER',
  'FOREIGN DATA WRAPPER',
  'LARGE OBJECT METADATA',
  'PUBLICATION TABLES IN SCHEMA',
  'PUBLICATION TABLE',
  'MATERIALIZED VIEW',
  'DEFAULT ACL',
  'EVENT TRIGGER',
  'FK CONSTRAINT',
  'CHECK CONSTRAINT',
  'FOREIGN TABLE',
  'INDEX ATTACH',
  'LARGE OBJECT',
  'OPERATOR CLASS',
  'OPERATOR FAMILY',
  'PROCEDURAL LANGUAGE',
  'ROW SECURITY',
  'SEQUENCE OWNED BY',
  'SEQUENCE SET',
  'SERVER',
  'STATISTICS DATA',
  'TABLE ATTACH',
  'TABLE DATA',
  'USER MAPPING',
  'ACCESS METHOD',
  'BLOB METADATA',
] as const;

/** Parses one section's `pg_restore -l` output; comment and blank lines are skipped. */
export function parseTocList(text: string, section: RestoreSection): TocEntry[] {
  const entries: TocEntry[] = [];
  for (const line of text.split('\n')) {
    if (line.startsWith(';') || line.trim() === '') continue;
    // "<id>; <tableoid> <oid> <desc> <schema> <tag> <owner>"
    const m = /^(\d+); \d+ \d+ (.*)$/.exec(line);
    if (!m) throw new Error(`Unexpected line in pg_restore's table of contents: ${JSON.stringify(line.slice(0, 200))}`);
    const tail = m[2]!;
    const multi = MULTI_WORD_DESCS.find((d) => tail === d || tail.startsWith(`${d} `));
    const desc = multi ?? tail.split(' ')[0]!;
    entries.push({ id: Number(m[1]), section, desc, rest: tail.slice(desc.length + 1), line });
  }
  return entries;
}

/** A table's data: the unit of resume in the data section. */
export function isTableData(e: TocEntry): boolean {
  return e.desc === 'TABLE DATA';
}

/**
 * Post-data entries that depend only on their table's data, never on one another (indexes and
 * table constraints other than foreign keys): these run in parallel. Everything else in
 * post-data (foreign keys, triggers, rules, policies, index attachments, materialized view
 * refreshes...) runs one at a time in the list's order, which pg_dump made dependency-ordered.
 */
export function isIndependentPostData(e: TocEntry): boolean {
  return e.section === 'post-data' && (e.desc === 'INDEX' || e.desc === 'CONSTRAINT');
}

/** Size of each entry's data file in the dump directory (`<id>.dat`, `<id>.dat.gz`, `.lz4`, `.zst`). */
export function dataFileSizes(dumpDir: string): Map<number, number> {
  const sizes = new Map<number, number>();
  for (const name of readdirSync(dumpDir)) {
    const m = /^(\d+)\.dat(?:\.\w+)?$/.exec(name);
    if (m) sizes.set(Number(m[1]), (sizes.get(Number(m[1])) ?? 0) + statSync(path.join(dumpDir, name)).size);
  }
  return sizes;
}

/** The text of a `-L` list file restoring exactly these entries. */
export function listFileText(entries: TocEntry[]): string {
  return `${entries.map((e) => e.line).join('\n')}\n`;
}
