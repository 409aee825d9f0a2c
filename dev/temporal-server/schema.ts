import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import pg from 'pg';
import { TEMPORAL_DATABASE, VISIBILITY_DATABASE } from './config';
import { readPassfilePassword, type PostgresEndpoint } from './postgres-cluster';

const run = promisify(execFile);

/** Upstream's schema names, embedded in the schema tool (schema/postgresql/v12/... in the module). */
const SCHEMAS = [
  { database: TEMPORAL_DATABASE, schemaName: 'postgresql/v12/temporal' },
  { database: VISIBILITY_DATABASE, schemaName: 'postgresql/v12/visibility' },
] as const;

/** Arguments that reach `database` on `endpoint`; the password comes from the pgpass file, never argv. */
function connectArgs(endpoint: PostgresEndpoint, database: string): string[] {
  return [
    '--endpoint', endpoint.host,
    '--port', String(endpoint.port),
    '--user', endpoint.user,
    '--plugin', 'postgres12',
    '--database', database,
    '--connect-attributes', new URLSearchParams({ passfile: endpoint.passfile }).toString(),
  ];
}

async function sqlTool(tool: string, args: string[]): Promise<void> {
  try {
    await run(tool, args, { timeout: 300_000, maxBuffer: 16 * 1024 * 1024 });
  } catch (err) {
    const e = err as { stderr?: string; stdout?: string; message: string };
    const output = `${e.stderr ?? ''}${e.stdout ?? ''}`.trim().split('\n').slice(-10).join('\n');
    throw new Error(`the Temporal SQL schema tool failed (${args.filter((a) => !a.startsWith('passfile')).join(' ')}):\n${output || e.message}`);
  }
}

/** Whether setup-schema ran on `database` already: a second run would reset its recorded version to 0.0. */
async function hasVersionTable(endpoint: PostgresEndpoint, database: string): Promise<boolean> {
  const password = readPassfilePassword(endpoint.passfile);
  const client = new pg.Client({ host: endpoint.host, port: endpoint.port, user: endpoint.user, password, database, connectionTimeoutMillis: 5000 });
  await client.connect();
  try {
    const { rows } = await client.query<{ exists: boolean }>("SELECT to_regclass('schema_version') IS NOT NULL AS exists");
    return rows[0]?.exists === true;
  } finally {
    await client.end();
  }
}

/**
 * Creates the `temporal` and `temporal_visibility` databases if missing, sets up the schema
 * version tables once, then updates each schema to the tool's newest version (a no-op when current).
 */
export async function applySchemas(tool: string, endpoint: PostgresEndpoint, onProgress: (line: string) => void = () => {}): Promise<void> {
  for (const { database, schemaName } of SCHEMAS) {
    await sqlTool(tool, [...connectArgs(endpoint, database), 'create-database', '--defaultdb', 'postgres']);
    if (!(await hasVersionTable(endpoint, database))) {
      onProgress(`setting up the schema of ${database}...`);
      await sqlTool(tool, [...connectArgs(endpoint, database), 'setup-schema', '--version', '0.0']);
    }
    await sqlTool(tool, [...connectArgs(endpoint, database), 'update-schema', '--schema-name', schemaName]);
  }
}
