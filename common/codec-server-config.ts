import { z } from 'zod';
import { UserFacingError } from './errors';
import { read, readableFile, type Env } from './env';
import { readSecretFile } from './secret-file';

/** The codec server's settings (`durable-compute codec-server`); see client/codec-server.ts. */
export interface CodecServerConfig {
  /** The bearer token callers must present; absent only where the dev-only loopback switch is used. */
  token?: string;
  /** Origins (scheme://host[:port]) of the Web UIs allowed to call it. */
  allowedOrigins: string[];
}

const origin = z.string().refine((v) => {
  try {
    const u = new URL(v);
    return (u.protocol === 'http:' || u.protocol === 'https:') && u.origin === v.replace(/\/$/, '');
  } catch {
    return false;
  }
}, 'expected origins like https://temporal-ui.example.com or http://127.0.0.1:8233 (scheme, host and port only)');

/** DURABLE_COMPUTE_CODEC_TOKEN or the file DURABLE_COMPUTE_CODEC_TOKEN_FILE names; DURABLE_COMPUTE_CODEC_ALLOWED_ORIGINS. */
export function loadCodecServerConfig(env: Env = process.env): CodecServerConfig {
  const token = read(env, 'DURABLE_COMPUTE_CODEC_TOKEN', z.string().regex(/^\S{16,}$/, 'expected one token of at least 16 characters without spaces'));
  const file = read(env, 'DURABLE_COMPUTE_CODEC_TOKEN_FILE', readableFile);
  if (token && file) throw new UserFacingError('Set DURABLE_COMPUTE_CODEC_TOKEN or DURABLE_COMPUTE_CODEC_TOKEN_FILE, not both');
  let fromFile: string | undefined;
  if (file) {
    try {
      fromFile = readSecretFile(file, 'codec server token');
      if (fromFile.length < 16) throw new Error(`the codec server token in ${file} is shorter than 16 characters`);
    } catch (err) {
      throw new UserFacingError(`Invalid DURABLE_COMPUTE_CODEC_TOKEN_FILE: ${(err as Error).message}`);
    }
  }
  const origins = read(env, 'DURABLE_COMPUTE_CODEC_ALLOWED_ORIGINS', z.string());
  return {
    token: token ?? fromFile,
    allowedOrigins: (origins ?? '')
      .split(',')
      .map((o) => o.trim())
      .filter(Boolean)
      .map((o) => read({ DURABLE_COMPUTE_CODEC_ALLOWED_ORIGINS: o }, 'DURABLE_COMPUTE_CODEC_ALLOWED_ORIGINS', origin)!.replace(/\/$/, '')),
  };
}
