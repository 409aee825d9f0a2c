/**
 * The compute spec: compute_ctl's JSON (a ComputeConfig `{spec, compute_ctl_config}` or a bare
 * ComputeSpec), validated and normalized. Pure code: workflows, activities and the HTTP layer all
 * parse with it, so a spec the workflow accepted is one the activities can act on.
 *
 * Normalization (so the rest of the code never re-derives anything):
 * - `mode` becomes `{kind: 'Primary'} | {kind: 'Static', lsn} | {kind: 'Replica'}`;
 * - `pageserver_connection_info` is always present (derived from the legacy comma-separated
 *   `pageserver_connstring` or the `neon.pageserver_connstring` setting when absent);
 * - `tenant_id`/`timeline_id` are always present, lower-case (falling back to the `neon.tenant_id`
 *   and `neon.timeline_id` settings as compute_ctl does), and `safekeeper_connstrings` falls back to
 *   the `neon.safekeepers` setting for a Primary;
 * - a bare 32-hex md5 password (compute_ctl's historical form) becomes `md5<hex>`, the form
 *   pg_authid stores, so comparing with the catalog is exact.
 * Unknown fields are dropped. Parsing is idempotent: parsing a parsed spec yields the same spec.
 */
import { z } from 'zod';
import { isLsn } from './lsn';

// ---------------------------------------------------------------------------------------------
// Output types
// ---------------------------------------------------------------------------------------------

export type ComputeMode = { kind: 'Primary' } | { kind: 'Static'; lsn: string } | { kind: 'Replica' };

export interface GenericOption {
  name: string;
  value?: string;
  vartype: string;
}

export interface Role {
  name: string;
  /** `md5<32 hex>`, `SCRAM-SHA-256$…`, or absent (the role gets PASSWORD NULL). */
  encrypted_password?: string;
  options?: GenericOption[];
}

export interface Database {
  name: string;
  owner: string;
  options?: GenericOption[];
}

export interface Cluster {
  cluster_id?: string;
  name?: string;
  state?: string;
  roles: Role[];
  databases: Database[];
  postgresql_conf?: string;
  settings?: GenericOption[];
}

export type DeltaAction = 'delete_db' | 'rename_db' | 'delete_role' | 'rename_role';

export interface DeltaOp {
  action: DeltaAction;
  name: string;
  new_name?: string;
}

export interface PageserverInfo {
  id?: number;
  libpq_url?: string;
  grpc_url?: string;
}

export interface PageserverConnectionInfo {
  /** 0 = unsharded (one shard with key "0000"), otherwise the number of shards. */
  shard_count: number;
  stripe_size?: number;
  prefer_protocol: 'libpq' | 'grpc';
  /** Keyed by shard index: two hex digits shard number, two hex digits shard count ("0000", "0104"). */
  shards: Record<string, { pageservers: PageserverInfo[] }>;
}

export interface ComputeSpec {
  format_version: number;
  operation_uuid?: string;
  features: string[];
  suspend_timeout_seconds: number;
  mode: ComputeMode;
  tenant_id: string;
  timeline_id: string;
  pageserver_connection_info: PageserverConnectionInfo;
  /** As given (legacy form); `pageserver_connection_info` is what to use. */
  pageserver_connstring?: string;
  shard_stripe_size?: number;
  safekeeper_connstrings: string[];
  safekeepers_generation?: number;
  storage_auth_token?: string;
  skip_pg_catalog_updates: boolean;
  drop_subscriptions_before_start: boolean;
  reconfigure_concurrency: number;
  cluster: Cluster;
  delta_operations?: DeltaOp[];
  endpoint_id?: string;
  project_id?: string;
  branch_id?: string;
  compute_id?: string;
  autoprewarm: boolean;
  offload_lfc_interval_seconds?: number;
  endpoint_storage_addr?: string;
  endpoint_storage_token?: string;
}

export interface ComputeCtlConfig {
  /** JSON web keys (EdDSA) that may sign requests to the compute's external API. */
  jwks: { keys: Record<string, unknown>[] };
  tls?: unknown;
}

export interface ComputeConfig {
  spec: ComputeSpec;
  compute_ctl_config: ComputeCtlConfig;
}

export type ParseResult = { ok: true; config: ComputeConfig } | { ok: false; errors: string[] };

// ---------------------------------------------------------------------------------------------
// Option catalogs: which CREATE ROLE / CREATE DATABASE options a spec may carry, and how their
// values are rendered. compute_ctl pastes option names into SQL; we accept only known options so
// a spec can never smuggle SQL in through an option name or an unquoted value.
// ---------------------------------------------------------------------------------------------

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

function optionValueProblem(kind: OptionKind, value: string | undefined): string | undefined {
  if (kind === 'flag') return value === undefined ? undefined : 'takes no value';
  if (value === undefined) return 'needs a value';
  if (value.includes('\0')) return 'contains a NUL character';
  if (kind === 'integer') return INTEGER_TOKEN.test(value) ? undefined : 'must be an integer';
  if (kind === 'boolean') return BOOLEAN_TOKEN.test(value) ? undefined : 'must be true or false';
  if (kind === 'literal' || kind === 'identifier') return undefined;
  return kind.keyword.includes(value.toLowerCase()) ? undefined : `must be one of ${kind.keyword.join(', ')}`;
}

// ---------------------------------------------------------------------------------------------
// Small validators
// ---------------------------------------------------------------------------------------------

const NEON_ID = /^[0-9a-fA-F]{32}$/;
/**
 * Control characters (C0, DEL, C1) and Unicode line separators. In a string written into
 * postgresql.conf, a line break ends the value (the rest becomes settings of its own) and the
 * others make Postgres refuse the file or mean something other than what a reader sees.
 */
// eslint-disable-next-line no-control-regex -- matching control characters is the point
const CONTROL_OR_LINE_BREAK = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/;
const CONTROL_PROBLEM = 'must not contain control characters or line breaks';
/** A spec string written into postgresql.conf. */
const confText = z.string().refine((s) => !CONTROL_OR_LINE_BREAK.test(s), `${CONTROL_PROBLEM} (it is written into postgresql.conf)`);
/** An identifier that ends up in names, logs and task queues. */
const plainText = z.string().refine((s) => !CONTROL_OR_LINE_BREAK.test(s), CONTROL_PROBLEM);
const SETTING_NAME = /^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)*$/;
/** A value compute_ctl writes unquoted into postgresql.conf: one token (number, unit, bool, enum word). */
const SETTING_TOKEN = /^[A-Za-z0-9_.:+-]+$/;
/** Or a complete single-quoted postgresql.conf string (quotes doubled or backslash-escaped inside). */
const SETTING_QUOTED = /^'(?:[^'\\]|''|\\.)*'$/;
const MD5_HASH = /^md5[0-9a-f]{32}$/;
const BARE_MD5_HASH = /^[0-9a-f]{32}$/;
/**
 * SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>, base64, both keys 32 bytes. Exactly
 * what PostgreSQL accepts as a verifier: anything else it would take as a clear-text password.
 */
const SCRAM_HASH = /^SCRAM-SHA-256\$[1-9]\d{0,9}:[A-Za-z0-9+/]+={0,2}\$[A-Za-z0-9+/]{43}=:[A-Za-z0-9+/]{43}=$/;
/** host:port (or [v6]:port), as compute_ctl hands them to the walproposer. */
const SAFEKEEPER_CONNSTRING = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):\d{1,5}$/;

/** PostgreSQL truncates names longer than NAMEDATALEN-1 = 63 bytes; we refuse them instead. */
function utf8Length(text: string): number {
  let bytes = 0;
  for (const ch of text) {
    const cp = ch.codePointAt(0)!;
    bytes += cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
  }
  return bytes;
}

function identifierProblem(name: string): string | undefined {
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

function settingValue(settings: GenericOption[] | undefined, name: string): string | undefined {
  return settings?.find((s) => s.name === name)?.value;
}

/** The value of a cluster setting, as compute_ctl's `settings.find()`. */
export function findSetting(spec: Pick<ComputeSpec, 'cluster'>, name: string): string | undefined {
  return settingValue(spec.cluster.settings, name);
}

// ---------------------------------------------------------------------------------------------
// Raw (wire) schema: types only; the rules that span fields live in `resolveSpec` below.
// ---------------------------------------------------------------------------------------------

/** Rust's Option<T>: the field may be missing or null; both become undefined. */
function optional<T extends z.ZodType>(schema: T) {
  return schema.nullish().transform((v) => (v === null ? undefined : v) as z.output<T> | undefined);
}

const int = z.number().int();
const nonNegativeInt = z.number().int().nonnegative();

const genericOptionSchema = z.object({
  name: z.string(),
  value: optional(z.string()),
  vartype: z.string(),
});
const genericOptionsSchema = optional(z.array(genericOptionSchema));

const roleSchema = z.object({
  name: z.string(),
  encrypted_password: optional(z.string()),
  options: genericOptionsSchema,
});

const databaseSchema = z.object({
  name: z.string(),
  owner: z.string(),
  options: genericOptionsSchema,
});

const clusterSchema = z.object({
  cluster_id: optional(z.string()),
  name: optional(z.string()),
  state: optional(z.string()),
  roles: optional(z.array(roleSchema)),
  databases: optional(z.array(databaseSchema)),
  postgresql_conf: optional(z.string()),
  settings: genericOptionsSchema,
});

const deltaOpSchema = z.object({
  action: z.enum(['delete_db', 'rename_db', 'delete_role', 'rename_role'], {
    error: 'must be one of delete_db, rename_db, delete_role, rename_role',
  }),
  name: z.string(),
  new_name: optional(z.string()),
});

const lsnText = z.string().refine(isLsn, 'not an LSN (expected X/Y in hex, e.g. 0/16B5A50)');

/** compute_ctl's externally tagged enum, plus our own normalized form so parsing is idempotent. */
const modeSchema = z
  .union(
    [
      z.literal('Primary'),
      z.literal('Replica'),
      z.object({ Static: lsnText }).strict(),
      z.object({ kind: z.literal('Primary') }),
      z.object({ kind: z.literal('Replica') }),
      z.object({ kind: z.literal('Static'), lsn: lsnText }),
    ],
    { error: 'must be "Primary", "Replica" or {"Static": "X/Y"}' },
  )
  .optional()
  .transform((m): ComputeMode => {
    if (m === undefined || m === 'Primary') return { kind: 'Primary' };
    if (m === 'Replica') return { kind: 'Replica' };
    if ('Static' in m) return { kind: 'Static', lsn: m.Static.toUpperCase() };
    if (m.kind === 'Static') return { kind: 'Static', lsn: m.lsn.toUpperCase() };
    return { kind: m.kind };
  });

const pageserverConnectionInfoSchema = z.object({
  shard_count: nonNegativeInt.max(255),
  stripe_size: optional(z.number().int().positive()),
  prefer_protocol: optional(z.enum(['libpq', 'grpc'], { error: 'must be "libpq" or "grpc"' })).transform((p) => p ?? 'libpq'),
  shards: z.record(
    z.string(),
    z.object({
      pageservers: z.array(
        z.object({
          id: optional(nonNegativeInt),
          libpq_url: optional(z.string()),
          grpc_url: optional(z.string()),
        }),
      ),
    }),
  ),
});

const rawSpecSchema = z.object({
  format_version: z.number(),
  operation_uuid: optional(z.string()),
  features: optional(z.array(z.string())),
  suspend_timeout_seconds: int,
  mode: modeSchema,
  tenant_id: optional(z.string()),
  timeline_id: optional(z.string()),
  pageserver_connection_info: optional(pageserverConnectionInfoSchema),
  pageserver_connstring: optional(z.string()),
  shard_stripe_size: optional(z.number().int().positive()),
  safekeeper_connstrings: optional(z.array(z.string())),
  safekeepers_generation: optional(nonNegativeInt.max(0xffffffff)),
  storage_auth_token: optional(z.string()),
  skip_pg_catalog_updates: optional(z.boolean()),
  drop_subscriptions_before_start: optional(z.boolean()),
  reconfigure_concurrency: optional(z.number().int().positive()),
  cluster: clusterSchema,
  delta_operations: optional(z.array(deltaOpSchema)),
  endpoint_id: optional(confText),
  project_id: optional(confText),
  branch_id: optional(confText),
  compute_id: optional(plainText),
  autoprewarm: optional(z.boolean()),
  offload_lfc_interval_seconds: optional(z.number().int().positive()),
  endpoint_storage_addr: optional(z.string()),
  endpoint_storage_token: optional(z.string()),
});
type RawSpec = z.output<typeof rawSpecSchema>;

/**
 * A public Ed25519 key (RFC 8037) that may sign requests to the compute's external API. compute_ctl
 * verifies with EdDSA; a private key (`d`) in a spec would put a signing secret into workflow
 * history, so it is refused.
 */
const ed25519PublicJwkSchema = z
  .object({
    kty: z.literal('OKP', { error: 'must be "OKP" (an Ed25519 key)' }),
    crv: z.literal('Ed25519', { error: 'must be "Ed25519"' }),
    x: z.string().regex(/^[A-Za-z0-9_-]{43}$/, 'must be the 32-byte public key in base64url (43 characters)'),
    kid: optional(z.string().max(256)),
    alg: optional(z.enum(['EdDSA', 'Ed25519'], { error: 'must be "EdDSA" or "Ed25519"' })),
    use: optional(z.literal('sig', { error: 'must be "sig"' })),
    d: z.undefined({ error: 'a private key has no place in a spec: give only the public part' }).optional(),
  })
  .loose();

/** The keys of compute_ctl_config.jwks, checked as compute_ctl's external API will use them. */
export const jwkSetSchema = z.object({ keys: z.array(ed25519PublicJwkSchema) });

const computeCtlConfigSchema = optional(
  z.object({
    jwks: optional(jwkSetSchema),
    tls: z.unknown().optional(),
  }),
);

// ---------------------------------------------------------------------------------------------
// Cross-field rules and normalization
// ---------------------------------------------------------------------------------------------

type Path = (string | number)[];

function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const part of path) {
    if (typeof part === 'number') out += `[${part}]`;
    else out += out === '' ? String(part) : `.${String(part)}`;
  }
  return out || '(root)';
}

class Problems {
  readonly list: string[] = [];
  constructor(private readonly prefix: Path) {}
  add(path: Path, problem: string): void {
    this.list.push(`${formatPath([...this.prefix, ...path])}: ${problem}`);
  }
}

function shardKey(shardNumber: number, shardCount: number): string {
  return `${shardNumber.toString(16).padStart(2, '0')}${shardCount.toString(16).padStart(2, '0')}`;
}

function checkOptions(
  options: GenericOption[] | undefined,
  catalog: Readonly<Record<string, OptionKind>>,
  what: string,
  path: Path,
  problems: Problems,
): void {
  options?.forEach((opt, i) => {
    const entry = lookupOption(catalog, opt.name);
    if (!entry) {
      problems.add([...path, i, 'name'], `unsupported ${what} option ${JSON.stringify(opt.name)} (supported: ${Object.keys(catalog).join(', ')})`);
      return;
    }
    const problem = optionValueProblem(entry.kind, opt.value);
    if (problem) problems.add([...path, i, 'value'], `${entry.name} ${problem}`);
  });
}

function checkPassword(role: { encrypted_password?: string }, path: Path, problems: Problems): string | undefined {
  const pw = role.encrypted_password;
  if (pw === undefined) return undefined;
  if (MD5_HASH.test(pw) || SCRAM_HASH.test(pw)) return pw;
  if (BARE_MD5_HASH.test(pw)) return `md5${pw}`;
  // Never echo the value: it is a password hash (or, worse, a clear-text password by mistake).
  problems.add(path, 'must be an md5 hash (md5 followed by 32 lower-case hex digits) or a SCRAM-SHA-256$… verifier');
  return undefined;
}

function checkPageserverInfo(info: PageserverConnectionInfo, problems: Problems): void {
  const base: Path = ['pageserver_connection_info'];
  const count = info.shard_count;
  const wanted = count === 0 ? 1 : count;
  if (count > 0 && info.stripe_size === undefined) {
    problems.add([...base, 'stripe_size'], `required for a sharded tenant (shard_count ${count})`);
  }
  for (const key of Object.keys(info.shards)) {
    if (!/^[0-9a-f]{4}$/.test(key)) {
      problems.add([...base, 'shards', key], 'shard index must be 4 lower-case hex digits (shard number, shard count)');
      continue;
    }
    const number = Number.parseInt(key.slice(0, 2), 16);
    const keyCount = Number.parseInt(key.slice(2), 16);
    if (keyCount !== count || number >= wanted) {
      problems.add([...base, 'shards', key], `not a shard of a tenant with shard_count ${count}`);
    }
  }
  for (let n = 0; n < wanted; n++) {
    const key = shardKey(n, count);
    const shard = info.shards[key];
    if (!shard) {
      problems.add([...base, 'shards'], `shard ${key} is missing`);
      continue;
    }
    if (shard.pageservers.length === 0) {
      problems.add([...base, 'shards', key, 'pageservers'], 'needs at least one pageserver');
      continue;
    }
    shard.pageservers.forEach((ps, i) => {
      const psPath: Path = [...base, 'shards', key, 'pageservers', i];
      if (ps.libpq_url !== undefined) {
        const problem = libpqConnstringProblem(ps.libpq_url);
        if (problem) problems.add([...psPath, 'libpq_url'], problem);
      }
      if (ps.grpc_url !== undefined && (!/^grpc:\/\/\S+$/.test(ps.grpc_url) || CONTROL_OR_LINE_BREAK.test(ps.grpc_url))) {
        problems.add([...psPath, 'grpc_url'], 'not a grpc:// URL');
      }
      if (ps.libpq_url === undefined && ps.grpc_url === undefined) problems.add(psPath, 'needs a libpq_url or a grpc_url');
    });
    // The base backup is fetched from the first pageserver of shard 0, over libpq.
    if (n === 0 && shard.pageservers[0]!.libpq_url === undefined) {
      problems.add([...base, 'shards', key, 'pageservers', 0, 'libpq_url'], 'required: the base backup is fetched over libpq');
    }
  }
}

/** compute_ctl's PageserverConnectionInfo::from_connstr: one URL = unsharded, several = sharded. */
function infoFromConnstring(
  connstring: string,
  stripeSize: number | undefined,
  path: Path,
  stripePath: Path,
  problems: Problems,
): PageserverConnectionInfo | undefined {
  const urls = connstring.split(',');
  let ok = true;
  urls.forEach((url, i) => {
    const problem = libpqConnstringProblem(url);
    if (problem) {
      problems.add(path, urls.length > 1 ? `entry ${i + 1}: ${problem}` : problem);
      ok = false;
    }
  });
  if (urls.length > 1 && stripeSize === undefined) {
    problems.add(stripePath, `${urls.length} pageservers (a sharded tenant) but no stripe size`);
    ok = false;
  }
  if (!ok) return undefined;
  if (urls.length === 1) {
    return { shard_count: 0, prefer_protocol: 'libpq', shards: { '0000': { pageservers: [{ libpq_url: urls[0]! }] } } };
  }
  const shards: PageserverConnectionInfo['shards'] = {};
  urls.forEach((url, n) => (shards[shardKey(n, urls.length)] = { pageservers: [{ libpq_url: url }] }));
  return { shard_count: urls.length, stripe_size: stripeSize, prefer_protocol: 'libpq', shards };
}

function resolvePageservers(raw: RawSpec, problems: Problems): PageserverConnectionInfo | undefined {
  if (raw.pageserver_connection_info) {
    checkPageserverInfo(raw.pageserver_connection_info, problems);
    if (raw.pageserver_connstring !== undefined) {
      const problem = libpqConnstringProblem(raw.pageserver_connstring.split(',')[0] ?? '');
      if (problem) problems.add(['pageserver_connstring'], problem);
    }
    return raw.pageserver_connection_info;
  }
  if (raw.pageserver_connstring !== undefined) {
    return infoFromConnstring(raw.pageserver_connstring, raw.shard_stripe_size, ['pageserver_connstring'], ['shard_stripe_size'], problems);
  }
  const settings = raw.cluster.settings;
  const fromSetting = settingValue(settings, 'neon.pageserver_connstring');
  if (fromSetting !== undefined) {
    const index = settings!.findIndex((s) => s.name === 'neon.pageserver_connstring');
    const stripeText = settingValue(settings, 'neon.stripe_size');
    let stripe: number | undefined;
    if (stripeText !== undefined) {
      stripe = /^\d+$/.test(stripeText) ? Number(stripeText) : undefined;
      if (stripe === undefined || stripe <= 0) {
        const stripeIndex = settings!.findIndex((s) => s.name === 'neon.stripe_size');
        problems.add(['cluster', 'settings', stripeIndex, 'value'], 'neon.stripe_size must be a positive integer');
        return undefined;
      }
    }
    return infoFromConnstring(fromSetting, stripe, ['cluster', 'settings', index, 'value'], ['cluster', 'settings'], problems);
  }
  problems.add(
    ['pageserver_connection_info'],
    'no pageserver information (give pageserver_connection_info, pageserver_connstring or the neon.pageserver_connstring setting)',
  );
  return undefined;
}

function resolveId(raw: RawSpec, field: 'tenant_id' | 'timeline_id', problems: Problems): string | undefined {
  const settingName = `neon.${field}`;
  const given = raw[field];
  const value = given ?? settingValue(raw.cluster.settings, settingName);
  const path: Path = given !== undefined ? [field] : ['cluster', 'settings', raw.cluster.settings?.findIndex((s) => s.name === settingName) ?? -1, 'value'];
  if (value === undefined) {
    problems.add([field], `required (32 hex characters; or the ${settingName} setting)`);
    return undefined;
  }
  if (!NEON_ID.test(value)) {
    problems.add(path, `must be 32 hex characters, got ${JSON.stringify(value.slice(0, 80))}`);
    return undefined;
  }
  return value.toLowerCase();
}

function resolveSafekeepers(raw: RawSpec, mode: ComputeMode, problems: Problems): string[] {
  let list = raw.safekeeper_connstrings ?? [];
  let path: Path = ['safekeeper_connstrings'];
  if (list.length === 0 && mode.kind === 'Primary') {
    const fromSetting = settingValue(raw.cluster.settings, 'neon.safekeepers');
    if (fromSetting !== undefined) {
      list = fromSetting.split(',');
      path = ['cluster', 'settings', raw.cluster.settings!.findIndex((s) => s.name === 'neon.safekeepers'), 'value'];
    }
  }
  const seen = new Set<string>();
  list.forEach((sk, i) => {
    const entryPath = path[0] === 'safekeeper_connstrings' ? [...path, i] : path;
    if (!SAFEKEEPER_CONNSTRING.test(sk)) problems.add(entryPath, `safekeeper ${JSON.stringify(sk)} must be host:port`);
    else if (seen.has(sk)) problems.add(entryPath, `duplicate entry ${sk}`);
    seen.add(sk);
  });
  if (mode.kind === 'Primary' && list.length === 0) {
    problems.add(['safekeeper_connstrings'], 'a Primary compute needs at least one safekeeper');
  }
  return list;
}

function checkCluster(raw: RawSpec, problems: Problems): Cluster {
  const roles: Role[] = [];
  const roleNames = new Set<string>();
  (raw.cluster.roles ?? []).forEach((role, i) => {
    const path: Path = ['cluster', 'roles', i];
    const nameProblem = identifierProblem(role.name);
    if (nameProblem) problems.add([...path, 'name'], nameProblem);
    else if (roleNames.has(role.name)) problems.add([...path, 'name'], `duplicate role ${JSON.stringify(role.name)}`);
    roleNames.add(role.name);
    const password = checkPassword(role, [...path, 'encrypted_password'], problems);
    checkOptions(role.options, ROLE_OPTIONS, 'role', [...path, 'options'], problems);
    roles.push({ name: role.name, ...(password !== undefined && { encrypted_password: password }), ...(role.options && { options: role.options }) });
  });

  const dbNames = new Set<string>();
  (raw.cluster.databases ?? []).forEach((db, i) => {
    const path: Path = ['cluster', 'databases', i];
    const nameProblem = identifierProblem(db.name);
    if (nameProblem) problems.add([...path, 'name'], nameProblem);
    else if (dbNames.has(db.name)) problems.add([...path, 'name'], `duplicate database ${JSON.stringify(db.name)}`);
    dbNames.add(db.name);
    const ownerProblem = identifierProblem(db.owner);
    if (ownerProblem) problems.add([...path, 'owner'], ownerProblem);
    checkOptions(db.options, DATABASE_OPTIONS, 'database', [...path, 'options'], problems);
  });

  raw.cluster.settings?.forEach((s, i) => {
    const path: Path = ['cluster', 'settings', i];
    if (!SETTING_NAME.test(s.name)) problems.add([...path, 'name'], `${JSON.stringify(s.name)} is not a configuration parameter name`);
    if (s.value === undefined) {
      problems.add([...path, 'value'], 'required for a postgresql.conf setting');
    } else if (CONTROL_OR_LINE_BREAK.test(s.value)) {
      problems.add([...path, 'value'], `${CONTROL_PROBLEM} (setting ${s.name}, written into postgresql.conf)`);
    } else if (s.vartype !== 'string' && !SETTING_TOKEN.test(s.value) && !SETTING_QUOTED.test(s.value)) {
      problems.add([...path, 'value'], `a ${s.vartype} setting must be a single token (number, boolean or word); use vartype "string" for text`);
    }
  });

  return {
    ...(raw.cluster.cluster_id !== undefined && { cluster_id: raw.cluster.cluster_id }),
    ...(raw.cluster.name !== undefined && { name: raw.cluster.name }),
    ...(raw.cluster.state !== undefined && { state: raw.cluster.state }),
    roles,
    databases: (raw.cluster.databases ?? []).map((db) => ({ name: db.name, owner: db.owner, ...(db.options && { options: db.options }) })),
    ...(raw.cluster.postgresql_conf !== undefined && { postgresql_conf: raw.cluster.postgresql_conf }),
    ...(raw.cluster.settings && { settings: raw.cluster.settings }),
  };
}

function checkDeltas(raw: RawSpec, problems: Problems): DeltaOp[] | undefined {
  return raw.delta_operations?.map((op, i) => {
    const path: Path = ['delta_operations', i];
    const nameProblem = identifierProblem(op.name);
    if (nameProblem) problems.add([...path, 'name'], nameProblem);
    if (op.action === 'rename_db' || op.action === 'rename_role') {
      if (op.new_name === undefined) problems.add([...path, 'new_name'], `required for ${op.action}`);
      else {
        const newNameProblem = identifierProblem(op.new_name);
        if (newNameProblem) problems.add([...path, 'new_name'], newNameProblem);
      }
    }
    return { action: op.action, name: op.name, ...(op.new_name !== undefined && { new_name: op.new_name }) };
  });
}

/** Drops undefined members so the parsed spec serializes (and re-parses) cleanly. */
function compact<T extends object>(value: T): T {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as T;
}

function resolveSpec(raw: RawSpec, problems: Problems): ComputeSpec | undefined {
  const before = problems.list.length;
  const mode = raw.mode;
  const pageservers = resolvePageservers(raw, problems);
  const tenantId = resolveId(raw, 'tenant_id', problems);
  const timelineId = resolveId(raw, 'timeline_id', problems);
  const safekeepers = resolveSafekeepers(raw, mode, problems);
  const cluster = checkCluster(raw, problems);
  const deltas = checkDeltas(raw, problems);
  if (problems.list.length > before || !pageservers || !tenantId || !timelineId) return undefined;
  return compact<ComputeSpec>({
    format_version: raw.format_version,
    operation_uuid: raw.operation_uuid,
    features: raw.features ?? [],
    suspend_timeout_seconds: raw.suspend_timeout_seconds,
    mode,
    tenant_id: tenantId,
    timeline_id: timelineId,
    pageserver_connection_info: pageservers,
    pageserver_connstring: raw.pageserver_connstring,
    shard_stripe_size: raw.shard_stripe_size,
    safekeeper_connstrings: safekeepers,
    safekeepers_generation: raw.safekeepers_generation,
    storage_auth_token: raw.storage_auth_token,
    skip_pg_catalog_updates: raw.skip_pg_catalog_updates ?? false,
    drop_subscriptions_before_start: raw.drop_subscriptions_before_start ?? false,
    reconfigure_concurrency: raw.reconfigure_concurrency ?? 1,
    cluster,
    delta_operations: deltas,
    endpoint_id: raw.endpoint_id,
    project_id: raw.project_id,
    branch_id: raw.branch_id,
    compute_id: raw.compute_id,
    autoprewarm: raw.autoprewarm ?? false,
    offload_lfc_interval_seconds: raw.offload_lfc_interval_seconds,
    endpoint_storage_addr: raw.endpoint_storage_addr,
    endpoint_storage_token: raw.endpoint_storage_token,
  });
}

function zodProblems(error: z.ZodError, problems: Problems): void {
  for (const issue of error.issues) problems.add(issue.path as Path, issue.message);
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

// ---------------------------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------------------------

/**
 * Parses compute_ctl's JSON: a ComputeConfig `{spec, compute_ctl_config}` (errors are prefixed
 * `spec.`) or a bare ComputeSpec. Every problem is reported as "field.path: problem".
 */
export function parseComputeConfig(json: unknown): ParseResult {
  if (!isPlainObject(json)) return { ok: false, errors: ['(root): expected a JSON object (a ComputeConfig or a ComputeSpec)'] };
  const wrapped = !('cluster' in json) && ('spec' in json || 'compute_ctl_config' in json);
  const problems = new Problems(wrapped ? ['spec'] : []);
  let ctlConfig: ComputeCtlConfig = { jwks: { keys: [] } };
  if (wrapped) {
    const ctl = computeCtlConfigSchema.safeParse(json.compute_ctl_config);
    if (!ctl.success) {
      const ctlProblems = new Problems(['compute_ctl_config']);
      zodProblems(ctl.error, ctlProblems);
      problems.list.push(...ctlProblems.list);
    } else if (ctl.data) {
      ctlConfig = compact({ jwks: ctl.data.jwks ?? { keys: [] }, tls: ctl.data.tls });
    }
    if (json.spec === undefined || json.spec === null) {
      problems.add([], 'required (the compute spec)');
      return { ok: false, errors: problems.list };
    }
  }
  const specJson = wrapped ? json.spec : json;
  if (!isPlainObject(specJson)) {
    problems.add([], 'expected a JSON object');
    return { ok: false, errors: problems.list };
  }
  const raw = rawSpecSchema.safeParse(specJson);
  if (!raw.success) {
    zodProblems(raw.error, problems);
    return { ok: false, errors: problems.list };
  }
  const spec = resolveSpec(raw.data, problems);
  if (!spec || problems.list.length > 0) return { ok: false, errors: problems.list };
  return { ok: true, config: { spec, compute_ctl_config: ctlConfig } };
}

/** Parses a bare spec or a ComputeConfig and returns only the spec. */
export function parseComputeSpec(json: unknown): { ok: true; spec: ComputeSpec } | { ok: false; errors: string[] } {
  const result = parseComputeConfig(json);
  return result.ok ? { ok: true, spec: result.config.spec } : result;
}

/** The libpq URL of the first pageserver of shard 0: where the base backup comes from. */
export function shard0PageserverConnstring(spec: Pick<ComputeSpec, 'pageserver_connection_info'>): string {
  const info = spec.pageserver_connection_info;
  const url = info.shards[shardKey(0, info.shard_count)]?.pageservers[0]?.libpq_url;
  if (url === undefined) throw new RangeError('spec has no libpq URL for shard 0 (was it parsed with parseComputeConfig?)');
  return url;
}

/** compute_ctl's neon.compute_mode value. */
export function computeModeName(mode: ComputeMode): 'primary' | 'static' | 'replica' {
  return mode.kind === 'Primary' ? 'primary' : mode.kind === 'Static' ? 'static' : 'replica';
}

/** The libpq URLs of the first pageserver of every shard in shard order, or undefined if any lacks one. */
export function pageserverLibpqUrls(spec: Pick<ComputeSpec, 'pageserver_connection_info'>): string[] | undefined {
  const info = spec.pageserver_connection_info;
  const urls: string[] = [];
  for (let n = 0; n < Math.max(1, info.shard_count); n++) {
    const url = info.shards[shardKey(n, info.shard_count)]?.pageservers[0]?.libpq_url;
    if (url === undefined) return undefined;
    urls.push(url);
  }
  return urls;
}
