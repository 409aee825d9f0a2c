/** An error whose message is meant for a human operator: the CLI prints only its message. */
export class UserFacingError extends Error {
  override name = 'UserFacingError';
}

/** Replaces the password part of every libpq URL or key=value conninfo in `text`. */
export function maskSecrets(text: string): string {
  return text
    .replace(/(postgres(?:ql)?:\/\/[^:/@\s]*:)([^@\s]*)@/gi, '$1********@')
    .replace(/(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s]+)/gi, '$1********')
    .replace(/(SCRAM-SHA-256\$)[^\s'"]+/g, '$1********')
    .replace(/\bmd5[0-9a-f]{32}\b/g, 'md5********');
}
