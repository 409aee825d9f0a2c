/**
 * Reading postgresql.conf the way PostgreSQL does (drivers/postgres/config.ts writes it): `name = value` or `name value`,
 * single-quoted strings with '' or \' escapes, `#` comments, later settings win, `include`,
 * `include_if_exists` and `include_dir` followed relative to the including file, then
 * postgresql.auto.conf last.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';

function parseValue(raw: string): string {
  const t = raw.trim();
  if (!t.startsWith("'")) return t.split(/\s|#/)[0] ?? '';
  let out = '';
  for (let i = 1; i < t.length; i++) {
    const ch = t[i]!;
    if (ch === '\\' && i + 1 < t.length) {
      out += t[++i];
    } else if (ch === "'") {
      if (t[i + 1] === "'") {
        out += "'";
        i++;
      } else {
        return out;
      }
    } else {
      out += ch;
    }
  }
  throw new Error(`unterminated quoted string in ${JSON.stringify(raw)}`);
}

function readInto(file: string, into: Map<string, string>, depth: number, mustExist: boolean): void {
  if (depth > 10) throw new Error(`postgresql.conf includes nest too deeply at ${file}`);
  if (!existsSync(file)) {
    if (mustExist) throw new Error(`configuration file ${file} does not exist`);
    return;
  }
  const dir = path.dirname(file);
  for (const [i, line] of readFileSync(file, 'utf8').split('\n').entries()) {
    const stripped = line.trim();
    if (stripped === '' || stripped.startsWith('#')) continue;
    const m = /^([A-Za-z_][A-Za-z0-9_.$-]*)\s*(?:=\s*)?(.*)$/.exec(stripped);
    if (!m) throw new Error(`${file}:${i + 1}: cannot parse ${JSON.stringify(line)}`);
    const name = m[1]!.toLowerCase();
    let value: string;
    try {
      value = parseValue(m[2]!);
    } catch (err) {
      throw new Error(`${file}:${i + 1}: ${(err as Error).message}`);
    }
    if (name === 'include' || name === 'include_if_exists') {
      readInto(path.resolve(dir, value), into, depth + 1, name === 'include');
    } else if (name === 'include_dir') {
      const d = path.resolve(dir, value);
      for (const f of readdirSync(d).filter((n) => n.endsWith('.conf') && !n.startsWith('.')).sort()) readInto(path.join(d, f), into, depth + 1, true);
    } else {
      into.set(name, value);
    }
  }
}

/** The effective settings of PGDATA/postgresql.conf (with includes) and postgresql.auto.conf. */
export function readPostgresConf(pgdata: string): Map<string, string> {
  const settings = new Map<string, string>();
  readInto(path.join(pgdata, 'postgresql.conf'), settings, 0, true);
  readInto(path.join(pgdata, 'postgresql.auto.conf'), settings, 0, false);
  return settings;
}

/** neon.safekeepers as compute_ctl writes it: `host:port,host:port`, optionally prefixed `g#<generation>:`. */
export function parseSafekeeperList(value: string): string[] {
  const list = value.replace(/^g#\d+:/, '');
  const items = list
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  return items;
}
