/** The small rules the spec's fields follow: identifiers, settings, passwords, connection strings. */
import { z } from 'zod';
import type { ComputeSpec, GenericOption } from './types';

export const NEON_ID = /^[0-9a-fA-F]{32}$/;
/**
 * Control characters (C0, DEL, C1) and Unicode line separators. In a string written into
 * postgresql.conf, a line break ends the value (the rest becomes settings of its own) and the
 * others make Postgres refuse the file or mean something other than what a reader sees.
 */
// eslint-disable-next-line no-control-regex -- matching control characters is the point
export const CONTROL_OR_LINE_BREAK = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/;
export const CONTROL_PROBLEM = 'must not contain control characters or line breaks';
/** A spec string written into postgresql.conf. */
export const confText = z.string().refine((s) => !CONTROL_OR_LINE_BREAK.test(s), `${CONTROL_PROBLEM} (it is written into postgresql.conf)`);
/** An identifier that ends up in names, logs and task queues. */
export const plainText = z.string().refine((s) => !CONTROL_OR_LINE_BREAK.test(s), CONTROL_PROBLEM);
export const SETTING_NAME = /^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)*$/;
/** A value compute_ctl writes unquoted into postgresql.conf: one token (number, unit, bool, enum word). */
export const SETTING_TOKEN = /^[A-Za-z0-9_.:+-]+$/;
/** Or a complete single-quoted postgresql.conf string (quotes doubled or backslash-escaped inside). */
export const SETTING_QUOTED = /^'(?:[^'\\]|''|\\.)*'$/;
export const MD5_HASH = /^md5[0-9a-f]{32}$/;
export const BARE_MD5_HASH = /^[0-9a-f]{32}$/;
/**
 * SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>, base64, both keys 32 bytes. Exactly
 * what PostgreSQL accepts as a verifier: anything else it would take as a clear-text password.
 */
export const SCRAM_HASH = /^SCRAM-SHA-256\$[1-9]\d{0,9}:[A-Za-z0-9+/]+={0,2}\$[A-Za-z0-9+/]{43}=:[A-Za-z0-9+/]{43}=$/;
/** host:port (or [v6]:port), as compute_ctl hands them to the walproposer. */
export const SAFEKEEPER_CONNSTRING = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):\d{1,5}$/;

/** host:port (or [v6]:port): compute_ctl reaches endpoint storage at `http://{endpoint_storage_addr}/...`. */
const ENDPOINT_STORAGE_ADDR = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):(\d{1,5})$/;
/** A compact JWS (header.payload.signature, base64url), at most 8 KiB. */
const COMPACT_JWT = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;
const MAX_TOKEN_CHARS = 8192;

export function endpointStorageAddrProblem(addr: string): string | undefined {
  const m = ENDPOINT_STORAGE_ADDR.exec(addr);
  const port = m ? Number(m[2]) : 0;
  return m && port >= 1 && port <= 65535 ? undefined : `must be host:port (or [v6]:port) with a port from 1 to 65535, got ${JSON.stringify(addr)}`;
}

/** The token is a secret: the problem never quotes it. */
export function endpointStorageTokenProblem(token: string): string | undefined {
  return token.length <= MAX_TOKEN_CHARS && COMPACT_JWT.test(token) ? undefined : `must be a JWT (three base64url parts joined by '.', at most ${MAX_TOKEN_CHARS} characters); the value is not shown`;
}

/** PostgreSQL truncates names longer than NAMEDATALEN-1 = 63 bytes; we refuse them instead. */
function utf8Length(text: string): number {
  let bytes = 0;
  for (const ch of text) {
    const cp = ch.codePointAt(0)!;
    bytes += cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
  }
  return bytes;
}

export function identifierProblem(name: string): string | undefined {
  if (name.length === 0) return 'must not be empty';
  if (name.includes('\0')) return 'contains a NUL character';
  if (utf8Length(name) > 63) return 'longer than 63 bytes (PostgreSQL would truncate it)';
  return undefined;
}

/** Why `connstr` is not a libpq connection string (a postgres(ql):// URL or key=value list), or undefined. */
export function libpqConnstringProblem(connstr: string): string | undefined {
  if (CONTROL_OR_LINE_BREAK.test(connstr)) return `${CONTROL_PROBLEM} (it is written into postgresql.conf)`;
  if (connstr.trim() === '') return 'empty connection string';
  if (/^postgres(?:ql)?:\/\//i.test(connstr)) {
    return /\s/.test(connstr) ? 'a libpq URL must not contain whitespace' : undefined;
  }
  if (/^\s*[A-Za-z_]+\s*=/.test(connstr) && !/^[A-Za-z][A-Za-z0-9+.-]*:\/\//.test(connstr)) return undefined;
  return 'not a libpq connection string (expected postgresql://… or key=value pairs)';
}

export function settingValue(settings: GenericOption[] | undefined, name: string): string | undefined {
  return settings?.find((s) => s.name === name)?.value;
}

/** The value of a cluster setting, as compute_ctl's `settings.find()`. */
export function findSetting(spec: Pick<ComputeSpec, 'cluster'>, name: string): string | undefined {
  return settingValue(spec.cluster.settings, name);
}
