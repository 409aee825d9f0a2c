import { accessSync, constants, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium, type BrowserContext } from 'playwright-core';

/** Debian's chromium, or the one CHROMIUM_PATH names; a clear error naming what is missing and how to install it otherwise. */
export function findChromium(env: Record<string, string | undefined> = process.env): string {
  const candidate = env.CHROMIUM_PATH || '/usr/bin/chromium';
  try {
    accessSync(candidate, constants.X_OK);
    return candidate;
  } catch {
    throw new Error(
      `The Web UI test needs a Chromium browser, and ${candidate} is not an executable` +
        `${env.CHROMIUM_PATH ? ' (from CHROMIUM_PATH)' : ''}. Install Debian's with \`apt-get install -y chromium\` ` +
        '(bash .ci/run does so on a fresh machine), or set CHROMIUM_PATH to a Chromium or Chrome executable.',
    );
  }
}

const isLoopback = (url: string): boolean => {
  const { protocol, hostname } = new URL(url);
  if (protocol === 'data:' || protocol === 'blob:' || protocol === 'about:') return true;
  return hostname === '127.0.0.1' || hostname === 'localhost' || hostname === '[::1]' || hostname === '::1';
};

/**
 * A headless Chromium with a fresh profile, as root (no sandbox), that never reaches beyond
 * loopback: every other request (fonts, news feeds, update checks of the page) is aborted.
 */
export async function launchLoopbackBrowser(): Promise<{ context: BrowserContext; blocked: string[]; close: () => Promise<void> }> {
  const executablePath = findChromium();
  const profile = mkdtempSync(path.join(os.tmpdir(), 'dc-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    viewport: { width: 1440, height: 1000 },
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const blocked: string[] = [];
  await context.route('**/*', async (route) => {
    const url = route.request().url();
    if (isLoopback(url)) return route.continue();
    blocked.push(url);
    return route.abort('blockedbyclient');
  });
  return {
    context,
    blocked,
    close: async () => {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}
