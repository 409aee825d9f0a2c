import { z } from 'zod';
import { UserFacingError } from './errors';
import { read, readableFile, type Env } from './env';

/** The codec server's settings (`durable-compute codec-server`); see client/codec-server.ts. */
export interface CodecServerConfig {
  /** A single bearer token callers may present. */
  token?: string;
  /** A file listing the accepted bearer tokens, one per line, read again when it changes (client/codec-auth.ts). */
  tokenFile?: string;
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

/** DURABLE_COMPUTE_CODEC_TOKEN or the token file DURABLE_COMPUTE_CODEC_TOKEN_FILE; DURABLE_COMPUTE_CODEC_ALLOWED_ORIGINS. */
export function loadCodecServerConfig(env: Env = process.env): CodecServerConfig {
  const token = read(env, 'DURABLE_COMPUTE_CODEC_TOKEN', z.string().regex(/^\S{16,}$/, 'expected one token of at least 16 characters without spaces'));
  const file = read(env, 'DURABLE_COMPUTE_CODEC_TOKEN_FILE', readableFile);
  if (token && file) throw new UserFacingError('Set DURABLE_COMPUTE_CODEC_TOKEN or DURABLE_COMPUTE_CODEC_TOKEN_FILE, not both');
  const origins = read(env, 'DURABLE_COMPUTE_CODEC_ALLOWED_ORIGINS', z.string());
  return {
    token,
    tokenFile: file,
    allowedOrigins: (origins ?? '')
      .split(',')
      .map((o) => o.trim())
      .filter(Boolean)
      .map((o) => read({ DURABLE_COMPUTE_CODEC_ALLOWED_ORIGINS: o }, 'DURABLE_COMPUTE_CODEC_ALLOWED_ORIGINS', origin)!.replace(/\/$/, '')),
  };
}
