import { isIP } from 'node:net';
import type { Command } from 'commander';
import { encryptedDataConverter } from '../../common/codec/data-converter';
import { loadCodecServerConfig } from '../../common/config';
import { UserFacingError } from '../../common/errors';
import { log } from '../../common/logger';
import { anyOf, fixedTokenAuth, jwtAuth, tokenFileAuth, type CodecAuth } from '../codec-auth';
import { CODEC_SERVER_MAX_BODY_BYTES_DEFAULT, startCodecServer } from '../codec-server';
import { cliConfig } from '../context';

export const CODEC_SERVER_LISTEN_DEFAULT = '127.0.0.1:8234';

function isLoopback(host: string): boolean {
  const bare = host.replace(/^\[|\]$/g, '');
  if (bare === 'localhost' || bare === '::1') return true;
  return isIP(bare) === 4 && bare.startsWith('127.');
}

interface CodecServerCliOptions {
  listen: string;
  allowOrigin?: string[];
  tokenFile?: string;
  jwksUrl?: string;
  jwtIssuer?: string;
  jwtAudience?: string;
  devNoAuth?: boolean;
  maxBodyBytes?: string;
}

export function registerCodecServerCommand(program: Command): void {
  program
    .command('codec-server')
    .description("Temporal's remote codec endpoint (POST /decode, /encode) with the workers' payload keys, for the Web UI and `temporal --codec-endpoint`")
    .option('--listen <host:port>', 'address to listen on', CODEC_SERVER_LISTEN_DEFAULT)
    .option('--allow-origin <origins...>', "origins of the Web UIs whose pages may call it, e.g. https://temporal.example.com (env DURABLE_COMPUTE_CODEC_ALLOWED_ORIGINS, comma-separated)")
    .option('--token-file <file>', 'file listing the accepted bearer tokens, one per line, read again when it changes (env DURABLE_COMPUTE_CODEC_TOKEN_FILE; one token: DURABLE_COMPUTE_CODEC_TOKEN)')
    .option('--jwks-url <url>', "accept JWT access tokens (the Web UI's, with pass access token) signed by a key of this JWKS, your identity provider's jwks_uri")
    .option('--jwt-issuer <iss>', 'the issuer (iss) those JWTs must carry; required with --jwks-url')
    .option('--jwt-audience <aud>', 'the audience (aud) those JWTs must carry; required with --jwks-url')
    .option('--dev-no-auth', 'development only: serve without a bearer token; refused unless listening on a loopback address')
    .option('--max-body-bytes <n>', `largest request body accepted (default ${CODEC_SERVER_MAX_BODY_BYTES_DEFAULT})`)
    .action(async (opts: CodecServerCliOptions) => {
      const m = /^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(opts.listen);
      if (!m || Number(m[2]) > 65535) throw new UserFacingError(`--listen must be host:port, got ${opts.listen}`);
      const host = m[1]!.replace(/^\[|\]$/g, '');
      const settings = loadCodecServerConfig();
      const say = (line: string) => log().info(line);
      const auth = codecAuth(opts, settings, say);
      if (opts.devNoAuth) {
        if (auth !== undefined) throw new UserFacingError('--dev-no-auth and bearer credentials contradict each other; drop one');
        if (!isLoopback(host)) throw new UserFacingError(`--dev-no-auth is only allowed on a loopback address (127.0.0.1, ::1, localhost), not ${host}`);
      } else if (auth === undefined) {
        throw new UserFacingError(
          'The codec server decrypts every payload, so it demands access tokens: set DURABLE_COMPUTE_CODEC_TOKEN_FILE ' +
            '(or --token-file, or DURABLE_COMPUTE_CODEC_TOKEN), or accept JWTs with --jwks-url. Only a development server on loopback may run without (--dev-no-auth).',
        );
      }
      let maxBodyBytes: number | undefined;
      if (opts.maxBodyBytes !== undefined) {
        maxBodyBytes = Number(opts.maxBodyBytes);
        if (!Number.isInteger(maxBodyBytes) || maxBodyBytes < 1024) throw new UserFacingError(`--max-body-bytes must be an integer of at least 1024, got ${opts.maxBodyBytes}`);
      }
      const allowedOrigins = [...settings.allowedOrigins];
      for (const o of opts.allowOrigin?.flatMap((v) => v.split(',')) ?? []) {
        try {
          allowedOrigins.push(...loadCodecServerConfig({ DURABLE_COMPUTE_CODEC_ALLOWED_ORIGINS: o }).allowedOrigins);
        } catch {
          throw new UserFacingError(`Invalid --allow-origin ${JSON.stringify(o)}: expected an origin such as https://temporal.example.com or http://127.0.0.1:8233 (scheme, host and port only)`);
        }
      }
      const codec = encryptedDataConverter(cliConfig().payloadKeys).payloadCodecs![0]!;
      const server = await startCodecServer({
        host,
        port: Number(m[2]),
        codec,
        auth,
        allowedOrigins,
        maxBodyBytes,
        log: say,
      });
      if (allowedOrigins.length === 0) say('no --allow-origin: browsers (the Web UI) are refused; only non-browser clients such as `temporal --codec-endpoint` can call');
      say(`codec server ready on ${server.url} (${auth === undefined ? 'no authentication: development only' : `accepting ${auth.description}`}; origins: ${allowedOrigins.join(', ') || 'none'})`);
      await new Promise<void>((resolve) => {
        process.once('SIGINT', resolve);
        process.once('SIGTERM', resolve);
      });
      await server.close();
    });
}

/** The credentials the options and environment name; undefined if none. */
function codecAuth(opts: CodecServerCliOptions, settings: ReturnType<typeof loadCodecServerConfig>, log: (line: string) => void): CodecAuth | undefined {
  const auths: CodecAuth[] = [];
  const tokenFile = opts.tokenFile ?? settings.tokenFile;
  if (opts.tokenFile !== undefined && settings.token !== undefined) throw new UserFacingError('--token-file and DURABLE_COMPUTE_CODEC_TOKEN contradict each other; drop one');
  if (tokenFile !== undefined) {
    try {
      auths.push(tokenFileAuth(tokenFile, log));
    } catch (err) {
      throw new UserFacingError((err as Error).message);
    }
  } else if (settings.token !== undefined) {
    auths.push(fixedTokenAuth(settings.token));
  }
  const jwt = [opts.jwksUrl, opts.jwtIssuer, opts.jwtAudience];
  if (jwt.some((v) => v !== undefined)) {
    if (jwt.some((v) => v === undefined)) throw new UserFacingError('--jwks-url, --jwt-issuer and --jwt-audience go together: JWTs are accepted only for one issuer and audience');
    let url: URL;
    try {
      url = new URL(opts.jwksUrl!);
    } catch {
      throw new UserFacingError(`--jwks-url must be a URL, got ${opts.jwksUrl}`);
    }
    const local = isLoopback(url.hostname);
    if (url.protocol !== 'https:' && !(url.protocol === 'http:' && local)) throw new UserFacingError(`--jwks-url must be https:// (plain http only on loopback), got ${url.href}`);
    auths.push(jwtAuth({ jwks: url, issuer: opts.jwtIssuer!, audience: opts.jwtAudience! }));
  }
  if (auths.length === 0) return undefined;
  return auths.length === 1 ? auths[0] : anyOf(auths);
}
