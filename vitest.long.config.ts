import { defineConfig } from 'vitest/config';
import base from './vitest.config';

/** `npm run test:long`: the end-to-end runs too long for `npm test` (test/long/), on the same setup. */
export default defineConfig({ test: { ...base.test, include: ['test/long/**/*.test.ts'], exclude: [] } });
