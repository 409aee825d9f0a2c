/** moto's setup (test/helpers/moto.ts): a machine that cannot install it gets a failure naming what is missing. */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ensureMoto } from './helpers/moto';

describe('moto setup', () => {
  const savedPath = process.env.PATH;
  afterEach(() => {
    process.env.PATH = savedPath;
  });

  it('without python3, fails naming python3 and python3-venv instead of skipping anything', async () => {
    const root = mkdtempSync(path.join(os.tmpdir(), 'dc-moto-setup-'));
    try {
      process.env.PATH = path.join(root, 'no-bin');
      await expect(ensureMoto(root)).rejects.toThrow(/moto .* cannot be installed: python3 -m venv failed: python3 not found\nInstall python3 and python3-venv/);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});
