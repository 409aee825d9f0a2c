import { createHash, timingSafeEqual } from 'node:crypto';

/**
 * True if an Authorization header carries `Bearer <token>`. Compares digests in constant time, so
 * neither the token's content nor its length leaks through the response time.
 */
export function bearerTokenMatches(header: string | undefined, token: string): boolean {
  const m = /^Bearer\s+(\S+)$/i.exec(header ?? '');
  if (!m) return false;
  return timingSafeEqual(createHash('sha256').update(m[1]!).digest(), createHash('sha256').update(token).digest());
}
