import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { findPostgres, pgBin } from '../common/pg-binaries';
import { chownForPostgres, pgSpawnIdentity } from '../common/pg-identity';
import { freePort } from './processes';

const run = promisify(execFile);

export interface ThrowawayPostgres {
  port: number;
  dataDir: string;
  socketDir: string;
  /** Superuser connection string (trust auth on loopback). */
  url(database?: string): string;
  query<T extends pg.QueryResultRow = pg.QueryResultRow>(sql: string, params?: unknown[], database?: string): Promise<pg.QueryResult<T>>;
  stop(): Promise<void>;
}

/** A private PostgreSQL server in a temporary directory on a free loopback port; `stop()` removes it all. */
export async function startThrowawayPostgres(settings: Record<string, string> = {}): Promise<ThrowawayPostgres> {
  const install = findPostgres({ pgBinDir: process.env.PG_BIN_DIR });
  const root = mkdtempSync(path.join(os.tmpdir(), 'dc-pg-'));
  const dataDir = path.join(root, 'data');
  const socketDir = root;
  chownForPostgres(root);
  const as = pgSpawnIdentity();
  await run(pgBin(install, 'initdb'), ['-D', dataDir, '-U', 'postgres', '-A', 'trust', '--no-sync', '-E', 'UTF8', '--locale', 'C'], as);
  const port = await freePort();
  const conf = { listen_addresses: "'127.0.0.1'", port: String(port), unix_socket_directories: `'${socketDir}'`, fsync: 'off', ...settings };
  writeFileSync(
    path.join(dataDir, 'postgresql.auto.conf'),
    Object.entries(conf)
      .map(([k, v]) => `${k} = ${v}\n`)
      .join(''),
  );
  chownForPostgres(dataDir);
  await run(pgBin(install, 'pg_ctl'), ['-D', dataDir, '-l', path.join(root, 'log'), '-w', '-t', '60', 'start'], as);
  const url = (database = 'postgres') => `postgresql://postgres@127.0.0.1:${port}/${database}`;
  return {
    port,
    dataDir,
    socketDir,
    url,
    async query(sql, params, database) {
      const client = new pg.Client({ connectionString: url(database) });
      await client.connect();
      try {
        return await client.query(sql, params);
      } finally {
        await client.end();
      }
    },
    async stop() {
      await run(pgBin(install, 'pg_ctl'), ['-D', dataDir, '-m', 'immediate', '-w', 'stop'], as).catch(() => undefined);
      rmSync(root, { recursive: true, force: true });
    },
  };
}
