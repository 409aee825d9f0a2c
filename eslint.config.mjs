import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import { builtinModules } from 'node:module';

const nodeBuiltins = [...builtinModules, ...builtinModules.map((m) => `node:${m}`)];
const noBuiltins = nodeBuiltins.map((name) => ({ name, message: 'Workflows are deterministic: no Node builtins.' }));

/** The product: what ships. It never imports the dev stack, the tests or the benchmarks. */
const PRODUCT = ['activities/**/*.ts', 'workflows/**/*.ts', 'workers/**/*.ts', 'client/**/*.ts', 'common/**/*.ts', 'model/**/*.ts', 'drivers/**/*.ts'];
const notDevTestBench = { regex: '^(\\.\\./)+(dev|test|bench)(/|$)', message: 'The product never imports dev/, test/ or bench/ (the CLI reaches the dev stack through client/dev-stack.ts only).' };
const notTestBench = { regex: '^(\\.\\./)+(test|bench)(/|$)', message: 'The product never imports test/ or bench/.' };
const notClient = { regex: '^(\\.\\./)+client(/|$)', message: 'activities/ and drivers/ never import the client.' };
const notActivities = (message) => ({ regex: '^(\\.\\./)+activities(/|$)', message });
const workflowTypeOnly = {
  group: ['**/activities', '**/activities/**', '**/drivers', '**/drivers/**', '**/common/**', '**/dev/**', '**/client/**', '**/workers/**', 'pg', 'pg-*', '@aws-sdk/*', '@temporalio/activity', '@temporalio/worker', '@temporalio/client'],
  allowTypeImports: true,
  message: 'Workflows may import activities and I/O modules only as types.',
};

export default tseslint.config(
  { ignores: ['node_modules/**', '.cache/**', '.durable-compute/**', 'bench/results/**', 'dist/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: {
      parserOptions: { projectService: { allowDefaultProject: ['*.mjs', 'bin/*.mjs', 'common/codec/*.cjs'] }, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/await-thenable': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      'no-console': 'off',
    },
  },
  {
    files: ['**/*.cjs'],
    languageOptions: { sourceType: 'commonjs', globals: { require: 'readonly', exports: 'writable', module: 'writable' } },
    rules: { '@typescript-eslint/no-require-imports': 'off' },
  },
  // Layer boundaries (README "Architecture"). A relative import that climbs to the repository
  // root and enters one of these folders is what each rule forbids.
  {
    files: PRODUCT,
    ignores: ['workflows/**', 'model/**'],
    rules: { '@typescript-eslint/no-restricted-imports': ['error', { patterns: [notDevTestBench] }] },
  },
  {
    // The one exception: the `dev`, `main` and `dev temporal-server` commands start the embedded
    // dev stack, and the CLI takes its defaults from a running one. They reach dev/ through this
    // file only.
    files: ['client/dev-stack.ts'],
    rules: { '@typescript-eslint/no-restricted-imports': ['error', { patterns: [notTestBench] }] },
  },
  {
    files: ['client/**/*.ts'],
    ignores: ['client/dev-stack.ts'],
    rules: { '@typescript-eslint/no-restricted-imports': ['error', { patterns: [notDevTestBench, notActivities('The client uses the drivers (drivers/), never what workers register.')] }] },
  },
  {
    files: ['activities/**/*.ts'],
    rules: { '@typescript-eslint/no-restricted-imports': ['error', { patterns: [notDevTestBench, notClient] }] },
  },
  {
    files: ['drivers/**/*.ts'],
    rules: { '@typescript-eslint/no-restricted-imports': ['error', { patterns: [notDevTestBench, notClient, notActivities('The drivers are a library: they know nothing of what workers register.')] }] },
  },
  {
    files: ['dev/**/*.ts'],
    rules: {
      '@typescript-eslint/no-restricted-imports': [
        'error',
        {
          patterns: [
            notActivities('The dev stack uses the drivers, never what workers register.'),
            { regex: '^(\\.\\./)+drivers/(?!index(\\.ts)?$)', message: 'dev/ imports the drivers through their public entry (drivers/index.ts) only.' },
          ],
        },
      ],
    },
  },
  {
    // A benchmark measures the library and the workers as they ship; it may name what a worker
    // registers as a type (the fleet simulator implements the compute-node activities' interface).
    files: ['bench/**/*.ts'],
    rules: {
      '@typescript-eslint/no-restricted-imports': [
        'error',
        {
          patterns: [
            { regex: '^(\\.\\./)+test(/|$)', message: 'Benchmarks share helpers with tests through dev/, never import test/.' },
            { ...notActivities('Benchmarks use the drivers (drivers/), never what workers register.'), allowTypeImports: true },
          ],
        },
      ],
    },
  },
  {
    // Workflow code is replayed deterministically inside Temporal's sandbox: no I/O, no Node
    // builtins, and activities only as types (they run on workers, never in the workflow).
    // model/ holds the pure domain code (LSNs, IDs, the spec schema) that workflows share.
    files: ['workflows/**/*.ts', 'model/**/*.ts'],
    rules: { '@typescript-eslint/no-restricted-imports': ['error', { paths: noBuiltins, patterns: [workflowTypeOnly, notDevTestBench] }] },
  },
  {
    files: ['test/fixtures/workflows/**/*.ts'],
    rules: { '@typescript-eslint/no-restricted-imports': ['error', { paths: noBuiltins, patterns: [workflowTypeOnly] }] },
  },
);
