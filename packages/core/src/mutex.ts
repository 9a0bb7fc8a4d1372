/**
 * Serialises async work per key (a layer id), so that concurrent get/put/remove on one
 * layer never interleave between "check the count" and "mount/unmount", while work on
 * different layers runs in parallel. In-process only; StoreLocks adds the flock.
 */
export class KeyedMutex {
  private readonly tails = new Map<string, Promise<void>>();

  /** Waits for `key`, then holds it until the returned function is called. */
  async acquire(key: string): Promise<() => void> {
    const previous = this.tails.get(key) ?? Promise.resolve();
    const release = this.enqueue(key, previous);
    await previous;
    return release;
  }

  /** The release function when `key` is free right now, else null (never waits). */
  tryAcquire(key: string): (() => void) | null {
    if (this.tails.has(key)) return null;
    return this.enqueue(key, Promise.resolve());
  }

  async run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const release = await this.acquire(key);
    try {
      return await fn();
    } finally {
      release();
    }
  }

  /** True while some call for `key` is running or queued. */
  isBusy(key: string): boolean {
    return this.tails.has(key);
  }

  /** Queues behind `previous`; the returned function lets the next in line go. */
  private enqueue(key: string, previous: Promise<void>): () => void {
    let done!: () => void;
    const mine = new Promise<void>((resolve) => { done = resolve; });
    const tail = previous.then(() => mine);
    this.tails.set(key, tail);
    return () => {
      done();
      // Drop the entry once nobody queued behind us, so the map does not grow with every id ever seen.
      if (this.tails.get(key) === tail) this.tails.delete(key);
    };
  }
}
