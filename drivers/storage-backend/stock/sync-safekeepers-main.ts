/**
 * `sync-safekeepers -D PGDATA` (PGDATA may also come from the environment, as for Neon's
 * `postgres --sync-safekeepers`). Reads neon.safekeepers, neon.tenant_id and neon.timeline_id from
 * PGDATA/postgresql.conf, makes a quorum of safekeepers agree and prints the LSN (X/Y) on stdout.
 * The storage auth token, if any, comes from NEON_AUTH_TOKEN as with Neon's compute_ctl. Progress
 * and errors go to stderr; the exit code is non-zero on failure: 3 when no safekeeper of a quorum
 * knows the timeline (a retry cannot help), 1 otherwise.
 */
import { maskSecrets } from '../../../common/errors';
import { isNeonId } from '../../../model/ids';
import { formatLsn } from '../../../model/lsn';
import { parseSafekeeperList, readPostgresConf } from './pg-conf';
import { syncSafekeepers, UNKNOWN_TIMELINE_EXIT_CODE, UnknownTimelineError } from './sync-safekeepers';

function pgdataFromArgs(argv: string[]): string | undefined {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '-D' || a === '--pgdata') return argv[i + 1];
    if (a.startsWith('--pgdata=')) return a.slice('--pgdata='.length);
    if (a.startsWith('-D') && a.length > 2) return a.slice(2);
  }
  return undefined;
}

async function main(): Promise<void> {
  // This executable's interface mirrors `postgres --sync-safekeepers`: PGDATA and NEON_AUTH_TOKEN
  // are its documented inputs when no -D is given.
  const pgdata = pgdataFromArgs(process.argv.slice(2)) ?? process.env.PGDATA;
  if (!pgdata) throw new Error('no data directory: pass -D <pgdata> or set PGDATA');
  const conf = readPostgresConf(pgdata);
  const setting = (name: string) => {
    const v = conf.get(name);
    if (v === undefined || v === '') throw new Error(`${name} is not set in ${pgdata}/postgresql.conf`);
    return v;
  };
  const tenantId = setting('neon.tenant_id');
  const timelineId = setting('neon.timeline_id');
  if (!isNeonId(tenantId)) throw new Error(`neon.tenant_id ${JSON.stringify(tenantId)} is not 32 lower-case hex characters`);
  if (!isNeonId(timelineId)) throw new Error(`neon.timeline_id ${JSON.stringify(timelineId)} is not 32 lower-case hex characters`);
  const safekeepers = parseSafekeeperList(setting('neon.safekeepers'));
  if (safekeepers.length === 0) throw new Error('neon.safekeepers lists no safekeepers');
  const authToken = process.env.NEON_AUTH_TOKEN || undefined;
  const lsn = await syncSafekeepers({
    safekeepers,
    tenantId,
    timelineId,
    applicationName: 'sync_safekeepers',
    ...(authToken !== undefined ? { authToken } : {}),
    log: (line) => process.stderr.write(`sync-safekeepers: ${maskSecrets(line)}\n`),
  });
  process.stdout.write(`${formatLsn(lsn)}\n`);
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`sync-safekeepers: error: ${maskSecrets((err as Error).message)}\n`);
    process.exit(err instanceof UnknownTimelineError ? UNKNOWN_TIMELINE_EXIT_CODE : 1);
  },
);
