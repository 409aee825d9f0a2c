import { describe, expect, it } from 'vitest';
import { startThrowawayPostgres } from '../dev/throwaway-postgres';

describe('throwaway PostgreSQL helper', () => {
  it('starts a private server on a free port and removes it on stop', async () => {
    const pg = await startThrowawayPostgres();
    try {
      const { rows } = await pg.query<{ v: string }>("select current_setting('server_version') as v");
      expect(rows[0]?.v).toMatch(/^15\./);
    } finally {
      await pg.stop();
    }
    await expect(pg.query('select 1')).rejects.toThrow();
  });
});
