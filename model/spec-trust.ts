import type { ComputeSpec, GenericOption } from './compute-spec';
import { lookupOption, ROLE_OPTIONS } from './compute-spec';

/**
 * Which spec fields give whoever writes the spec superuser-level power over the compute (run
 * shell commands as the postgres OS user, load arbitrary code into Postgres, read or write any
 * file it can). With DURABLE_COMPUTE_SPEC_TRUST=restricted the client and the control-plane
 * worker refuse specs that use them, naming the field. Pure and deterministic: the workflow
 * sandbox runs it too.
 */
export type SpecTrust = 'full' | 'restricted';
export const SPEC_TRUST_LEVELS: readonly SpecTrust[] = ['full', 'restricted'];

/**
 * Settings (case-insensitive, as Postgres compares them) that run shell commands, load shared
 * libraries, include other files or move where Postgres reads its configuration and writes files.
 */
export const PRIVILEGED_SETTINGS: Readonly<Record<string, string>> = {
  include: 'reads another configuration file',
  include_dir: 'reads other configuration files',
  include_if_exists: 'reads another configuration file',
  shared_preload_libraries: 'loads shared libraries into every backend',
  local_preload_libraries: 'loads shared libraries at connection start',
  session_preload_libraries: 'loads shared libraries at connection start',
  dynamic_library_path: 'chooses where libraries are loaded from',
  jit_provider: 'loads a shared library',
  archive_command: 'runs a shell command',
  archive_library: 'loads a shared library',
  restore_command: 'runs a shell command',
  archive_cleanup_command: 'runs a shell command',
  recovery_end_command: 'runs a shell command',
  ssl_passphrase_command: 'runs a shell command',
  data_directory: 'moves the data directory',
  config_file: 'moves the configuration file',
  hba_file: 'replaces the client authentication rules',
  ident_file: 'replaces the user name maps',
  external_pid_file: 'writes a file anywhere the postgres user can',
  log_directory: 'writes files anywhere the postgres user can',
  log_filename: 'writes files anywhere the postgres user can',
  unix_socket_directories: 'moves where Postgres listens',
  unix_socket_group: 'opens the socket to another OS group',
  unix_socket_permissions: 'opens the socket to other OS users',
};

/**
 * pgbouncer settings (pgbouncer_settings) that open pgbouncer to anyone, hand out its admin
 * console, or make pgbouncer (root-started in a VM) read or write files of the spec writer's choosing.
 */
export const PRIVILEGED_PGBOUNCER_SETTINGS: Readonly<Record<string, string>> = {
  auth_type: 'can turn off password checks (trust)',
  auth_file: 'replaces the passwords pgbouncer checks',
  auth_hba_file: 'replaces the client authentication rules',
  auth_ident_file: 'replaces the user name maps',
  auth_user: 'chooses the role whose query looks up passwords',
  auth_query: 'replaces the password lookup query',
  auth_dbname: 'chooses the database of the password lookup',
  admin_users: 'hands out pgbouncer\'s admin console',
  stats_users: 'hands out pgbouncer\'s statistics console',
  conffile: 'makes pgbouncer read another configuration file',
  logfile: 'writes a file anywhere pgbouncer can',
  pidfile: 'writes a file anywhere pgbouncer can',
  user: 'changes the OS user pgbouncer runs as',
  unix_socket_dir: 'moves where pgbouncer listens',
  unix_socket_mode: 'opens the socket to other OS users',
  unix_socket_group: 'opens the socket to another OS group',
  resolv_conf: 'makes pgbouncer read another file',
  client_tls_key_file: 'makes pgbouncer read another file',
  client_tls_cert_file: 'makes pgbouncer read another file',
  client_tls_ca_file: 'makes pgbouncer read another file',
  server_tls_key_file: 'makes pgbouncer read another file',
  server_tls_cert_file: 'makes pgbouncer read another file',
  server_tls_ca_file: 'makes pgbouncer read another file',
};

/**
 * Role options that are superuser or can become it. CREATEROLE counts: on PostgreSQL 15 a
 * CREATEROLE role can grant itself pg_execute_server_program (COPY ... PROGRAM runs shell commands).
 */
export const PRIVILEGED_ROLE_OPTIONS: Readonly<Record<string, string>> = {
  SUPERUSER: 'makes a superuser',
  REPLICATION: 'may stream all data and create replication slots',
  CREATEROLE: 'can grant itself pg_execute_server_program (shell commands) on PostgreSQL 15',
  BYPASSRLS: 'bypasses every row-level security policy',
};

function privilegedRoleOption(opt: GenericOption): string | undefined {
  const entry = lookupOption(ROLE_OPTIONS, opt.name);
  return entry ? PRIVILEGED_ROLE_OPTIONS[entry.name] : undefined;
}

/** Every privileged field of `spec`, as "field.path: why"; empty when the spec is unprivileged. */
export function privilegedSpecFields(spec: Pick<ComputeSpec, 'cluster' | 'pgbouncer_settings'>): string[] {
  const found: string[] = [];
  if (spec.cluster.postgresql_conf !== undefined && spec.cluster.postgresql_conf.trim() !== '') {
    found.push('cluster.postgresql_conf: copied into postgresql.conf verbatim (any setting, including include and shell commands)');
  }
  spec.cluster.settings?.forEach((s, i) => {
    const why = PRIVILEGED_SETTINGS[s.name.toLowerCase()];
    if (why) found.push(`cluster.settings[${i}] (${s.name}): ${why}`);
  });
  spec.cluster.roles.forEach((role, i) => {
    role.options?.forEach((opt, j) => {
      const why = privilegedRoleOption(opt);
      if (why) found.push(`cluster.roles[${i}].options[${j}] (${opt.name.trim().toUpperCase()} for role ${JSON.stringify(role.name)}): ${why}`);
    });
  });
  for (const name of Object.keys(spec.pgbouncer_settings ?? {})) {
    const why = PRIVILEGED_PGBOUNCER_SETTINGS[name];
    if (why) found.push(`pgbouncer_settings.${name}: ${why}`);
  }
  return found;
}

/** The error for a spec refused under restricted trust, naming each field; undefined if allowed. */
export function specTrustProblem(spec: Pick<ComputeSpec, 'cluster' | 'pgbouncer_settings'>, trust: SpecTrust): string | undefined {
  if (trust === 'full') return undefined;
  const fields = privilegedSpecFields(spec);
  if (fields.length === 0) return undefined;
  return `spec refused: DURABLE_COMPUTE_SPEC_TRUST=restricted forbids fields that give superuser-level power: ${fields.join('; ')}`;
}
