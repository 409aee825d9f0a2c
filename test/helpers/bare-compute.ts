/**
 * Stock PostgreSQL 15 started by hand from a dev pageserver base backup, without the compute
 * workflow: what the storage tests use to check the pageserver and safekeepers on their own. The
 * base backup is fetched with pg-copy-streams and unpacked with a minimal tar reader, independent
 * of the compute's client (drivers/pageserver), which has its own tests.
 */
import { execFile } from 'node:child_process';
import { mkdirSync, promises as fsp, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import { createGunzip } from 'node:zlib';
import pg from 'pg';
import { to } from 'pg-copy-streams';
import tar from 'tar-stream';
import { findPostgres, pgBin } from '../../common/pg-binaries';
import { chownForPostgres, pgSpawnIdentity } from '../../common/pg-identity';
import { freePort } from '../../dev/processes';

const run = promisify(execFile);
const install = findPostgres({ pgBinDir: process.env.PG_BIN_DIR });

/** Unpacks a tar stream into `dir`: directories and regular files only, names kept inside. Returns the entry names. */
export async function unpackTar(source: NodeJS.ReadableStream[], dir: string): Promise<string[]> {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const names: string[] = [];
  const extract = tar.extract();
  extract.on('entry', (header, stream, next) => {
    names.push(header.name);
    const target = path.resolve(dir, header.name);
    const refuse = (why: string) => {
      stream.resume();
      stream.on('end', () => next(new Error(`base backup entry ${header.name}: ${why}`)));
    };
    if (!target.startsWith(dir + path.sep) && target !== dir) return refuse('escapes the data directory');
    if (header.type === 'directory') {
      // Failures go to next(): a throw here would escape the pipeline as an uncaught exception
      // and leave the copy unread, so the fetch would hang instead of failing.
      let failed: Error | undefined;
      try {
        mkdirSync(target, { recursive: true, mode: 0o700 });
      } catch (err) {
        failed = err as Error;
      }
      stream.resume();
      stream.on('end', () => next(failed));
      return;
    }
    if (header.type !== 'file') return refuse(`unexpected entry type ${header.type}`);
    const parts: Buffer[] = [];
    stream.on('data', (d: unknown) => parts.push(d as Buffer));
    stream.on('end', () => {
      fsp
        .mkdir(path.dirname(target), { recursive: true, mode: 0o700 })
        .then(() => fsp.writeFile(target, Buffer.concat(parts), { mode: header.mode ?? 0o600 }))
        .then(() => next(), next);
    });
  });
  await pipeline([...source, extract]);
  return names;
}

export function basebackupCommand(tenant: string, timeline: string, lsn?: string, gzip = true): string {
  return ['basebackup', tenant, timeline, ...(lsn ? [lsn] : []), ...(gzip ? ['--gzip'] : [])].join(' ');
}

export interface FetchedBasebackup {
  names: string[];
  connectMs: number;
  totalMs: number;
  /** Compressed bytes received. */
  bytes: number;
}

/** Fetches a gzip'd base backup over the page service (as compute_ctl) and unpacks it into `pgdata`. */
export async function fetchBasebackupInto(
  pageserver: { port: number; password?: string },
  command: string,
  pgdata: string,
): Promise<FetchedBasebackup> {
  const started = performance.now();
  const socket = new net.Socket();
  const client = new pg.Client({
    host: '127.0.0.1',
    port: pageserver.port,
    user: 'cloud_admin',
    database: 'postgres',
    application_name: 'compute_ctl',
    ...(pageserver.password !== undefined ? { password: pageserver.password } : {}),
    stream: () => socket,
  });
  client.on('error', () => undefined);
  await client.connect();
  const connectMs = performance.now() - started;
  try {
    let bytes = 0;
    const copy = client.query(to(command));
    copy.on('data', (d: unknown) => (bytes += (d as Buffer).length));
    const names = await unpackTar([copy, createGunzip()], pgdata);
    await client.end();
    return { names, connectMs, totalMs: performance.now() - started, bytes };
  } catch (err) {
    // A failed copy leaves the socket paused mid-stream: a graceful end() would wait forever
    // (and the server with it), hiding this error behind a hang. Cut the connection instead.
    socket.destroy();
    throw err;
  }
}

export interface BareCompute {
  /** The compute's directory: holds pgdata, the server log and the unix socket. */
  dir: string;
  pgdata: string;
  /** Unix socket directory: the images let local connections in without a password (host ones need md5). */
  socketDir: string;
  port: number;
  query<T extends pg.QueryResultRow = pg.QueryResultRow>(sql: string): Promise<T[]>;
  stop(mode?: 'fast' | 'immediate'): Promise<void>;
}

const running = new Set<BareCompute>();

/**
 * Starts stock PostgreSQL on `<dir>/pgdata` (already unpacked) with a postgresql.conf of our own:
 * loopback, a free port, the socket in `dir`, then `conf`. `hbaLines` go first in pg_hba.conf.
 */
export async function startBareCompute(dir: string, conf: string[] = [], hbaLines: string[] = []): Promise<BareCompute> {
  const pgdata = path.join(dir, 'pgdata');
  const port = await freePort();
  writeFileSync(
    path.join(pgdata, 'postgresql.conf'),
    [`listen_addresses = '127.0.0.1'`, `port = ${port}`, `unix_socket_directories = '${dir}'`, ...conf, ''].join('\n'),
  );
  if (hbaLines.length > 0) {
    const hba = path.join(pgdata, 'pg_hba.conf');
    writeFileSync(hba, `${hbaLines.join('\n')}\n${readFileSync(hba, 'utf8')}`);
  }
  await fsp.chmod(pgdata, 0o700);
  chownForPostgres(dir);
  const log = path.join(dir, 'postgres.log');
  const compute: BareCompute = {
    dir,
    pgdata,
    socketDir: dir,
    port,
    async query<T extends pg.QueryResultRow>(sql: string) {
      const c = new pg.Client({ host: dir, port, user: 'cloud_admin', database: 'postgres' });
      await c.connect();
      try {
        return (await c.query<T>(sql)).rows;
      } finally {
        await c.end();
      }
    },
    async stop(mode = 'fast') {
      running.delete(compute);
      await run(pgBin(install, 'pg_ctl'), ['-D', pgdata, '-m', mode, '-w', '-t', '60', 'stop'], pgSpawnIdentity());
    },
  };
  running.add(compute);
  await run(pgBin(install, 'pg_ctl'), ['-D', pgdata, '-l', log, '-w', '-t', '60', 'start'], pgSpawnIdentity()).catch((err: Error) => {
    throw new Error(`compute did not start: ${err.message}\n${readFileSync(log, 'utf8')}`);
  });
  return compute;
}

/** Immediate stop of every bare compute still running (test cleanup; errors ignored). */
export async function stopBareComputes(): Promise<void> {
  await Promise.all([...running].map((c) => c.stop('immediate').catch(() => undefined)));
}
