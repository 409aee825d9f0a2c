import { setTimeout as sleep } from 'node:timers/promises';
import { MockActivityEnvironment } from '@temporalio/testing';
import { describe, expect, it } from 'vitest';
import { beatingWhileRunning, whileBeating } from '../common/activity-context';

describe('heartbeats of short activities that report no progress', () => {
  it('beats at once and then every interval while the call runs, and stops when it ends', async () => {
    const env = new MockActivityEnvironment();
    const beats: number[] = [];
    env.on('heartbeat', () => beats.push(Date.now()));
    const started = Date.now();
    const result = await env.run(() => whileBeating(async () => {
      await sleep(260);
      return 'done';
    }, 50));
    expect(result).toBe('done');
    // One beat at the start, then about one per 50 ms over 260 ms.
    expect(beats[0]! - started).toBeLessThan(50);
    expect(beats.length).toBeGreaterThanOrEqual(4);
    const count = beats.length;
    await sleep(150);
    expect(beats.length).toBe(count);
  });

  it('wraps every activity of a factory, keeping results and failures', async () => {
    const env = new MockActivityEnvironment();
    let beats = 0;
    env.on('heartbeat', () => beats++);
    const activities = beatingWhileRunning(
      {
        async slow(n: number): Promise<number> {
          await sleep(120);
          return n * 2;
        },
        async broken(): Promise<never> {
          throw new Error('permanent: no such prefix');
        },
      },
      30,
    );
    await expect(env.run(activities.slow, 21)).resolves.toBe(42);
    expect(beats).toBeGreaterThanOrEqual(3);
    await expect(env.run(activities.broken)).rejects.toThrow('permanent: no such prefix');
  });
});
