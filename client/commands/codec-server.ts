import { isIP } from 'node:net';
import type { Command } from 'commander';
import { encryptedDataConverter } from '../../common/codec/data-converter';
import { loadCodecServerConfig } from '../../common/config';
import { UserFacingError } from '../../common/errors';
import { readSecretFile } from '../../common/secret-file';
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
  devNoAuth?: boolean;
  maxBodyBytes?: string;
}

export function registerCodecServerCommand(program: Command): void {
  program
    .command('codec-server')
    .description("Temporal's remote codec endpoint (POST /decode, /encode) with the workers' payload keys, for the Web UI and `temporal --codec-endpoint`")
    .option('--listen <host:port>', 'address to listen on', CODEC_SERVER_LISTEN_DEFAULT)
    .option('--allow-origin <origins...>', "origins of the Web UIs whose pages may call it, e.g. https://temporal.example.com (env DURABLE_COMPUTE_CODEC_ALLOWED_ORIGINS, comma-separated)")
    .option('--token-file <file>', 'file holding the bearer token callers must present (env DURABLE_COMPUTE_CODEC_TOKEN_FILE or DURABLE_COMPUTE_CODEC_TOKEN)')
    .option('--dev-no-auth', 'development only: serve without a bearer token; refused unless listening on a loopback address')
    .option('--max-body-bytes <n>', `largest request body accepted (default ${CODEC_SERVER_MAX_BODY_BYTES_DEFAULT})`)
    .action(async (opts: CodecServerCliOptions) => {
      const m = /^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(opts.listen);
      if (!m || Number(m[2]) > 65535) throw new UserFacingError(`--listen must be host:port, got ${opts.listen}`);
      const host = m[1]!.replace(/^\[|\]$/g, '');
      const settings = loadCodecServerConfig();
      let token = settings.token;
      if (opts.tokenFile !== undefined) {
        try {
          token = readSecretFile(opts.tokenFile, '--token-file');
        } catch (err) {
          throw new UserFacingError((err as Error).message);
        }
      }
      if (opts.devNoAuth) {
        if (token !== undefined) throw new UserFacingError('--dev-no-auth and a bearer token contradict each other; drop one');
        if (!isLoopback(host)) throw new UserFacingError(`--dev-no-auth is only allowed on a loopback address (127.0.0.1, ::1, localhost), not ${host}`);
      } else if (token === undefined) {
        throw new UserFacingError(
          'The codec server decrypts every payload, so it demands an access token: set DURABLE_COMPUTE_CODEC_TOKEN_FILE ' +
            '(or DURABLE_COMPUTE_CODEC_TOKEN, or --token-file). Only a development server on loopback may run without one (--dev-no-auth).',
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
        token,
        allowedOrigins,
        maxBodyBytes,
        log: (line) => console.log(`${new Date().toISOString()} ${line}`),
      });
      if (allowedOrigins.length === 0) console.log('no --allow-origin: browsers (the Web UI) are refused; only non-browser clients such as `temporal --codec-endpoint` can call');
      console.log(`codec server ready on ${server.url} (${token === undefined ? 'no authentication: development only' : 'bearer token required'}; origins: ${allowedOrigins.join(', ') || 'none'})`);
      await new Promise<void>((resolve) => {
        process.once('SIGINT', resolve);
        process.once('SIGTERM', resolve);
      });
      await server.close();
    });
}
