import pg from 'pg';
import { DATABASE_OPTIONS, ROLE_OPTIONS, lookupOption, type GenericOption, type OptionKind, type Role } from '../../model/compute-spec';
import { nonRetryable } from '../../common/failures';
import { PostgresFailure } from './errors';

/** Quoted identifier (always quoted, so case, spaces, quotes and unicode survive). */
export const ident = (name: string): string => pg.escapeIdentifier(name);
/** Quoted string literal (E'' form when it holds backslashes). */
export const literal = (value: string): string => pg.escapeLiteral(value);

function renderOption(catalog: Readonly<Record<string, OptionKind>>, what: string, option: GenericOption): string {
  const entry = lookupOption(catalog, option.name);
  if (!entry) throw nonRetryable(PostgresFailure.InvalidSpec, `unsupported ${what} option ${JSON.stringify(option.name)}`);
  const { name, kind } = entry;
  const value = option.value;
  if (kind === 'flag') return name;
  if (value === undefined) throw nonRetryable(PostgresFailure.InvalidSpec, `${what} option ${name} needs a value`);
  if (kind === 'literal') return `${name} ${literal(value)}`;
  if (kind === 'identifier') return `${name} ${ident(value)}`;
  // integer, boolean and keyword values were validated by the spec parser; check again, as these go in bare.
  const bare = kind === 'integer' ? /^-?\d{1,10}$/ : kind === 'boolean' ? /^(true|false|on|off|yes|no|1|0)$/i : /^[a-z_]+$/i;
  if (!bare.test(value)) throw nonRetryable(PostgresFailure.InvalidSpec, `${what} option ${name} has an invalid value`);
  return `${name} ${kind === 'integer' ? value : value.toLowerCase()}`;
}

export function roleOptionsSql(options: GenericOption[] | undefined): string {
  return (options ?? []).map((o) => renderOption(ROLE_OPTIONS, 'role', o)).join(' ');
}

export function databaseOptionsSql(options: GenericOption[] | undefined): string {
  return (options ?? []).map((o) => renderOption(DATABASE_OPTIONS, 'database', o)).join(' ');
}

/** compute_ctl's RoleExt::to_pg_options: the spec's options, LOGIN, and the password hash (or NULL). */
export function roleLoginSql(role: Role): string {
  const password = role.encrypted_password === undefined ? 'PASSWORD NULL' : `PASSWORD ${literal(role.encrypted_password)}`;
  return [roleOptionsSql(role.options), 'LOGIN', password].filter(Boolean).join(' ');
}
