/**
 * compute_ctl's JWT check for its external API (compute_tools/src/http/middleware/authorize.rs):
 * EdDSA tokens verified against the compute's key set, then the claims decide.
 *
 * | condition                                   | answer |
 * | no `Authorization: Bearer` header           | 400    |
 * | signature or expiry fails with every key    | 401    |
 * | admin scope without audience `compute`      | 401    |
 * | no admin scope, compute_id missing or other | 403    |
 *
 * There is no loopback bypass: a request from 127.0.0.1 needs a token like any other.
 */
import { errors, importJWK, jwtVerify, type JWK, type JWTPayload } from 'jose';
import { HttpError } from './http-kit';

/** compute_ctl's ComputeClaimsScope::Admin. */
export const ADMIN_SCOPE = 'compute_ctl:admin';
/** compute_ctl's COMPUTE_AUDIENCE. */
export const COMPUTE_AUDIENCE = 'compute';

type VerifyKey = Awaited<ReturnType<typeof importJWK>>;

/** A key set imported once; each request is tried against every key in turn. */
export class ApiKeySet {
  private constructor(
    readonly size: number,
    private readonly keys: VerifyKey[],
  ) {}

  static async from(jwks: { keys: Record<string, unknown>[] }): Promise<ApiKeySet> {
    const keys = await Promise.all(jwks.keys.map((jwk) => importJWK({ ...(jwk as JWK), alg: 'EdDSA' }, 'EdDSA')));
    return new ApiKeySet(keys.length, keys);
  }

  /** Verifies the token's signature and expiry with the first key that accepts it. */
  async verify(token: string): Promise<JWTPayload> {
    let lastProblem = 'no key accepted it';
    for (const key of this.keys) {
      try {
        // `exp` is checked (compute_ctl does); `nbf` too, which compute_ctl's library skips.
        return (await jwtVerify(token, key, { algorithms: ['EdDSA'] })).payload;
      } catch (err) {
        if (err instanceof errors.JWTExpired) throw new HttpError(401, 'invalid authorization token: the token has expired');
        if (err instanceof errors.JOSEError) lastProblem = err.message;
        else throw err;
      }
    }
    throw new HttpError(401, `invalid authorization token: ${lastProblem}`);
  }
}

/** The token of an `Authorization: Bearer <token>` header; 400 when missing or malformed. */
export function bearerToken(header: string | undefined): string {
  const match = header === undefined ? null : /^Bearer ([A-Za-z0-9_.~+/=-]+)$/.exec(header.trim());
  if (!match) throw new HttpError(400, 'invalid authorization token: expected an `Authorization: Bearer <JWT>` header');
  return match[1]!;
}

/** Applies compute_ctl's claim rules to a verified token, for the compute `computeId`. */
export function checkClaims(claims: JWTPayload, computeId: string): void {
  if (claims.scope === ADMIN_SCOPE) {
    if (claims.aud === undefined) throw new HttpError(401, `missing audience in authorization token claims (an admin token needs aud ["${COMPUTE_AUDIENCE}"])`);
    const audiences = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
    if (!audiences.includes(COMPUTE_AUDIENCE)) throw new HttpError(401, `invalid audience in authorization token claims (expected "${COMPUTE_AUDIENCE}")`);
    return;
  }
  const claimed = (claims as { compute_id?: unknown }).compute_id;
  if (claimed === undefined || claimed === null) throw new HttpError(403, 'missing compute_id in authorization token claims');
  if (claimed !== computeId) throw new HttpError(403, `invalid compute ID in authorization token claims: the token is for another compute`);
}
