import { execFile } from 'node:child_process';
import { access } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { childEnv } from '../../common/child-env';
import { nonRetryable } from '../../common/failures';
import { findSetting, type AuditLogLevel, type ComputeSpec } from '../../model/compute-spec';
import type { ConfSetting } from './config';
import { PostgresFailure } from './errors';

/**
 * The spec's `audit_log_level`, as compute_ctl handles it:
 * - `Log`/`Base`: pgaudit loaded (added to shared_preload_libraries), `pgaudit.log = 'ddl,role'`,
 *   catalog statements not logged; the audit lines go to the Postgres log. These settings come
 *   after the spec's own, so a spec cannot loosen them. Then `CREATE EXTENSION pgaudit` in the
 *   system database, and auditing switched off for that database (`ALTER DATABASE postgres SET
 *   pgaudit.log TO 'none'`: monitors and compute_ctl itself make noise there, and it holds no user data).
 * - `Hipaa`/`Extended`/`Full` (compliance levels): compute_ctl also loads pgauditlogtofile and
 *   forwards the audit files with rsyslog to AUDIT_LOGGING_ENDPOINT. That forwarding is not here,
 *   so a compute asked for them refuses to start rather than audit less than it was asked to.
 * When the compute's PostgreSQL lacks pgaudit, the start (or the configure) fails with an error
 * that names the missing extension and the package that brings it, before Postgres is touched.
 */

const ACTIVE_LEVELS: ReadonlySet<AuditLogLevel> = new Set(['Log', 'Base']);
const COMPLIANCE_LEVELS: ReadonlySet<AuditLogLevel> = new Set(['Hipaa', 'Extended', 'Full']);

/** Whether the spec turns on pgaudit (Log or Base). */
export function auditEnabled(spec: Pick<ComputeSpec, 'audit_log_level'>): boolean {
  return spec.audit_log_level !== undefined && ACTIVE_LEVELS.has(spec.audit_log_level);
}

/** The settings of the audit level, written after the spec's settings (none when auditing is off). */
export function auditSettings(spec: ComputeSpec): ConfSetting[] {
  if (!auditEnabled(spec)) return [];
  const libs = (findSetting(spec, 'shared_preload_libraries') ?? '')
    .split(',')
    .map((l) => l.trim())
    .filter(Boolean);
  if (!libs.includes('pgaudit')) libs.push('pgaudit');
  return [
    { name: 'pgaudit.log', value: 'ddl,role' },
    { name: 'pgaudit.log_catalog', value: false },
    { name: 'shared_preload_libraries', value: libs.join(',') },
  ];
}

/** Whether an extension (its control file and its library) is installed in the compute's PostgreSQL. */
export type ExtensionLookup = (name: string) => Promise<boolean>;

const execFileAsync = promisify(execFile);

/** Looks in the extension and library directories `pg_config` of `pgBinDir` names. */
export function installedExtensionLookup(pgBinDir: string): ExtensionLookup {
  let dirs: Promise<{ share: string; lib: string }> | undefined;
  return async (name) => {
    dirs ??= execFileAsync(path.join(pgBinDir, 'pg_config'), ['--sharedir', '--pkglibdir'], { env: childEnv(), timeout: 10_000 }).then(({ stdout }) => {
      const [share, lib] = stdout.trim().split('\n');
      return { share: share!.trim(), lib: lib!.trim() };
    });
    const { share, lib } = await dirs;
    const present = (file: string) => access(file).then(() => true, () => false);
    return (await present(path.join(share, 'extension', `${name}.control`))) && (await present(path.join(lib, `${name}.so`)));
  };
}

/**
 * Refuses (non-retryable, naming what is missing) an audit level this compute cannot honour: a
 * compliance level, or pgaudit not installed.
 */
export async function requireAuditSupport(spec: Pick<ComputeSpec, 'audit_log_level'>, lookup: ExtensionLookup): Promise<void> {
  const level = spec.audit_log_level;
  if (level === undefined || level === 'Disabled') return;
  if (COMPLIANCE_LEVELS.has(level)) {
    throw nonRetryable(
      PostgresFailure.AuditUnavailable,
      `audit_log_level ${level} is not supported by this compute: it needs compute_ctl's compliance audit logging (pgauditlogtofile, forwarded by rsyslog to AUDIT_LOGGING_ENDPOINT), which is not implemented here; Log and Base are`,
    );
  }
  if (!(await lookup('pgaudit'))) {
    throw nonRetryable(
      PostgresFailure.AuditUnavailable,
      `audit_log_level ${level} needs the pgaudit extension, which this compute's PostgreSQL does not have (no pgaudit.control and pgaudit.so): install it (Debian: apt-get install postgresql-15-pgaudit)`,
    );
  }
}
