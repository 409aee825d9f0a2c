import { configDefaults, defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Needs the production Temporal server build: npm run test:temporal-server (vitest.temporal-server.config.ts).
    // test/long/ holds end-to-end runs too long for npm test: npm run test:long.
    exclude: [...configDefaults.exclude, 'test/temporal-server/**', 'test/long/**'],
    // Tests start real servers and kill real processes: isolate them in forked processes.
    pool: 'forks',
    poolOptions: { forks: { maxForks: 2, minForks: 1 } },
    globalSetup: ['test/global-setup.ts'],
    testTimeout: 120_000,
    hookTimeout: 180_000,
    teardownTimeout: 60_000,
    reporters: ['default'],
  },
});
