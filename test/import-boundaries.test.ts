import { ESLint } from 'eslint';
import { describe, expect, it } from 'vitest';
import { projectRoot } from '../common/paths';

/**
 * The layer boundaries of eslint.config.mjs, checked against the real config: each import below
 * is linted as if it were in the named (existing) file, and must be refused or let through.
 */
const eslint = new ESLint({
  cwd: projectRoot,
  // The boundaries need no type information: skip building the TypeScript program (and the rules that need one).
  overrideConfig: {
    languageOptions: { parserOptions: { projectService: false } },
    rules: { '@typescript-eslint/no-floating-promises': 'off', '@typescript-eslint/no-misused-promises': 'off', '@typescript-eslint/await-thenable': 'off' },
  },
});

async function importErrors(file: string, specifier: string, typeOnly = false): Promise<string[]> {
  const code = typeOnly ? `import type * as m from '${specifier}';\nexport type Used = typeof m;\n` : `import * as m from '${specifier}';\nexport const used = m;\n`;
  const [result] = await eslint.lintText(code, { filePath: `${projectRoot}/${file}` });
  return (result?.messages ?? []).filter((m) => m.ruleId === '@typescript-eslint/no-restricted-imports').map((m) => m.message);
}

describe('import boundaries', () => {
  it.each([
    ['common/errors.ts', '../dev/stack'],
    ['workers/compute.ts', '../test/helpers/stack'],
    ['drivers/postgres/files.ts', '../../bench/stats'],
    ['client/context.ts', '../dev/stack'],
    ['client/commands/dev.ts', '../../dev/stack'],
    ['client/timelines.ts', '../activities/compute/types'],
    ['activities/compute/startup.ts', '../../client/timelines'],
    ['drivers/pageserver/http.ts', '../../activities/failpoints'],
    ['dev/stack-components.ts', '../drivers/s3/objects'],
    ['dev/storage/safekeeper/commands.ts', '../../../drivers/storage-backend/stock/safekeeper-protocol'],
    ['dev/stack.ts', '../activities/import-control/importer-host'],
    ['bench/stats.ts', '../test/helpers/stack'],
    ['bench/compute-start.ts', '../activities/compute/node-activities'],
    ['workflows/compute/workflow.ts', '../../dev/stack'],
    ['model/lsn.ts', '../test/helpers/ids'],
  ])('%s may not import %s', async (file, specifier) => {
    expect((await importErrors(file, specifier)).length).toBeGreaterThan(0);
  });

  it.each([
    ['client/dev-stack.ts', '../dev/stack'],
    ['client/context.ts', './dev-stack'],
    ['client/cli.ts', './commands/dev'],
    ['dev/storage/safekeeper/commands.ts', '../../../drivers'],
    ['bench/stats.ts', '../dev/private-stack'],
    ['bench/compute-start.ts', '../drivers/compute-startup/steps'],
    ['activities/compute/startup.ts', '../../drivers/postgres'],
    ['test/helpers/stack.ts', '../../dev/private-stack'],
  ])('%s may import %s', async (file, specifier) => {
    expect(await importErrors(file, specifier)).toEqual([]);
  });

  it('a benchmark may name what a worker registers as a type only', async () => {
    expect(await importErrors('bench/fleet-simulator.ts', '../activities/compute/types', true)).toEqual([]);
    expect((await importErrors('bench/fleet-simulator.ts', '../activities/compute/types')).length).toBeGreaterThan(0);
  });
});
