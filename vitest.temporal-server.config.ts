import { configDefaults, defineConfig } from 'vitest/config';
import base from './vitest.config';

/**
 * `npm run test:temporal-server` (with DURABLE_COMPUTE_TEMPORAL_SERVER=sql): the stack on the
 * production Temporal server on PostgreSQL, a smoke subset of the compute tests on it, and the
 * server's own lifecycle test.
 */
export default defineConfig({
  ...base,
  test: {
    ...base.test,
    include: ['test/compute-lifecycle.test.ts', 'test/durable-resume.test.ts', 'test/temporal-server/**/*.test.ts'],
    exclude: configDefaults.exclude,
  },
});
