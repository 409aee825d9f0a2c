/**
 * Where the compute's pages come from: pageserver_connection_info, checked, or derived from the
 * legacy comma-separated pageserver_connstring or the neon.pageserver_connstring setting.
 */
import type { ComputeSpec, PageserverConnectionInfo } from './types';
import type { Path, Problems } from './problems';
import { CONTROL_OR_LINE_BREAK, libpqConnstringProblem, settingValue } from './validators';
import type { RawSpec } from './wire-schema';

function shardKey(shardNumber: number, shardCount: number): string {
  return `${shardNumber.toString(16).padStart(2, '0')}${shardCount.toString(16).padStart(2, '0')}`;
}

function checkPageserverInfo(info: PageserverConnectionInfo, problems: Problems): void {
  const base: Path = ['pageserver_connection_info'];
  const count = info.shard_count;
  const wanted = count === 0 ? 1 : count;
  if (count > 0 && info.stripe_size === undefined) {
    problems.add([...base, 'stripe_size'], `required for a sharded tenant (shard_count ${count})`);
  }
  for (const key of Object.keys(info.shards)) {
    if (!/^[0-9a-f]{4}$/.test(key)) {
      problems.add([...base, 'shards', key], 'shard index must be 4 lower-case hex digits (shard number, shard count)');
      continue;
    }
    const number = Number.parseInt(key.slice(0, 2), 16);
    const keyCount = Number.parseInt(key.slice(2), 16);
    if (keyCount !== count || number >= wanted) {
      problems.add([...base, 'shards', key], `not a shard of a tenant with shard_count ${count}`);
    }
  }
  for (let n = 0; n < wanted; n++) {
    const key = shardKey(n, count);
    const shard = info.shards[key];
    if (!shard) {
      problems.add([...base, 'shards'], `shard ${key} is missing`);
      continue;
    }
    if (shard.pageservers.length === 0) {
      problems.add([...base, 'shards', key, 'pageservers'], 'needs at least one pageserver');
      continue;
    }
    shard.pageservers.forEach((ps, i) => {
      const psPath: Path = [...base, 'shards', key, 'pageservers', i];
      if (ps.libpq_url !== undefined) {
        const problem = libpqConnstringProblem(ps.libpq_url);
        if (problem) problems.add([...psPath, 'libpq_url'], problem);
      }
      if (ps.grpc_url !== undefined && (!/^grpc:\/\/\S+$/.test(ps.grpc_url) || CONTROL_OR_LINE_BREAK.test(ps.grpc_url))) {
        problems.add([...psPath, 'grpc_url'], 'not a grpc:// URL');
      }
      if (ps.libpq_url === undefined && ps.grpc_url === undefined) problems.add(psPath, 'needs a libpq_url or a grpc_url');
    });
    // The base backup is fetched from the first pageserver of shard 0, over libpq.
    if (n === 0 && shard.pageservers[0]!.libpq_url === undefined) {
      problems.add([...base, 'shards', key, 'pageservers', 0, 'libpq_url'], 'required: the base backup is fetched over libpq');
    }
  }
}

/** compute_ctl's PageserverConnectionInfo::from_connstr: one URL = unsharded, several = sharded. */
function infoFromConnstring(
  connstring: string,
  stripeSize: number | undefined,
  path: Path,
  stripePath: Path,
  problems: Problems,
): PageserverConnectionInfo | undefined {
  const urls = connstring.split(',');
  let ok = true;
  urls.forEach((url, i) => {
    const problem = libpqConnstringProblem(url);
    if (problem) {
      problems.add(path, urls.length > 1 ? `entry ${i + 1}: ${problem}` : problem);
      ok = false;
    }
  });
  if (urls.length > 1 && stripeSize === undefined) {
    problems.add(stripePath, `${urls.length} pageservers (a sharded tenant) but no stripe size`);
    ok = false;
  }
  if (!ok) return undefined;
  if (urls.length === 1) {
    return { shard_count: 0, prefer_protocol: 'libpq', shards: { '0000': { pageservers: [{ libpq_url: urls[0]! }] } } };
  }
  const shards: PageserverConnectionInfo['shards'] = {};
  urls.forEach((url, n) => (shards[shardKey(n, urls.length)] = { pageservers: [{ libpq_url: url }] }));
  return { shard_count: urls.length, stripe_size: stripeSize, prefer_protocol: 'libpq', shards };
}


export function resolvePageservers(raw: RawSpec, problems: Problems): PageserverConnectionInfo | undefined {
  if (raw.pageserver_connection_info) {
    checkPageserverInfo(raw.pageserver_connection_info, problems);
    if (raw.pageserver_connstring !== undefined) {
      const problem = libpqConnstringProblem(raw.pageserver_connstring.split(',')[0] ?? '');
      if (problem) problems.add(['pageserver_connstring'], problem);
    }
    return raw.pageserver_connection_info;
  }
  if (raw.pageserver_connstring !== undefined) {
    return infoFromConnstring(raw.pageserver_connstring, raw.shard_stripe_size, ['pageserver_connstring'], ['shard_stripe_size'], problems);
  }
  const settings = raw.cluster.settings;
  const fromSetting = settingValue(settings, 'neon.pageserver_connstring');
  if (fromSetting !== undefined) {
    const index = settings!.findIndex((s) => s.name === 'neon.pageserver_connstring');
    const stripeText = settingValue(settings, 'neon.stripe_size');
    let stripe: number | undefined;
    if (stripeText !== undefined) {
      stripe = /^\d+$/.test(stripeText) ? Number(stripeText) : undefined;
      if (stripe === undefined || stripe <= 0) {
        const stripeIndex = settings!.findIndex((s) => s.name === 'neon.stripe_size');
        problems.add(['cluster', 'settings', stripeIndex, 'value'], 'neon.stripe_size must be a positive integer');
        return undefined;
      }
    }
    return infoFromConnstring(fromSetting, stripe, ['cluster', 'settings', index, 'value'], ['cluster', 'settings'], problems);
  }
  problems.add(
    ['pageserver_connection_info'],
    'no pageserver information (give pageserver_connection_info, pageserver_connstring or the neon.pageserver_connstring setting)',
  );
  return undefined;
}

/** The libpq URL of the first pageserver of shard 0: where the base backup comes from. */
export function shard0PageserverConnstring(spec: Pick<ComputeSpec, 'pageserver_connection_info'>): string {
  const info = spec.pageserver_connection_info;
  const url = info.shards[shardKey(0, info.shard_count)]?.pageservers[0]?.libpq_url;
  if (url === undefined) throw new RangeError('spec has no libpq URL for shard 0 (was it parsed with parseComputeConfig?)');
  return url;
}

/** The libpq URLs of the first pageserver of every shard in shard order, or undefined if any lacks one. */
export function pageserverLibpqUrls(spec: Pick<ComputeSpec, 'pageserver_connection_info'>): string[] | undefined {
  const info = spec.pageserver_connection_info;
  const urls: string[] = [];
  for (let n = 0; n < Math.max(1, info.shard_count); n++) {
    const url = info.shards[shardKey(n, info.shard_count)]?.pageservers[0]?.libpq_url;
    if (url === undefined) return undefined;
    urls.push(url);
  }
  return urls;
}

/** Where an LSN lease is taken: one pageserver of one shard, named as the page service names the shard. */
export interface LeaseTarget {
  /** `<tenant>` for an unsharded tenant, `<tenant>-<shard number><shard count>` (hex) for a shard. */
  tenantShardId: string;
  libpqUrl: string;
}

/** Every pageserver of every shard that speaks libpq: compute_ctl leases the LSN on each of them. */
export function pageserverLeaseTargets(spec: Pick<ComputeSpec, 'pageserver_connection_info' | 'tenant_id'>): LeaseTarget[] {
  const info = spec.pageserver_connection_info;
  const targets: LeaseTarget[] = [];
  for (let n = 0; n < Math.max(1, info.shard_count); n++) {
    const key = shardKey(n, info.shard_count);
    const tenantShardId = info.shard_count === 0 ? spec.tenant_id : `${spec.tenant_id}-${key}`;
    for (const ps of info.shards[key]?.pageservers ?? []) if (ps.libpq_url !== undefined) targets.push({ tenantShardId, libpqUrl: ps.libpq_url });
  }
  return targets;
}
