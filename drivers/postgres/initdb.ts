import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { childEnv } from '../../common/child-env';
import { maskSecrets } from '../../common/errors';
import { nonRetryable } from '../../common/failures';
import { PostgresFailure } from './errors';
import { assertExecutable } from './process';
import type { ServerUser } from './server-user';

const run = promisify(execFile);

export interface InitdbOptions {
  pgBinDir: string;
  /** An empty directory, e.g. from prepareFreshPgdata. */
  pgdata: string;
  /** The bootstrap superuser (compute_ctl's cloud_admin). */
  superuser: string;
  owner?: ServerUser;
  /** --auth for local and host connections; 'trust' suits a throwaway cluster only. */
  auth?: 'trust' | 'md5' | 'scram-sha-256';
  locale?: string;
}

/** Creates a new cluster in `pgdata` with initdb (no fsync: callers use it for scratch and tests). */
export async function runInitdb(opts: InitdbOptions): Promise<void> {
  const initdb = path.join(opts.pgBinDir, 'initdb');
  await assertExecutable(initdb);
  const args = ['-D', opts.pgdata, '-U', opts.superuser, '-A', opts.auth ?? 'trust', '--no-sync', '-E', 'UTF8', '--locale', opts.locale ?? 'C'];
  try {
    await run(initdb, args, {
      cwd: opts.pgdata,
      env: childEnv({ ...(opts.owner && { runAs: { user: opts.owner.name } }) }),
      timeout: 120_000,
      ...(opts.owner && { uid: opts.owner.uid, gid: opts.owner.gid }),
    });
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw nonRetryable(PostgresFailure.StartFailed, `initdb failed: ${maskSecrets((e.stderr ?? '').trim() || e.message)}`);
  }
}
