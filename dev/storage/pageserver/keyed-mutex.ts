/** Raised when a lock was not free within the time the caller allowed; names who holds it. */
export class LockWaitTimeout extends Error {
  override name = 'LockWaitTimeout';
}

/**
 * Serializes async work per key (one materialization per timeline, one creation per tenant).
 * Each holder says what it does, so a caller that gives up waiting (`waitMs`) can say what it
 * waited for instead of hanging behind it.
 */
export class KeyedMutex {
  private readonly tails = new Map<string, Promise<void>>();
  private readonly holders = new Map<string, { what: string; since: number }>();

  constructor(private readonly name = 'lock') {}

  async run<T>(key: string, work: () => Promise<T>, opts: { what?: string; waitMs?: number } = {}): Promise<T> {
    const before = this.tails.get(key) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((resolve) => (release = resolve));
    const tail = before.then(() => mine);
    this.tails.set(key, tail);
    const leave = () => {
      release();
      if (this.tails.get(key) === tail) this.tails.delete(key);
    };
    if (opts.waitMs === undefined) {
      await before;
    } else {
      let timer: NodeJS.Timeout | undefined;
      const acquired = await Promise.race([
        before.then(() => true),
        new Promise<false>((resolve) => {
          timer = setTimeout(() => resolve(false), opts.waitMs);
        }),
      ]);
      clearTimeout(timer);
      if (!acquired) {
        // Our place in the queue passes on once the ones before us are done.
        void before.then(leave);
        const holder = this.holders.get(key);
        const held = holder ? `held by ${holder.what} for ${Date.now() - holder.since} ms` : 'not held, but others were queued before';
        throw new LockWaitTimeout(`gave up after ${opts.waitMs} ms waiting for the ${this.name} of ${key} to ${opts.what ?? 'run'}: it is ${held}`);
      }
    }
    this.holders.set(key, { what: opts.what ?? 'work', since: Date.now() });
    try {
      return await work();
    } finally {
      this.holders.delete(key);
      leave();
    }
  }
}
