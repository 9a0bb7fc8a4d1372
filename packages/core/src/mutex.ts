/**
 * Serialises async work per key (a layer id), so that concurrent get/put/remove on one
 * layer never interleave between "check the count" and "mount/unmount", while work on
 * different layers runs in parallel.
 */
export class KeyedMutex {
  private readonly tails = new Map<string, Promise<unknown>>();

  async run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const previous = this.tails.get(key) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((resolve) => { release = resolve; });
    const tail = previous.then(() => mine);
    this.tails.set(key, tail);
    await previous;
    try {
      return await fn();
    } finally {
      release();
      // Drop the entry once nobody queued behind us, so the map does not grow with every id ever seen.
      if (this.tails.get(key) === tail) this.tails.delete(key);
    }
  }

  /** True while some call for `key` is running or queued. */
  isBusy(key: string): boolean {
    return this.tails.has(key);
  }
}
