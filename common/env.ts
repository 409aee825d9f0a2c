import { existsSync, statSync } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { UserFacingError } from './errors';

/**
 * Reading one environment variable: validated, and an error names the variable; secret values
 * are never echoed back. common/config.ts is the one place that reads the process environment.
 */

export type Env = Record<string, string | undefined>;

const SECRET_VARIABLES = new Set([
  'TEMPORAL_API_KEY',
  'AWS_SECRET_ACCESS_KEY',
  'AWS_SESSION_TOKEN',
  'DURABLE_COMPUTE_PAYLOAD_KEY',
  'DURABLE_COMPUTE_PAYLOAD_KEY_FILE',
  'DURABLE_COMPUTE_PAYLOAD_PREVIOUS_KEYS',
  'STORAGE_AUTH_TOKEN',
  'DURABLE_COMPUTE_CODEC_TOKEN',
]);

export const hostPort = z
  .string()
  .regex(/^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):\d{1,5}$/, 'expected host:port')
  .refine((v) => {
    const port = Number(v.slice(v.lastIndexOf(':') + 1));
    return port > 0 && port < 65536;
  }, 'port must be 1-65535');
export const base64Key = z
  .string()
  .transform((v) => Buffer.from(v, 'base64'))
  .refine((b) => b.length === 32, 'expected 32 bytes of base64 (openssl rand -base64 32)');
export const booleanText = z
  .enum(['1', '0', 'true', 'false', 'yes', 'no', 'on', 'off'], { error: 'expected true or false' })
  .transform((v) => ['1', 'true', 'yes', 'on'].includes(v));
export const httpUrl = z.url({ protocol: /^https?$/, error: 'expected an http(s) URL' });
export const readableFile = z.string().refine((p) => existsSync(p) && statSync(p).isFile(), 'file does not exist');
export const absoluteDir = z
  .string()
  .refine((p) => path.isAbsolute(p), 'expected an absolute path')
  .refine((p) => existsSync(p) && statSync(p).isDirectory(), 'directory does not exist');

export function read<T>(env: Env, name: string, schema: z.ZodType<T>): T | undefined {
  const raw = env[name];
  if (raw === undefined || raw === '') return undefined;
  const parsed = schema.safeParse(raw.trim());
  if (!parsed.success) {
    const shown = SECRET_VARIABLES.has(name) ? '' : ` (got ${JSON.stringify(raw)})`;
    const reason = parsed.error.issues.map((i) => i.message).join('; ');
    throw new UserFacingError(`Invalid environment variable ${name}: ${reason}${shown}`);
  }
  return parsed.data;
}

export const positiveInt = (max: number) => z.coerce.number().int().min(1).max(max);
