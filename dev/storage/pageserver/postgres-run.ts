/**
 * Runs the PostgreSQL binaries the pageserver needs (initdb, and postgres for WAL replay) as the
 * unprivileged PostgreSQL user when this process is root, with argument arrays only.
 */
import { pgServerChildEnv } from '../../../common/child-env';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, promises as fsp, statSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { pgBin, type PgInstallation } from '../../../common/pg-binaries';
import { pgSpawnIdentity, postgresIdentity } from '../../../common/pg-identity';

const execFileAsync = promisify(execFile);

export class PostgresRunError extends Error {
  override name = 'PostgresRunError';
}

async function tail(file: string, lines = 25): Promise<string> {
  const text = await fsp.readFile(file, 'utf8').catch(() => '');
  return text.trimEnd().split('\n').slice(-lines).join('\n');
}

/** A fresh cluster: superuser cloud_admin, UTF8, locale C.UTF-8 (C where that locale is missing). */
export async function runInitdb(install: PgInstallation, pgdata: string): Promise<void> {
  const base = ['-D', pgdata, '-U', 'cloud_admin', '-E', 'UTF8', '--auth-local=trust', '--auth-host=md5', '--no-instructions', '--no-sync'];
  const env = pgServerChildEnv({ LC_ALL: 'C', LANG: 'C' });
  const opts = { ...pgSpawnIdentity(), env, timeout: 120_000, maxBuffer: 4 * 1024 * 1024 };
  try {
    await execFileAsync(pgBin(install, 'initdb'), [...base, '--locale=C.UTF-8'], opts);
  } catch (first) {
    const message = String((first as { stderr?: string }).stderr ?? (first as Error).message);
    if (!/locale/i.test(message)) throw new PostgresRunError(`initdb failed: ${message.trim()}`);
    await fsp.rm(pgdata, { recursive: true, force: true });
    try {
      await execFileAsync(pgBin(install, 'initdb'), [...base, '--locale=C'], opts);
    } catch (second) {
      throw new PostgresRunError(`initdb failed: ${String((second as { stderr?: string }).stderr ?? (second as Error).message).trim()}`);
    }
  }
}

/**
 * When this process is root, PostgreSQL runs as an unprivileged user that must be able to
 * traverse every directory above the data directory. Returns why it cannot reach `dir`, if so.
 */
export function postgresCannotReach(dir: string): string | undefined {
  const id = postgresIdentity();
  if (!id) return undefined;
  for (let p = path.resolve(dir); ; p = path.dirname(p)) {
    const st = statSync(p);
    const bit = st.uid === id.uid ? 0o100 : st.gid === id.gid ? 0o010 : 0o001;
    if ((st.mode & bit) === 0) {
      return `PostgreSQL runs as user ${id.user}, which cannot enter ${p} (mode ${(st.mode & 0o777).toString(8)}, owner uid ${st.uid})`;
    }
    if (p === path.dirname(p)) return undefined;
  }
}

const running = new Set<ChildProcess>();

/**
 * Starts `postgres -D pgdata` and waits for it to exit by itself (the materializer configures a
 * recovery target with action 'shutdown'). Fails with the log's tail on a non-zero exit or after
 * `timeoutMs` (the server is then stopped with an immediate shutdown).
 */
export async function runPostgresToExit(install: PgInstallation, pgdata: string, logFile: string, timeoutMs: number): Promise<void> {
  const fd = openSync(logFile, 'a', 0o644);
  let child: ChildProcess;
  try {
    child = spawn(pgBin(install, 'postgres'), ['-D', pgdata], {
      ...pgSpawnIdentity(),
      stdio: ['ignore', fd, fd],
      env: pgServerChildEnv({ LC_ALL: 'C', LANG: 'C' }),
    });
  } finally {
    closeSync(fd);
  }
  running.add(child);
  try {
    const outcome = await new Promise<{ code: number | null; signal: NodeJS.Signals | null; timedOut: boolean }>((resolve, reject) => {
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        child.kill('SIGQUIT');
        setTimeout(() => child.kill('SIGKILL'), 10_000).unref();
      }, timeoutMs);
      child.once('error', (err) => {
        clearTimeout(timer);
        reject(new PostgresRunError(`cannot start postgres: ${err.message}`));
      });
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        resolve({ code, signal, timedOut });
      });
    });
    if (outcome.timedOut) throw new PostgresRunError(`WAL replay did not finish within ${timeoutMs} ms; server log:\n${await tail(logFile)}`);
    if (outcome.code !== 0) {
      throw new PostgresRunError(`postgres exited with ${outcome.code ?? outcome.signal} during WAL replay; server log:\n${await tail(logFile)}`);
    }
  } finally {
    running.delete(child);
  }
}

/** Stops every replay server still running (pageserver shutdown). */
export async function stopAllPostgres(): Promise<void> {
  await Promise.all(
    [...running].map(
      (child) =>
        new Promise<void>((resolve) => {
          if (child.exitCode !== null || child.signalCode !== null) return resolve();
          child.once('exit', () => resolve());
          child.kill('SIGQUIT');
          setTimeout(() => child.kill('SIGKILL'), 5_000).unref();
        }),
    ),
  );
}
