import { execFileSync } from 'node:child_process';
import { childEnv } from './child-env';
import { accessSync, constants, existsSync } from 'node:fs';
import path from 'node:path';
import { UserFacingError } from './errors';

export const POSTGRES_MAJOR = 15;

export interface PgInstallation {
  binDir: string;
  major: number;
  /** Full version string, e.g. "15.18". */
  version: string;
  /** Directory with the extensions' control files. */
  extensionDir: string;
  /** Directory with the extensions' shared libraries. */
  libDir: string;
}

const REQUIRED_CONTRIB = ['pg_buffercache', 'pg_prewarm'] as const;
const REQUIRED_BINARIES = ['postgres', 'initdb', 'pg_ctl', 'psql', 'pg_dump', 'pg_restore', 'pg_controldata'] as const;

function isExecutable(p: string): boolean {
  try {
    accessSync(p, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

function debianPackagesHint(major: number): string {
  return `Install the Debian packages postgresql-${major} and postgresql-contrib (apt-get install -y postgresql-${major} postgresql-contrib), or set PG_BIN_DIR to the bin directory of a PostgreSQL ${major} server installation.`;
}

function pgConfigValue(pgConfig: string, flag: string): string | undefined {
  try {
    return execFileSync(pgConfig, [flag], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 10_000, env: childEnv() }).trim();
  } catch {
    return undefined;
  }
}

/** The candidate bin directories, in the documented order, each with where it came from. */
function candidates(explicit: string | undefined, major: number): { dir: string; source: string }[] {
  if (explicit) return [{ dir: explicit, source: 'PG_BIN_DIR' }];
  const list: { dir: string; source: string }[] = [];
  const fromPgConfig = pgConfigValue('pg_config', '--bindir');
  if (fromPgConfig) list.push({ dir: fromPgConfig, source: 'pg_config --bindir' });
  list.push({ dir: `/usr/lib/postgresql/${major}/bin`, source: `/usr/lib/postgresql/${major}/bin` });
  return list;
}

/**
 * Finds a PostgreSQL server installation of the wanted major version with the contrib modules the
 * cache backend needs: PG_BIN_DIR, then `pg_config --bindir`, then Debian's versioned directory.
 */
export function findPostgres(opts: { pgBinDir?: string; major?: number } = {}): PgInstallation {
  const major = opts.major ?? POSTGRES_MAJOR;
  const problems: string[] = [];
  for (const { dir, source } of candidates(opts.pgBinDir, major)) {
    const postgres = path.join(dir, 'postgres');
    if (!isExecutable(postgres)) {
      problems.push(`${source}: no postgres executable in ${dir}`);
      continue;
    }
    let version: string;
    try {
      const out = execFileSync(postgres, ['--version'], { encoding: 'utf8', timeout: 10_000, env: childEnv() });
      version = /(\d+(?:\.\d+)?)/.exec(out)?.[1] ?? '';
    } catch (err) {
      problems.push(`${source}: ${postgres} --version failed: ${(err as Error).message}`);
      continue;
    }
    if (Number.parseInt(version, 10) !== major) {
      problems.push(`${source}: ${dir} holds PostgreSQL ${version || 'of unknown version'}, not ${major}`);
      continue;
    }
    const missingBinaries = REQUIRED_BINARIES.filter((b) => !isExecutable(path.join(dir, b)));
    if (missingBinaries.length > 0) {
      problems.push(`${source}: ${dir} lacks ${missingBinaries.join(', ')}`);
      continue;
    }
    const ownPgConfig = path.join(dir, 'pg_config');
    const shareDir = (isExecutable(ownPgConfig) && pgConfigValue(ownPgConfig, '--sharedir')) || `/usr/share/postgresql/${major}`;
    const libDir = (isExecutable(ownPgConfig) && pgConfigValue(ownPgConfig, '--pkglibdir')) || path.resolve(dir, '..', 'lib');
    const extensionDir = path.join(shareDir, 'extension');
    const missingContrib = REQUIRED_CONTRIB.filter(
      (ext) => !existsSync(path.join(extensionDir, `${ext}.control`)) || !existsSync(path.join(libDir, `${ext}.so`)),
    );
    if (missingContrib.length > 0) {
      throw new UserFacingError(
        `PostgreSQL ${major} in ${dir} lacks the contrib modules ${missingContrib.join(', ')}. ${debianPackagesHint(major)}`,
      );
    }
    return { binDir: dir, major, version, extensionDir, libDir };
  }
  throw new UserFacingError(`No PostgreSQL ${major} server found (${problems.join('; ')}). ${debianPackagesHint(major)}`);
}

export function pgBin(install: PgInstallation, name: string): string {
  return path.join(install.binDir, name);
}
