import type { GetOptions } from './driver.js';
import { CairnError } from './errors.js';
import { KeyedMutex } from './mutex.js';

/**
 * What a driver does when the first user gets a layer and the last one puts it.
 * `mount` returns the path handed to callers; `unmount` undoes it.
 */
export interface MountHooks {
  /** `opts` are those of the get that mounts (the first); later gets share that mount. */
  mount(id: string, opts: GetOptions): Promise<string>;
  unmount(id: string, path: string): Promise<void>;
}

interface Held { path: string; count: number }

/**
 * Reference-counted mounts keyed by layer id, as moby's RefCounter + per-id locker:
 * the first `get` mounts, later ones count, the last `put` unmounts. A failed mount
 * leaves no count behind; a failed unmount keeps the count so the caller can retry.
 */
export class MountRefs {
  private readonly held = new Map<string, Held>();
  private readonly locks = new KeyedMutex();

  constructor(private readonly hooks: MountHooks) {}

  get(id: string, opts: GetOptions = {}): Promise<string> {
    return this.locks.run(id, async () => {
      const current = this.held.get(id);
      if (current) {
        current.count++;
        return current.path;
      }
      const path = await this.hooks.mount(id, opts);
      this.held.set(id, { path, count: 1 });
      return path;
    });
  }

  put(id: string): Promise<void> {
    return this.locks.run(id, async () => {
      const current = this.held.get(id);
      if (!current) {
        throw new CairnError('ERR_NOT_MOUNTED', `layer ${id} is not mounted: put() must follow a get()`, { subject: id });
      }
      if (current.count > 1) {
        current.count--;
        return;
      }
      await this.hooks.unmount(id, current.path);
      this.held.delete(id);
    });
  }

  /**
   * Records a mount found already in place (e.g. left by an earlier process), counting
   * it once so that one `put` unmounts it.
   */
  adopt(id: string, path: string, count = 1): void {
    if (!this.held.has(id)) this.held.set(id, { path, count });
  }

  count(id: string): number {
    return this.held.get(id)?.count ?? 0;
  }

  isMounted(id: string): boolean {
    return this.held.has(id);
  }

  /** Runs `fn` while holding the id's lock, so no get/put on that id interleaves (remove uses this). */
  withLock<T>(id: string, fn: () => Promise<T>): Promise<T> {
    return this.locks.run(id, fn);
  }

  /** Unmounts every held layer regardless of counts; returns the errors of those that failed. */
  async unmountAll(): Promise<unknown[]> {
    const errors: unknown[] = [];
    for (const id of [...this.held.keys()]) {
      await this.locks.run(id, async () => {
        const current = this.held.get(id);
        if (!current) return;
        try {
          await this.hooks.unmount(id, current.path);
          this.held.delete(id);
        } catch (err) {
          errors.push(err);
        }
      });
    }
    return errors;
  }
}
