/** An error whose message is meant for a human operator: the CLI prints only its message. */
export class UserFacingError extends Error {
  override name = 'UserFacingError';
}

/** JSON fields (and JS object fields as util.inspect prints them) whose value is a secret. */
const SECRET_FIELD = '[A-Za-z_]*(?:password|passwd|token|secret|api_?key|secretAccessKey|sessionToken)[A-Za-z_]*';

/**
 * Replaces secrets in `text`: the password of every libpq URL or key=value conninfo, bearer tokens
 * and Authorization headers, JSON (or inspected object) fields named like a password, token,
 * secret or API key, and password hashes.
 */
export function maskSecrets(text: string): string {
  return text
    .replace(/(postgres(?:ql)?:\/\/[^:/@\s]*:)([^@\s]*)@/gi, '$1********@')
    .replace(/(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s]+)/gi, '$1********')
    .replace(/(["']?authorization["']?\s*[:=]\s*)("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[^\r\n,}]+)/gi, '$1********')
    .replace(/\b(bearer\s+)[A-Za-z0-9\-._~+/]+=*/gi, '$1********')
    .replace(new RegExp(`("${SECRET_FIELD}"\\s*:\\s*)"(?:[^"\\\\]|\\\\.)*"`, 'gi'), '$1"********"')
    .replace(new RegExp(`(\\b${SECRET_FIELD}\\s*:\\s*)'(?:[^'\\\\]|\\\\.)*'`, 'gi'), "$1'********'")
    .replace(/(SCRAM-SHA-256\$)[^\s'"]+/g, '$1********')
    .replace(/\bmd5[0-9a-f]{32}\b/g, 'md5********');
}
