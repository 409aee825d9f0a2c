/**
 * The source database the import tests onboard: a real PostgreSQL 15 whose `importer` role logs in
 * with a password over TCP (the test's superuser keeps trust), holding several tables, indexes,
 * sequences and a view, with one table large enough for a multipart upload. Its fingerprint
 * (row counts, content checksums, sequence positions, index names) is compared with the import's.
 */
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import { chownForPostgres } from '../common/pg-identity';
import { startThrowawayPostgres, type ThrowawayPostgres } from './throwaway-postgres';

export interface ImportSourceSize {
  customers: number;
  orders: number;
  /** Rows of `events`, about 100 (repeat 1) to 160 bytes (repeat 3) each. */
  events: number;
  eventPayloadRepeat: number;
}

export interface ImportSource {
  server: ThrowawayPostgres;
  database: string;
  /** The importer's connection string (password URL-encoded); `database` defaults to the source's. */
  url(password?: string, database?: string): string;
  /** The source's fingerprint, taken once it was filled. */
  fingerprint: Record<string, string>;
}

const FINGERPRINT_SQL = `
  SELECT 'customers' AS t, count(*)::text || ':' || md5(coalesce(string_agg(c::text, ',' ORDER BY id), '')) AS f FROM customers c
  UNION ALL SELECT 'orders', count(*)::text || ':' || md5(coalesce(string_agg(o::text, ',' ORDER BY id), '')) FROM orders o
  UNION ALL SELECT 'events', count(*)::text || ':' || md5(coalesce(string_agg(e::text, ',' ORDER BY id), '')) FROM events e
  UNION ALL SELECT 'invoice_seq', last_value::text FROM invoice_seq
  UNION ALL SELECT 'orders_id_seq', last_value::text FROM orders_id_seq
  UNION ALL SELECT 'indexes', string_agg(indexname, ',' ORDER BY indexname) FROM pg_indexes WHERE schemaname = 'public'
  UNION ALL SELECT 'events_by_kind', (SELECT count(*)::text FROM events WHERE kind = 'kind-3')
  UNION ALL SELECT 'view', (SELECT count(*)::text FROM big_spenders)`;

/** What a user would check after an import: every table's rows and content, sequences, indexes, a view. */
export async function importFingerprint(client: pg.Client): Promise<Record<string, string>> {
  const { rows } = await client.query<{ t: string; f: string }>(FINGERPRINT_SQL);
  return Object.fromEntries(rows.map((r) => [r.t, r.f]));
}

export async function startImportSource(opts: { password: string; database: string; size: ImportSourceSize }): Promise<ImportSource> {
  const server = await startThrowawayPostgres();
  const url = (password = opts.password, database = opts.database) =>
    `postgresql://importer:${encodeURIComponent(password)}@127.0.0.1:${server.port}/${database}`;
  // The importer authenticates with a password over TCP; the test's superuser keeps trust.
  writeFileSync(
    path.join(server.dataDir, 'pg_hba.conf'),
    'local all all trust\nhost all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n',
  );
  chownForPostgres(path.join(server.dataDir, 'pg_hba.conf'), false);
  await server.query('SELECT pg_reload_conf()');
  await server.query(`CREATE ROLE importer LOGIN PASSWORD ${pg.escapeLiteral(opts.password)}`);
  await server.query(`CREATE DATABASE ${pg.escapeIdentifier(opts.database)} OWNER importer`);
  try {
    return { server, database: opts.database, url, fingerprint: await fill(url(), opts.size) };
  } catch (err) {
    await server.stop();
    throw err;
  }
}

async function fill(url: string, { customers, orders, events, eventPayloadRepeat }: ImportSourceSize): Promise<Record<string, string>> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query(`
      CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, email text UNIQUE NOT NULL);
      CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id int NOT NULL REFERENCES customers(id), amount numeric(12,2) NOT NULL, created_at timestamptz NOT NULL);
      CREATE INDEX orders_customer_idx ON orders (customer_id);
      CREATE TABLE events (id bigint PRIMARY KEY, kind text NOT NULL, payload text NOT NULL);
      CREATE INDEX events_kind_idx ON events (kind);
      CREATE SEQUENCE invoice_seq START 1000;
      CREATE VIEW big_spenders AS SELECT customer_id, sum(amount) AS total FROM orders GROUP BY customer_id HAVING sum(amount) > 5000;
      INSERT INTO customers (name, email) SELECT 'customer ' || g, 'c' || g || '@example.com' FROM generate_series(1, ${customers}) g;
      INSERT INTO orders (customer_id, amount, created_at)
        SELECT 1 + (g * 7919) % ${customers}, ((g * 31) % 100000) / 100.0, timestamptz '2024-01-01 00:00:00+00' + g * interval '1 minute' FROM generate_series(1, ${orders}) g;
      INSERT INTO events SELECT g, 'kind-' || (g % 17), md5(g::text) || repeat(md5((g * 3)::text), ${eventPayloadRepeat}) FROM generate_series(1, ${events}) g;
      SELECT nextval('invoice_seq') FROM generate_series(1, 42);
    `);
    return await importFingerprint(client);
  } finally {
    await client.end();
  }
}
