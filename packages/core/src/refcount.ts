import type { GetOptions } from './driver.js';
import { CairnError } from './errors.js';
import { idMappingsKey } from './idmap.js';
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

/**
 * `view`: the idMappings the mount was made with (their {@link idMappingsKey}, '' for
 * none), or null for a mount adopted from an earlier process, whose view is not known.
 */
interface Held { path: string; count: number; view: string | null }

/** The view key of a get: '' without idMappings. */
function viewOf(opts: GetOptions): string {
  return opts.idMappings ? idMappingsKey(opts.idMappings) : '';
}

/**
 * Reference-counted mounts keyed by layer id, as moby's RefCounter + per-id locker:
 * the first `get` mounts, later ones count, the last `put` unmounts. A failed mount
 * leaves no count behind; a failed unmount keeps the count so the caller can retry.
 *
 * One layer has one mount at a time, so one view: `put(id)` carries no options and could
 * not tell two views of a layer apart. A get whose `idMappings` differ from those of the
 * layer's live mount (an id map where it was mounted without, or another map) is refused
 * with ERR_LAYER_IN_USE, naming both; put every user first. (Each container has its own
 * container layer, so two containers on one image with different maps never meet here:
 * the image layers are their lowers, not mounts of their own.)
 */
export class MountRefs {
  private readonly held = new Map<string, Held>();
  private readonly locks = new KeyedMutex();

  constructor(private readonly hooks: MountHooks) {}

  get(id: string, opts: GetOptions = {}): Promise<string> {
    return this.locks.run(id, async () => {
      const current = this.held.get(id);
      const view = viewOf(opts);
      if (current) {
        if (current.view !== null && current.view !== view) {
          const shown = (v: string) => (v === '' ? 'without an id map' : `with the id map ${v}`);
          throw new CairnError('ERR_LAYER_IN_USE',
            `layer ${id} is mounted ${shown(current.view)} (${current.count} user(s)); it cannot be mounted ${shown(view)} at the same time: put() it first, or get it with the same idMappings`,
            { subject: id });
        }
        current.count++;
        return current.path;
      }
      const path = await this.hooks.mount(id, opts);
      this.held.set(id, { path, count: 1, view });
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
    if (!this.held.has(id)) this.held.set(id, { path, count, view: null });
  }

  count(id: string): number {
    return this.held.get(id)?.count ?? 0;
  }

  isMounted(id: string): boolean {
    return this.held.has(id);
  }

  /** The {@link idMappingsKey} of the layer's live mount ('' without a map), null when unknown (adopted) or not mounted. */
  viewOf(id: string): string | null {
    return this.held.get(id)?.view ?? null;
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
