import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { bearerTokenMatches } from '../common/bearer-token';
import { createRemoteJWKSet, jwtVerify, type JWTVerifyGetKey } from 'jose';

/**
 * Who may call the codec server. Two kinds of callers reach it, so two kinds of credentials:
 *
 * - Operators in the Web UI. With "pass access token" the UI sends the OIDC access token of the
 *   user signed in to it: a JWT from the identity provider, verified here against the provider's
 *   JWKS, issuer and audience. Nobody hands out codec tokens to people; removing a user from the
 *   provider (or the UI's audience) ends their access when their short-lived token expires.
 * - Scripts and the Temporal CLI (`--codec-auth`). Each gets its own opaque token, listed one per
 *   line in a token file. The file is read again whenever it changes, so adding a caller or
 *   revoking one (deleting its line) takes effect on the next request, without a restart.
 *
 * A request passes if either accepts its bearer credential.
 */
export interface CodecAuth {
  /** True if the Authorization header carries a credential this server accepts. */
  accepts(authorization: string | undefined): Promise<boolean>;
  /** What it accepts, for the startup line (never a token). */
  readonly description: string;
}

/** One token of the token file: at least 16 characters, no whitespace. */
const TOKEN = /^\S{16,}$/;

function bearer(authorization: string | undefined): string | undefined {
  return /^Bearer\s+(\S+)$/i.exec(authorization ?? '')?.[1];
}

const digest = (token: string): Buffer => createHash('sha256').update(token).digest();

/** The tokens of a token file: one per line; blank lines and `#` comments are ignored. Errors name the line, never its content. */
export function parseTokenFile(text: string, file: string): Buffer[] {
  const tokens: Buffer[] = [];
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    if (!TOKEN.test(line)) throw new Error(`line ${i + 1} of the codec token file ${file} is not one token of at least 16 characters without spaces`);
    tokens.push(digest(line));
  });
  if (tokens.length === 0) throw new Error(`the codec token file ${file} lists no token`);
  return tokens;
}

/**
 * The tokens listed in `file`, read again when its inode, size or modification time change (an
 * editor's save, an `mv` of a new version, a config-management rewrite). A file that becomes
 * unreadable or invalid refuses every token until it is fixed: failing closed is the only safe
 * reading of a revocation list that cannot be read.
 */
export function tokenFileAuth(file: string, log: (line: string) => void = () => {}): CodecAuth {
  let version = '';
  let tokens: Buffer[] = [];
  /** Reads the file again if it changed; returns why it holds no token, if it does not. */
  const load = (): string | undefined => {
    let current: string;
    try {
      const s = statSync(file);
      current = `${s.ino}:${s.size}:${s.mtimeMs}:${s.ctimeMs}`;
    } catch (err) {
      const problem = `codec token file ${file} cannot be read (${(err as NodeJS.ErrnoException).code})`;
      if (version !== 'missing') log(`${problem}: refusing every token until it is back`);
      version = 'missing';
      tokens = [];
      return problem;
    }
    if (current === version) return undefined;
    version = current;
    try {
      tokens = parseTokenFile(readFileSync(file, 'utf8'), file);
      log(`codec token file ${file} loaded: ${tokens.length} token(s)`);
      return undefined;
    } catch (err) {
      tokens = [];
      log(`${(err as Error).message}: refusing every token until it is fixed`);
      return (err as Error).message;
    }
  };
  const problem = load();
  if (problem !== undefined) throw new Error(problem);
  return {
    description: `tokens listed in ${file}`,
    accepts: async (authorization) => {
      const presented = bearer(authorization);
      if (presented === undefined) return false;
      load();
      const d = digest(presented);
      // Every entry is compared, in constant time, so the answer's timing says nothing about which matched.
      let match = false;
      for (const t of tokens) match = timingSafeEqual(t, d) || match;
      return match;
    },
  };
}

export interface JwtAuthOptions {
  /** The identity provider's JWKS (its `jwks_uri`), or a key set given directly (tests, air-gapped setups). */
  jwks: URL | JWTVerifyGetKey;
  /** The `iss` the tokens must carry. */
  issuer: string;
  /** The `aud` the tokens must carry (the Web UI's client or API audience). */
  audience: string;
}

/** Access tokens (JWTs) signed by a key of the identity provider's JWKS, for the given issuer and audience, not expired. */
export function jwtAuth(opts: JwtAuthOptions): CodecAuth {
  // jose caches the key set and fetches it again for an unknown key ID (a rotation), at most every 30 s.
  const keys = opts.jwks instanceof URL ? createRemoteJWKSet(opts.jwks) : opts.jwks;
  return {
    description: `JWTs from ${opts.issuer} for audience ${opts.audience}`,
    accepts: async (authorization) => {
      const presented = bearer(authorization);
      if (presented === undefined || presented.split('.').length !== 3) return false;
      try {
        await jwtVerify(presented, keys, { issuer: opts.issuer, audience: opts.audience, clockTolerance: 5 });
        return true;
      } catch {
        return false;
      }
    },
  };
}

/** Accepts what any of `auths` accepts. */
export function anyOf(auths: CodecAuth[]): CodecAuth {
  return {
    description: auths.map((a) => a.description).join(' or '),
    accepts: async (authorization) => {
      for (const a of auths) if (await a.accepts(authorization)) return true;
      return false;
    },
  };
}

/** A single fixed token (DURABLE_COMPUTE_CODEC_TOKEN). */
export function fixedTokenAuth(token: string): CodecAuth {
  return { description: 'one fixed token', accepts: async (authorization) => bearerTokenMatches(authorization, token) };
}
