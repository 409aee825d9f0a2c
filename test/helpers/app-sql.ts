import pg from 'pg';

/** One query as alice on the example spec's `app` database of the compute listening on `port`. */
export async function appSql<T extends pg.QueryResultRow>(port: number, text: string): Promise<T[]> {
  const client = new pg.Client({ host: '127.0.0.1', port, user: 'alice', password: 'alice-dev-password', database: 'app' });
  await client.connect();
  try {
    return (await client.query<T>(text)).rows;
  } finally {
    await client.end();
  }
}

/** Shared-block hit ratio of a full read of the `hot` table, from EXPLAIN (ANALYZE, BUFFERS). */
export async function hotHitRatio(port: number): Promise<number> {
  const rows = await appSql<{ 'QUERY PLAN': { Plan: { 'Shared Hit Blocks': number; 'Shared Read Blocks': number } }[] }>(
    port,
    'explain (analyze, buffers, format json) select sum(length(payload)) from hot',
  );
  const plan = rows[0]!['QUERY PLAN'][0]!.Plan;
  return plan['Shared Hit Blocks'] / (plan['Shared Hit Blocks'] + plan['Shared Read Blocks']);
}
