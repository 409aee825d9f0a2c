import { maskSecrets } from '../../common/errors';

/**
 * Failure types the importer reports. Permanent ones are non-retryable: a wrong password or a
 * missing database does not fix itself, so retrying would only delay the error the user must see.
 */
export type ImporterFailureType =
  | 'SourceAuthenticationFailed'
  | 'SourceDatabaseMissing'
  | 'SourceRoleMissing'
  | 'SourcePermissionDenied'
  | 'SourceVersionUnsupported'
  | 'InvalidConnectionString'
  | 'MissingBinary'
  | 'ImportSpecMissing'
  | 'InvalidImportSpec'
  | 'DecryptionFailed'
  | 'KeyUnavailable'
  | 'RestoreFailed'
  | 'InvalidInput';

/** Known permanent conditions in libpq / pg_dump / pg_restore messages (LC_MESSAGES=C). */
const PERMANENT_PATTERNS: [RegExp, ImporterFailureType][] = [
  [/password authentication failed|no password supplied|authentication method requirement|SCRAM authentication requires|pg_hba\.conf rejects connection/i, 'SourceAuthenticationFailed'],
  [/database "[^"]*" does not exist/i, 'SourceDatabaseMissing'],
  [/role "[^"]*" does not exist/i, 'SourceRoleMissing'],
  [/permission denied|must be (?:superuser|owner)/i, 'SourcePermissionDenied'],
  [/server version mismatch|aborting because of server version mismatch|unsupported version \(/i, 'SourceVersionUnsupported'],
  [/invalid connection option|invalid URI|missing "=" after|unterminated quoted string in connection info|invalid integer value .* for connection option/i, 'InvalidConnectionString'],
];

export function classifyPgToolError(stderrText: string): ImporterFailureType | undefined {
  for (const [pattern, type] of PERMANENT_PATTERNS) if (pattern.test(stderrText)) return type;
  return undefined;
}

export function messageOf(err: unknown): string {
  return maskSecrets(err instanceof Error ? err.message : String(err));
}
