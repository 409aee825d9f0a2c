/** The pageserver's per-key lock: serializes per key, and a bounded wait names what it waited for. */
import { describe, expect, it } from 'vitest';
import { KeyedMutex, LockWaitTimeout } from '../dev/storage/pageserver/keyed-mutex';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('KeyedMutex', () => {
  it('runs work of one key one at a time, other keys in parallel', async () => {
    const m = new KeyedMutex();
    const order: string[] = [];
    const job = (key: string, name: string, ms: number) =>
      m.run(key, async () => {
        order.push(`${name}+`);
        await sleep(ms);
        order.push(`${name}-`);
      });
    await Promise.all([job('a', 'a1', 30), job('a', 'a2', 1), job('b', 'b1', 5)]);
    expect(order.indexOf('a2+')).toBeGreaterThan(order.indexOf('a1-'));
    expect(order.indexOf('b1+')).toBeLessThan(order.indexOf('a1-'));
  });

  it('a bounded wait gives up naming the holder and how long it has held the lock; the queue goes on', async () => {
    const m = new KeyedMutex('timeline lock');
    let finish!: () => void;
    const holder = m.run('t/1', () => new Promise<void>((r) => (finish = r)), { what: 'replay WAL up to 0/1' });
    const queued = m.run('t/1', async () => 'second', { what: 'open image 0/1', waitMs: 5_000 });
    const err = await m.run('t/1', async () => 'never', { what: 'replay WAL up to 0/2', waitMs: 50 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LockWaitTimeout);
    expect((err as Error).message).toMatch(/gave up after 50 ms waiting for the timeline lock of t\/1 to replay WAL up to 0\/2: it is held by replay WAL up to 0\/1 for \d+ ms/);
    finish();
    await holder;
    expect(await queued).toBe('second');
    // The one that gave up left its place: the next one gets the lock at once.
    expect(await m.run('t/1', async () => 'free', { waitMs: 50 })).toBe('free');
  });
});
