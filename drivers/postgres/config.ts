import { unlink } from 'node:fs/promises';
import path from 'node:path';
import { computeModeName, pageserverLibpqUrls, type ComputeSpec, type GenericOption } from '../../model/compute-spec';
import { auditSettings } from './audit';
import { exists, readTextIfExists, writeFileAtomic } from './files';
import type { ServerUser } from './server-user';

/** compute_ctl's include line: always last, so a temporary override file beats everything above. */
export const TEMP_OVERRIDE_INCLUDE = "include_if_exists = 'compute_ctl_temp_override.conf'";
/** compute_ctl's pg_hba line that lets clients in from anywhere with a password. */
export const PG_HBA_ALL_MD5 = 'host\tall\t\tall\t\tall\t\tmd5';

/** A postgresql.conf string value: single-quoted, quotes doubled, backslashes doubled. */
export function escapeConfValue(value: string): string {
  return `'${value.replaceAll("'", "''").replaceAll('\\', '\\\\')}'`;
}

/**
 * A setting as data. Whoever needs a setting (a storage backend, the cache backend) returns these;
 * only this module turns them into postgresql.conf text.
 */
export interface ConfSetting {
  name: string;
  /** Strings are quoted; numbers are written as they are; booleans as on/off. */
  value: string | number | boolean;
}

function confValue(value: ConfSetting['value']): string {
  if (typeof value === 'number') return String(value);
  if (typeof value === 'boolean') return value ? 'on' : 'off';
  return escapeConfValue(value);
}

/** `name = value`, the value quoted as its type needs. */
export function confLine(setting: ConfSetting): string {
  return `${setting.name} = ${confValue(setting.value)}`;
}

/** One `cluster.settings` entry as a postgresql.conf line: vartype "string" is quoted, others verbatim. */
export function settingLine(option: GenericOption): string {
  if (option.value === undefined) return option.name;
  return option.vartype === 'string' ? `${option.name} = ${escapeConfValue(option.value)}` : `${option.name} = ${option.value}`;
}

/** neon.safekeepers as compute_ctl writes it: `g#<generation>:` first when the spec has a generation. */
export function safekeepersSetting(safekeepers: string[], generation?: number): ConfSetting {
  return { name: 'neon.safekeepers', value: `${generation !== undefined ? `g#${generation}:` : ''}${safekeepers.join(',')}` };
}

/**
 * The storage identity settings (tenant, timeline, safekeepers) for a Postgres that runs without a
 * compute spec (a test's or a tool's throwaway server); a compute's come from its spec.
 */
export function storageIdentityConf(ctx: { tenantId: string; timelineId: string; safekeepers: string[]; safekeepersGeneration?: number }): string {
  const settings: ConfSetting[] = [
    { name: 'neon.tenant_id', value: ctx.tenantId },
    { name: 'neon.timeline_id', value: ctx.timelineId },
    safekeepersSetting(ctx.safekeepers, ctx.safekeepersGeneration),
  ];
  return settings.map(confLine).join('\n');
}

export interface RenderConfOptions {
  /** Settings the storage and cache backends need (written after the spec's settings, before the include). */
  backendSettings?: ConfSetting[];
  /** Role granted to every spec role; compute_ctl's --privileged-role-name. */
  privilegedRoleName?: string;
  /** Locale for lc_messages/lc_monetary/lc_time/lc_numeric; null leaves them out. */
  locale?: string | null;
}

/** The setting a postgresql.conf line sets (lower case, as Postgres compares them), if it sets one. */
function settingName(line: string): string | undefined {
  const m = /^\s*([A-Za-z_][A-Za-z0-9_.$-]*)\s*(=|\s|$)/.exec(line);
  if (!m || line.trimStart().startsWith('#')) return undefined;
  const name = m[1]!.toLowerCase();
  return name === 'include' || name === 'include_if_exists' || name === 'include_dir' ? undefined : name;
}

/**
 * postgresql.conf as compute_ctl writes it: the spec's postgresql_conf verbatim, the Neon storage
 * settings, identity, locale and mode lines, the spec's settings between "Managed by compute_ctl"
 * markers, then (ours) the backends' settings, and the temp-override include last.
 *
 * Each setting is written once. Where two of the generated lines set the same name, the later
 * one is the one Postgres would use, so only it is kept (a backend's wal_level over a spec's, say);
 * the spec's verbatim postgresql_conf stays as it is.
 */
export function renderPostgresqlConf(spec: ComputeSpec, opts: RenderConfOptions = {}): string {
  const lines: string[] = [];
  lines.push('# Neon storage settings', '');
  const info = spec.pageserver_connection_info;
  if (info.stripe_size !== undefined) {
    lines.push("# from compute spec's pageserver_connection_info.stripe_size field", `neon.stripe_size=${info.stripe_size}`);
  }
  const urls = pageserverLibpqUrls(spec);
  if (urls) {
    lines.push("# derived from compute spec's pageserver_connection_info field", `neon.pageserver_connstring=${escapeConfValue(urls.join(','))}`);
  } else {
    lines.push('# no neon.pageserver_connstring');
  }
  if (spec.safekeeper_connstrings.length > 0) {
    const sk = safekeepersSetting(spec.safekeeper_connstrings, spec.safekeepers_generation);
    lines.push(`${sk.name}=${confValue(sk.value)}`);
  }
  lines.push(`neon.tenant_id=${escapeConfValue(spec.tenant_id)}`, `neon.timeline_id=${escapeConfValue(spec.timeline_id)}`);
  if (spec.project_id !== undefined) lines.push(`neon.project_id=${escapeConfValue(spec.project_id)}`);
  if (spec.branch_id !== undefined) lines.push(`neon.branch_id=${escapeConfValue(spec.branch_id)}`);
  if (spec.endpoint_id !== undefined) lines.push(`neon.endpoint_id=${escapeConfValue(spec.endpoint_id)}`);
  const locale = opts.locale === undefined ? 'C.UTF-8' : opts.locale;
  if (locale !== null) {
    for (const name of ['lc_messages', 'lc_monetary', 'lc_time', 'lc_numeric']) lines.push(`${name}=${escapeConfValue(locale)}`);
  }
  lines.push(`neon.compute_mode=${computeModeName(spec.mode)}`);
  if (spec.mode.kind === 'Static') lines.push('hot_standby=on', `recovery_target_lsn=${escapeConfValue(spec.mode.lsn)}`);
  if (spec.mode.kind === 'Replica') lines.push('hot_standby=on');
  lines.push(`neon.privileged_role_name=${escapeConfValue(opts.privilegedRoleName ?? 'neon_superuser')}`);
  if (spec.cluster.settings !== undefined) {
    lines.push('# Managed by compute_ctl: begin', ...spec.cluster.settings.map(settingLine), '# Managed by compute_ctl: end');
  }
  // After the spec's settings, as compute_ctl writes them: the spec cannot loosen auditing.
  const audit = auditSettings(spec);
  if (audit.length > 0) lines.push('# Managed by compute_ctl base audit settings: start', ...audit.map(confLine), '# Managed by compute_ctl base audit settings: end');
  lines.push(`neon.disable_logical_replication_subscribers=${spec.drop_subscriptions_before_start ? 'true' : 'false'}`);
  const backend = opts.backendSettings ?? [];
  if (backend.length > 0) lines.push('# Storage backend settings: begin', ...backend.map(confLine), '# Storage backend settings: end');
  // Keep the last line of each name (the one Postgres would use).
  const last = new Map<string, number>();
  lines.forEach((line, i) => {
    const name = settingName(line);
    if (name !== undefined) last.set(name, i);
  });
  const generated = lines.filter((line, i) => {
    const name = settingName(line);
    return name === undefined || last.get(name) === i;
  });
  const verbatim = spec.cluster.postgresql_conf !== undefined ? [spec.cluster.postgresql_conf] : [];
  return `${[...verbatim, ...generated, TEMP_OVERRIDE_INCLUDE].join('\n')}\n`;
}

/** Writes PGDATA/postgresql.conf (whole-file replace, atomically). */
export async function writePostgresqlConf(pgdata: string, spec: ComputeSpec, opts: RenderConfOptions & { owner?: ServerUser } = {}): Promise<string> {
  const file = path.join(pgdata, 'postgresql.conf');
  await writeFileAtomic(file, renderPostgresqlConf(spec, opts), { mode: 0o600, owner: opts.owner });
  return file;
}

/**
 * Adds each line to `text` unless an identical line is already there (compute_ctl's line_in_file).
 * Returns the new text and the lines added.
 */
export function ensureLines(text: string, wanted: string[]): { text: string; added: string[] } {
  const present = new Set(text.split('\n').map((l) => l.replace(/\r$/, '')));
  const added = wanted.filter((line) => !present.has(line) && (present.add(line), true));
  if (added.length === 0) return { text, added };
  const base = text === '' || text.endsWith('\n') ? text : `${text}\n`;
  return { text: `${base}${added.join('\n')}\n`, added };
}

/**
 * `wanted` as the first lines of `text`, in order (moved there if they were further down); the
 * lines that were not in `text` at all are `added`.
 */
export function ensureLinesFirst(text: string, wanted: string[]): { text: string; added: string[] } {
  const lines = text === '' ? [] : text.replace(/\n$/, '').split('\n').map((l) => l.replace(/\r$/, ''));
  if (wanted.every((w, i) => lines[i] === w)) return { text, added: [] };
  const present = new Set(lines);
  const rest = lines.filter((l) => !wanted.includes(l));
  return { text: `${[...wanted, ...rest].join('\n')}\n`, added: wanted.filter((w) => !present.has(w)) };
}

/**
 * Makes sure pg_hba.conf lets clients in with a password: the storage backend's extra lines first
 * in the file (pg_hba is first-match, so they must precede every line of the base backup's own),
 * then compute_ctl's md5 line.
 */
export async function ensurePgHba(pgdata: string, opts: { extraLines?: string[]; owner?: ServerUser } = {}): Promise<{ added: string[] }> {
  for (const line of opts.extraLines ?? []) {
    if (/[\r\n\0]/.test(line)) throw new RangeError('a pg_hba.conf line must not contain line breaks');
  }
  const file = path.join(pgdata, 'pg_hba.conf');
  const current = (await readTextIfExists(file)) ?? '';
  const first = ensureLinesFirst(current, opts.extraLines ?? []);
  const { text, added } = ensureLines(first.text, [PG_HBA_ALL_MD5]);
  if (text !== current) await writeFileAtomic(file, text, { mode: 0o600, owner: opts.owner });
  return { added: [...first.added, ...added] };
}

/** standby.signal for Replica and Static computes (they run in hot standby); removed for a Primary. */
export async function ensureStandbySignal(pgdata: string, spec: Pick<ComputeSpec, 'mode'>, opts: { owner?: ServerUser } = {}): Promise<{ standby: boolean; changed: boolean }> {
  const file = path.join(pgdata, 'standby.signal');
  const present = await exists(file);
  const standby = spec.mode.kind !== 'Primary';
  if (standby && !present) {
    await writeFileAtomic(file, '', { mode: 0o600, owner: opts.owner });
    return { standby, changed: true };
  }
  if (!standby && present) {
    await unlink(file);
    return { standby, changed: true };
  }
  return { standby, changed: false };
}
