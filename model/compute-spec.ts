/**
 * The compute spec: compute_ctl's JSON (a ComputeConfig `{spec, compute_ctl_config}` or a bare
 * ComputeSpec), validated and normalized. Pure code: workflows, activities and the HTTP layer all
 * parse with it, so a spec the workflow accepted is one the activities can act on.
 *
 * Normalization (so the rest of the code never re-derives anything):
 * - `mode` becomes `{kind: 'Primary'} | {kind: 'Static', lsn} | {kind: 'Replica'}`;
 * - `pageserver_connection_info` is always present (derived from the legacy comma-separated
 *   `pageserver_connstring` or the `neon.pageserver_connstring` setting when absent);
 * - `tenant_id`/`timeline_id` are always present, lower-case (falling back to the `neon.tenant_id`
 *   and `neon.timeline_id` settings as compute_ctl does), and `safekeeper_connstrings` falls back to
 *   the `neon.safekeepers` setting for a Primary;
 * - a bare 32-hex md5 password (compute_ctl's historical form) becomes `md5<hex>`, the form
 *   pg_authid stores, so comparing with the catalog is exact.
 * Unknown fields are dropped. Parsing is idempotent: parsing a parsed spec yields the same spec.
 */
import { compact, resolveSpec } from './compute-spec/resolve';
import { Problems, zodProblems } from './compute-spec/problems';
import type { ComputeCtlConfig, ComputeSpec, ComputeMode, ParseResult } from './compute-spec/types';
import { computeCtlConfigSchema, rawSpecSchema } from './compute-spec/wire-schema';

export type * from './compute-spec/types';
export { DATABASE_OPTIONS, lookupOption, ROLE_OPTIONS, type OptionKind } from './compute-spec/options';
export { pageserverLeaseTargets, pageserverLibpqUrls, shard0PageserverConnstring, type LeaseTarget } from './compute-spec/pageservers';
export { findSetting, libpqConnstringProblem } from './compute-spec/validators';
export { jwkSetSchema } from './compute-spec/wire-schema';

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * Parses compute_ctl's JSON: a ComputeConfig `{spec, compute_ctl_config}` (errors are prefixed
 * `spec.`) or a bare ComputeSpec. Every problem is reported as "field.path: problem".
 */
export function parseComputeConfig(json: unknown): ParseResult {
  if (!isPlainObject(json)) return { ok: false, errors: ['(root): expected a JSON object (a ComputeConfig or a ComputeSpec)'] };
  const wrapped = !('cluster' in json) && ('spec' in json || 'compute_ctl_config' in json);
  const problems = new Problems(wrapped ? ['spec'] : []);
  let ctlConfig: ComputeCtlConfig = { jwks: { keys: [] } };
  if (wrapped) {
    const ctl = computeCtlConfigSchema.safeParse(json.compute_ctl_config);
    if (!ctl.success) {
      const ctlProblems = new Problems(['compute_ctl_config']);
      zodProblems(ctl.error, ctlProblems);
      problems.list.push(...ctlProblems.list);
    } else if (ctl.data) {
      ctlConfig = compact({ jwks: ctl.data.jwks ?? { keys: [] }, tls: ctl.data.tls });
    }
    if (json.spec === undefined || json.spec === null) {
      problems.add([], 'required (the compute spec)');
      return { ok: false, errors: problems.list };
    }
  }
  const specJson = wrapped ? json.spec : json;
  if (!isPlainObject(specJson)) {
    problems.add([], 'expected a JSON object');
    return { ok: false, errors: problems.list };
  }
  const raw = rawSpecSchema.safeParse(specJson);
  if (!raw.success) {
    zodProblems(raw.error, problems);
    return { ok: false, errors: problems.list };
  }
  const spec = resolveSpec(raw.data, problems);
  if (!spec || problems.list.length > 0) return { ok: false, errors: problems.list };
  return { ok: true, config: { spec, compute_ctl_config: ctlConfig } };
}

/** Parses a bare spec or a ComputeConfig and returns only the spec. */
export function parseComputeSpec(json: unknown): { ok: true; spec: ComputeSpec } | { ok: false; errors: string[] } {
  const result = parseComputeConfig(json);
  return result.ok ? { ok: true, spec: result.config.spec } : result;
}

/** compute_ctl's neon.compute_mode value. */
export function computeModeName(mode: ComputeMode): 'primary' | 'static' | 'replica' {
  return mode.kind === 'Primary' ? 'primary' : mode.kind === 'Static' ? 'static' : 'replica';
}
