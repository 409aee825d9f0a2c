/** The raw (wire) schema: types only; the rules that span fields live in resolve.ts. */
import { z } from 'zod';
import { isLsn } from '../lsn';
import { AUDIT_LOG_LEVELS, type ComputeMode } from './types';
import { confText, plainText } from './validators';

/** Rust's Option<T>: the field may be missing or null; both become undefined. */
function optional<T extends z.ZodType>(schema: T) {
  return schema.nullish().transform((v) => (v === null ? undefined : v) as z.output<T> | undefined);
}

const int = z.number().int();
const nonNegativeInt = z.number().int().nonnegative();

const genericOptionSchema = z.object({
  name: z.string(),
  value: optional(z.string()),
  vartype: z.string(),
});
const genericOptionsSchema = optional(z.array(genericOptionSchema));

const roleSchema = z.object({
  name: z.string(),
  encrypted_password: optional(z.string()),
  options: genericOptionsSchema,
});

const databaseSchema = z.object({
  name: z.string(),
  owner: z.string(),
  options: genericOptionsSchema,
});

const clusterSchema = z.object({
  cluster_id: optional(z.string()),
  name: optional(z.string()),
  state: optional(z.string()),
  roles: optional(z.array(roleSchema)),
  databases: optional(z.array(databaseSchema)),
  postgresql_conf: optional(z.string()),
  settings: genericOptionsSchema,
});

const deltaOpSchema = z.object({
  action: z.enum(['delete_db', 'rename_db', 'delete_role', 'rename_role'], {
    error: 'must be one of delete_db, rename_db, delete_role, rename_role',
  }),
  name: z.string(),
  new_name: optional(z.string()),
});

const lsnText = z.string().refine(isLsn, 'not an LSN (expected X/Y in hex, e.g. 0/16B5A50)');

/** compute_ctl's externally tagged enum, plus our own normalized form so parsing is idempotent. */
const modeSchema = z
  .union(
    [
      z.literal('Primary'),
      z.literal('Replica'),
      z.object({ Static: lsnText }).strict(),
      z.object({ kind: z.literal('Primary') }),
      z.object({ kind: z.literal('Replica') }),
      z.object({ kind: z.literal('Static'), lsn: lsnText }),
    ],
    { error: 'must be "Primary", "Replica" or {"Static": "X/Y"}' },
  )
  .optional()
  .transform((m): ComputeMode => {
    if (m === undefined || m === 'Primary') return { kind: 'Primary' };
    if (m === 'Replica') return { kind: 'Replica' };
    if ('Static' in m) return { kind: 'Static', lsn: m.Static.toUpperCase() };
    if (m.kind === 'Static') return { kind: 'Static', lsn: m.lsn.toUpperCase() };
    return { kind: m.kind };
  });

const pageserverConnectionInfoSchema = z.object({
  shard_count: nonNegativeInt.max(255),
  stripe_size: optional(z.number().int().positive()),
  prefer_protocol: optional(z.enum(['libpq', 'grpc'], { error: 'must be "libpq" or "grpc"' })).transform((p) => p ?? 'libpq'),
  shards: z.record(
    z.string(),
    z.object({
      pageservers: z.array(
        z.object({
          id: optional(nonNegativeInt),
          libpq_url: optional(z.string()),
          grpc_url: optional(z.string()),
        }),
      ),
    }),
  ),
});

export const rawSpecSchema = z.object({
  format_version: z.number(),
  operation_uuid: optional(z.string()),
  features: optional(z.array(z.string())),
  suspend_timeout_seconds: int,
  mode: modeSchema,
  tenant_id: optional(z.string()),
  timeline_id: optional(z.string()),
  pageserver_connection_info: optional(pageserverConnectionInfoSchema),
  pageserver_connstring: optional(z.string()),
  shard_stripe_size: optional(z.number().int().positive()),
  safekeeper_connstrings: optional(z.array(z.string())),
  safekeepers_generation: optional(nonNegativeInt.max(0xffffffff)),
  storage_auth_token: optional(z.string()),
  skip_pg_catalog_updates: optional(z.boolean()),
  drop_subscriptions_before_start: optional(z.boolean()),
  reconfigure_concurrency: optional(z.number().int().positive()),
  cluster: clusterSchema,
  delta_operations: optional(z.array(deltaOpSchema)),
  endpoint_id: optional(confText),
  project_id: optional(confText),
  branch_id: optional(confText),
  compute_id: optional(plainText),
  autoprewarm: optional(z.boolean()),
  offload_lfc_interval_seconds: optional(z.number().int().positive()),
  endpoint_storage_addr: optional(z.string()),
  endpoint_storage_token: optional(z.string()),
  pgbouncer_settings: optional(z.record(z.string(), z.string())),
  audit_log_level: optional(z.enum(AUDIT_LOG_LEVELS, { error: `must be one of ${AUDIT_LOG_LEVELS.map((l) => JSON.stringify(l)).join(', ')}` })),
});
export type RawSpec = z.output<typeof rawSpecSchema>;

/**
 * A public Ed25519 key (RFC 8037) that may sign requests to the compute's external API. compute_ctl
 * verifies with EdDSA; a private key (`d`) in a spec would put a signing secret into workflow
 * history, so it is refused.
 */
const ed25519PublicJwkSchema = z
  .object({
    kty: z.literal('OKP', { error: 'must be "OKP" (an Ed25519 key)' }),
    crv: z.literal('Ed25519', { error: 'must be "Ed25519"' }),
    x: z.string().regex(/^[A-Za-z0-9_-]{43}$/, 'must be the 32-byte public key in base64url (43 characters)'),
    kid: optional(z.string().max(256)),
    alg: optional(z.enum(['EdDSA', 'Ed25519'], { error: 'must be "EdDSA" or "Ed25519"' })),
    use: optional(z.literal('sig', { error: 'must be "sig"' })),
    d: z.undefined({ error: 'a private key has no place in a spec: give only the public part' }).optional(),
  })
  .loose();

/** The keys of compute_ctl_config.jwks, checked as compute_ctl's external API will use them. */
export const jwkSetSchema = z.object({ keys: z.array(ed25519PublicJwkSchema) });

export const computeCtlConfigSchema = optional(
  z.object({
    jwks: optional(jwkSetSchema),
    tls: z.unknown().optional(),
  }),
);
