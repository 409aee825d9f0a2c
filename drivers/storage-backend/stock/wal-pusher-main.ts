/**
 * The WAL pusher process (started detached by the stock storage backend):
 *   wal-pusher-main.ts --pgdata DIR --user ROLE --tenant-id ID --timeline-id ID --safekeepers h:p,h:p,h:p [--wait-for-postgres-ms MS]
 * With --wait-for-postgres-ms it was started beside a starting Postgres, and waits for the password file.
 * The storage auth token, if any, comes from NEON_AUTH_TOKEN (never on the command line); the
 * password of --user from PGDATA/wal_pusher.password, which it removes once read. Logs go
 * to stdout; status to PGDATA/wal_pusher.status. Exits 0 once Postgres stopped and its WAL is on a
 * quorum of safekeepers; SIGTERM stops it the same way.
 */
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import path from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import { maskSecrets } from '../../../common/errors';
import { isNeonId } from '../../../model/ids';
import { parseSafekeeperList } from './pg-conf';
import { livePusherPid, PUSHER_PASSWORD_FILE, writePidFile, writePusherStatus } from './pusher-files';
import { WalPusher } from './wal-pusher';

const program = new Command()
  .name('wal-pusher')
  .requiredOption('--pgdata <dir>', "the compute's data directory")
  .requiredOption('--user <role>', 'role to connect to Postgres as (needs REPLICATION; its password in PGDATA/wal_pusher.password)')
  .requiredOption('--tenant-id <id>', 'tenant ID')
  .requiredOption('--timeline-id <id>', 'timeline ID')
  .requiredOption('--safekeepers <list>', 'comma-separated host:port list')
  .option('--wait-for-postgres-ms <ms>', 'started beside a starting Postgres: wait this long for it to be ready (the worker then writes the password file)', (v) => {
    const ms = Number(v);
    if (!Number.isInteger(ms) || ms <= 0) throw new InvalidArgumentError('expected a positive number of milliseconds');
    return ms;
  })
  .parse();
const opts = program.opts<{ pgdata: string; user: string; tenantId: string; timelineId: string; safekeepers: string; waitForPostgresMs?: number }>();
const log = (line: string) => console.log(`${new Date().toISOString()} wal-pusher[${process.pid}] ${maskSecrets(line)}`);

/**
 * Started while Postgres starts: waits for the worker to set this role's password and write the
 * file (renamed into place whole). False if this pusher was superseded meanwhile (PGDATA wiped or
 * another pusher recorded): it then leaves quietly. Fails after `ms`.
 */
async function passwordArrives(file: string, ms: number): Promise<boolean> {
  writePusherStatus(opts.pgdata, { phase: 'awaiting-password' });
  const deadline = Date.now() + ms;
  for (;;) {
    if (existsSync(file)) return true;
    if (livePusherPid(opts.pgdata) !== process.pid) {
      log('superseded while waiting for the password (PGDATA wiped, or another pusher recorded): exiting');
      return false;
    }
    if (Date.now() > deadline) throw new Error(`no password in ${file} within ${ms} ms (did Postgres start?)`);
    await sleep(5);
  }
}

async function main(): Promise<void> {
  if (!isNeonId(opts.tenantId)) throw new Error(`--tenant-id ${JSON.stringify(opts.tenantId)} is not 32 lower-case hex characters`);
  if (!isNeonId(opts.timelineId)) throw new Error(`--timeline-id ${JSON.stringify(opts.timelineId)} is not 32 lower-case hex characters`);
  const other = livePusherPid(opts.pgdata);
  if (other !== undefined && other !== process.pid) throw new Error(`another WAL pusher (pid ${other}) already serves ${opts.pgdata}`);
  writePidFile(opts.pgdata, process.pid);
  // The token is this process's documented input (like NEON_AUTH_TOKEN for Neon's compute).
  const authToken = process.env.NEON_AUTH_TOKEN || undefined;
  // Read once and removed: it lives on only in this process's memory (reconnects reuse it).
  const passwordFile = path.join(opts.pgdata, PUSHER_PASSWORD_FILE);
  if (opts.waitForPostgresMs !== undefined && !(await passwordArrives(passwordFile, opts.waitForPostgresMs))) return;
  let password: string | undefined;
  try {
    password = readFileSync(passwordFile, 'utf8').trim() || undefined;
    rmSync(passwordFile, { force: true });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const pusher = new WalPusher({
    pgdata: opts.pgdata,
    user: opts.user,
    ...(password !== undefined ? { password } : {}),
    tenantId: opts.tenantId,
    timelineId: opts.timelineId,
    safekeepers: parseSafekeeperList(opts.safekeepers),
    ...(authToken !== undefined ? { authToken } : {}),
    log,
  });
  process.on('SIGTERM', () => {
    log('SIGTERM: stopping');
    pusher.requestStop();
  });
  process.on('SIGINT', () => pusher.requestStop());
  await pusher.run();
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    log(`failed: ${(err as Error).message}`);
    process.exit(1);
  },
);
