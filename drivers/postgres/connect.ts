import pg from 'pg';
import { readPostmasterPid } from './process';

/** How the worker reaches the compute's Postgres: the superuser compute_ctl calls cloud_admin. */
export interface AdminLogin {
  user: string;
  password?: string;
  /** Default: postmaster.pid's socket directory, else its listen address. */
  host?: string;
}

function connectHost(pidFile: { socketDir?: string; listenAddress?: string } | undefined): string {
  if (pidFile?.socketDir) return pidFile.socketDir;
  const listen = pidFile?.listenAddress;
  if (!listen || listen === '*' || listen === '0.0.0.0') return '127.0.0.1';
  if (listen === '::') return '::1';
  return listen;
}

/** Where the Postgres running on `pgdata` listens, from its postmaster.pid. */
export async function postgresEndpoint(pgdata: string, admin: AdminLogin): Promise<{ host: string; port: number }> {
  const pidFile = await readPostmasterPid(pgdata);
  if (!pidFile?.port) throw new Error(`no running postmaster on ${pgdata} to connect to (postmaster.pid missing or incomplete)`);
  return { host: admin.host ?? connectHost(pidFile), port: pidFile.port };
}

/** A client on `database` of the Postgres running on `pgdata`, as the admin user. */
export async function connectAsAdmin(pgdata: string, admin: AdminLogin, database: string, applicationName = 'compute_ctl'): Promise<pg.Client> {
  const { host, port } = await postgresEndpoint(pgdata, admin);
  const client = new pg.Client({
    host,
    port,
    user: admin.user,
    password: admin.password,
    database,
    application_name: applicationName,
    connectionTimeoutMillis: 10_000,
  });
  // An idle connection dies with the postmaster; that must surface on the next query, not as an
  // uncaught 'error' event that takes the worker down.
  client.on('error', () => undefined);
  try {
    await client.connect();
  } catch (err) {
    await client.end().catch(() => undefined);
    throw err;
  }
  return client;
}
