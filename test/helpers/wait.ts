import { setTimeout as sleep } from 'node:timers/promises';

/** Polls `probe` until it returns a value, failing with `what` after `timeoutMs`: a condition with a deadline, never a blind sleep. */
export async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}
