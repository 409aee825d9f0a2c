/** Cross-field rules and normalization: from the raw (wire) spec to the ComputeSpec the code acts on. */
import { DATABASE_OPTIONS, lookupOption, optionValueProblem, ROLE_OPTIONS, type OptionKind } from './options';
import { pgbouncerSettingProblem } from './pgbouncer-settings';
import { resolvePageservers } from './pageservers';
import type { Path, Problems } from './problems';
import type { Cluster, ComputeMode, ComputeSpec, DeltaOp, GenericOption, Role } from './types';
import {
  BARE_MD5_HASH,
  CONTROL_OR_LINE_BREAK,
  endpointStorageAddrProblem,
  endpointStorageTokenProblem,
  CONTROL_PROBLEM,
  identifierProblem,
  MD5_HASH,
  NEON_ID,
  SAFEKEEPER_CONNSTRING,
  SCRAM_HASH,
  SETTING_NAME,
  SETTING_QUOTED,
  SETTING_TOKEN,
  settingValue,
} from './validators';
import type { RawSpec } from './wire-schema';

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

/** endpoint_storage_addr and endpoint_storage_token: both or neither, each well-formed. */
function checkEndpointStorage(raw: RawSpec, problems: Problems): void {
  const { endpoint_storage_addr: addr, endpoint_storage_token: token } = raw;
  if (addr !== undefined) {
    const problem = endpointStorageAddrProblem(addr);
    if (problem) problems.add(['endpoint_storage_addr'], problem);
  }
  if (token !== undefined) {
    const problem = endpointStorageTokenProblem(token);
    if (problem) problems.add(['endpoint_storage_token'], problem);
  }
  if (addr !== undefined && token === undefined) problems.add(['endpoint_storage_token'], 'required with endpoint_storage_addr (the cache state goes to endpoint storage with it)');
  if (token !== undefined && addr === undefined) problems.add(['endpoint_storage_addr'], 'required with endpoint_storage_token');
}

/** Drops undefined members so the parsed spec serializes (and re-parses) cleanly. */
export function compact<T extends object>(value: T): T {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as T;
}

export function resolveSpec(raw: RawSpec, problems: Problems): ComputeSpec | undefined {
  const before = problems.list.length;
  const mode = raw.mode;
  const pageservers = resolvePageservers(raw, problems);
  const tenantId = resolveId(raw, 'tenant_id', problems);
  const timelineId = resolveId(raw, 'timeline_id', problems);
  const safekeepers = resolveSafekeepers(raw, mode, problems);
  const cluster = checkCluster(raw, problems);
  const deltas = checkDeltas(raw, problems);
  checkEndpointStorage(raw, problems);
  for (const [name, value] of Object.entries(raw.pgbouncer_settings ?? {})) {
    const problem = pgbouncerSettingProblem(name, value);
    if (problem) problems.add(['pgbouncer_settings', name], problem);
  }
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
    audit_log_level: raw.audit_log_level,
    pgbouncer_settings: raw.pgbouncer_settings,
  });
}
