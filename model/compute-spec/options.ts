/**
 * Option catalogs: which CREATE ROLE / CREATE DATABASE options a spec may carry, and how their
 * values are rendered. compute_ctl pastes option names into SQL; we accept only known options so
 * a spec can never smuggle SQL in through an option name or an unquoted value.
 */

/** flag: no value; integer/boolean/keyword: validated bare token; literal: quoted string; identifier: quoted identifier. */
export type OptionKind = 'flag' | 'integer' | 'boolean' | 'literal' | 'identifier' | { keyword: readonly string[] };

export const ROLE_OPTIONS: Readonly<Record<string, OptionKind>> = {
  LOGIN: 'flag',
  NOLOGIN: 'flag',
  SUPERUSER: 'flag',
  NOSUPERUSER: 'flag',
  CREATEDB: 'flag',
  NOCREATEDB: 'flag',
  CREATEROLE: 'flag',
  NOCREATEROLE: 'flag',
  INHERIT: 'flag',
  NOINHERIT: 'flag',
  REPLICATION: 'flag',
  NOREPLICATION: 'flag',
  BYPASSRLS: 'flag',
  NOBYPASSRLS: 'flag',
  'CONNECTION LIMIT': 'integer',
  'VALID UNTIL': 'literal',
};

export const DATABASE_OPTIONS: Readonly<Record<string, OptionKind>> = {
  TEMPLATE: 'identifier',
  TABLESPACE: 'identifier',
  ENCODING: 'literal',
  LOCALE: 'literal',
  LC_COLLATE: 'literal',
  LC_CTYPE: 'literal',
  ICU_LOCALE: 'literal',
  ICU_RULES: 'literal',
  COLLATION_VERSION: 'literal',
  LOCALE_PROVIDER: { keyword: ['libc', 'icu'] },
  STRATEGY: { keyword: ['wal_log', 'file_copy'] },
  ALLOW_CONNECTIONS: 'boolean',
  IS_TEMPLATE: 'boolean',
  'CONNECTION LIMIT': 'integer',
  OID: 'integer',
};

/** The catalog entry for an option name (case-insensitive, inner whitespace collapsed). */
export function lookupOption(catalog: Readonly<Record<string, OptionKind>>, name: string): { name: string; kind: OptionKind } | undefined {
  const canonical = name.trim().replace(/\s+/g, ' ').toUpperCase();
  const kind = catalog[canonical];
  return kind === undefined ? undefined : { name: canonical, kind };
}

const INTEGER_TOKEN = /^-?\d{1,10}$/;
const BOOLEAN_TOKEN = /^(true|false|on|off|yes|no|1|0)$/i;

export function optionValueProblem(kind: OptionKind, value: string | undefined): string | undefined {
  if (kind === 'flag') return value === undefined ? undefined : 'takes no value';
  if (value === undefined) return 'needs a value';
  if (value.includes('\0')) return 'contains a NUL character';
  if (kind === 'integer') return INTEGER_TOKEN.test(value) ? undefined : 'must be an integer';
  if (kind === 'boolean') return BOOLEAN_TOKEN.test(value) ? undefined : 'must be true or false';
  if (kind === 'literal' || kind === 'identifier') return undefined;
  return kind.keyword.includes(value.toLowerCase()) ? undefined : `must be one of ${kind.keyword.join(', ')}`;
}
