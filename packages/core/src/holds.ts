import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { GetOptions, PutOptions } from './driver.js';
import { CairnError, errnoCode } from './errors.js';
import { idMappingsKey } from './idmap.js';
import { bootId, isProcessAlive, selfIdentity } from './proc.js';
import { writeFileAtomic } from './staging.js';
import { LAYER_RECORD_BYTES, STATE_DIR, type StoreLocks } from './storelock.js';

/**
 * What a driver does when a layer gets its first holder and loses its last: `mount`
 * returns the path handed to every holder; `unmount` undoes it.
 */
export interface MountHooks {
  /** `opts` are those of the get that mounts (the first); later gets share that mount. */
  mount(id: string, opts: GetOptions): Promise<string>;
  /**
   * Undoes a mount. `path` is what `mount` returned, or null when a get died between
   * recording its hold and recording the path: undo whatever that get may have mounted,
   * and succeed when nothing is mounted.
   */
  unmount(id: string, path: string | null): Promise<void>;
}

/** A hold of a driver instance in a process; dropped when that process is seen dead. */
interface ProcessHold { pid: number; start: number; session: string; count: number }
/** A hold owned by the store (`cairn mount`): it lasts until released by name, whatever process made it. */
interface NamedHold { owner: string; count: number }
type Hold = ProcessHold | NamedHold;

/** Who holds the layer's mount, and where it is (in the layer's lock file, see StoreLocks.layerRecord). */
interface HoldRecord {
  /** Mounts do not survive a reboot: holds recorded in an earlier boot are void. */
  boot: string;
  /** The mount's path; null while the first get of it is mounting. */
  path: string | null;
  /**
   * The view of the mount: the idMappingsKey of the id maps it was made with ('' for
   * none), or absent when not known (a record of an older cairn). See SharedMounts.get.
   */
  view?: string;
  holds: Hold[];
}

/** The view key of a get: '' without idMappings. */
function viewOf(opts: GetOptions): string {
  return opts.idMappings ? idMappingsKey(opts.idMappings) : '';
}

/** A live hold, as reported to callers (messages, the CLI, tests). */
export interface HoldInfo {
  /** `process 4711` or the owner name (`cli-mount:web`). */
  holder: string;
  count: number;
  /** True for holds of this driver instance. */
  mine: boolean;
}

const isNamed = (h: Hold): h is NamedHold => 'owner' in h;

function checkRecord(raw: unknown): HoldRecord | string {
  const r = raw as Partial<HoldRecord> | null;
  if (typeof r !== 'object' || r === null) return 'not an object';
  if (typeof r.boot !== 'string') return 'boot is not a string';
  if (r.path !== null && typeof r.path !== 'string') return 'path is neither a string nor null';
  if (r.view !== undefined && typeof r.view !== 'string') return 'view is not a string';
  if (!Array.isArray(r.holds)) return 'holds is not a list';
  for (const h of r.holds as unknown[]) {
    const x = h as Partial<ProcessHold & NamedHold> | null;
    if (typeof x !== 'object' || x === null || !Number.isSafeInteger(x.count) || x.count! < 1) return 'a hold has no positive count';
    const named = typeof x.owner === 'string';
    const proc = Number.isSafeInteger(x.pid) && Number.isSafeInteger(x.start) && typeof x.session === 'string';
    if (named === proc) return 'a hold names neither a process nor an owner';
  }
  return r as HoldRecord;
}

/**
 * get and put write the hold record before anything long (a mount, an unmount: those
 * write the holder record first, see StoreLocks.writeHolder), so the lock's holder record
 * goes to disk with that write: one pwrite fewer per get and per put that keeps holds.
 */
const HOLDER_WITH_RECORD = { holderWithRecord: true } as const;

/** Options of {@link SharedMounts}. */
export interface SharedMountsOptions {
  /**
   * The hooks never take, try or check the lock of the layer they mount (they may take the
   * store lock): get and put then hold the layer lock without an AsyncLocalStorage frame
   * (StoreLocks' LayerLockOptions.frameless), which spares every promise they make a hook.
   */
  leafHooks?: boolean;
}

/** The record area's marker for a record too big for it, kept in `${home}/.cairn/mounts/<id>.json` instead. */
const OVERFLOW = '@file';

/**
 * Mount counts shared by every process that opens a home (what MountRefs counted in
 * memory before): one mount per layer, however many processes `get` it, and a record
 * of who holds it in the record area of the layer's lock file (StoreLocks.layerRecord),
 * read when the lock is taken and written only under it, atomically (one pwrite within
 * a page; a record too big for the area goes to `${home}/.cairn/mounts/<id>.json`,
 * written with writeFileAtomic). Reading and writing the record costs no file of its own:
 * the lock file is open anyway.
 *
 * - `get`: the first holder mounts; every later one (any process) adds a hold and gets
 *   the same path. `put` drops one hold of the caller; the last hold's put unmounts.
 * - A hold is a process (pid + start time + driver instance) or a named owner
 *   (`cairn mount`'s `cli-mount:<name>`, which outlives the CLI process). Holds of a
 *   process that died (pid gone, or reused: the start time differs) are dropped whenever
 *   the record is next read: by get, put, remove, cleanup or open. A layer whose last
 *   hold goes that way is unmounted then.
 * - `cleanup()` of a driver drops that instance's holds only, unmounting what then has no
 *   holder at all; another process's mounts stay.
 * - The record is written *before* the first mount (path null) and again after, so a
 *   kill in between leaves a hold of a dead process, which the next reader drops,
 *   undoing whatever the mount did (`unmount(id, null)`).
 * - Records are not fsynced: a power loss ends every mount and every process, so what a
 *   record said is void after it anyway (the boot id says so).
 * - A record that cannot be parsed is never guessed at: operations on that layer fail
 *   naming the file and what to do; open skips it.
 * - One layer has one mount, so one view: a get whose `idMappings` differ from those the
 *   live mount was made with (in any process) is refused with ERR_LAYER_IN_USE naming both;
 *   `put` carries no options and could not tell two views apart. (Each container has its
 *   own container layer: two containers on one image with different maps never meet here.)
 */
export class SharedMounts {
  private readonly dir: string;
  /** This instance's holds by layer id (a mirror of what the records say, to find them at cleanup). */
  private readonly mine = new Map<string, number>();
  private readonly session = randomBytes(4).toString('hex');
  private dirMade = false;

  private readonly getPutLock: { holderWithRecord: true; frameless: boolean };

  constructor(readonly home: string, private readonly locks: StoreLocks, private readonly hooks: MountHooks, opts: SharedMountsOptions = {}) {
    this.dir = join(home, STATE_DIR, 'mounts');
    this.getPutLock = { ...HOLDER_WITH_RECORD, frameless: opts.leafHooks === true };
  }

  /** Mounts the layer or adds a hold on its mount; `opts.holder` names a store-owned hold (`cairn mount`). */
  get(id: string, opts: GetOptions = {}): Promise<string> {
    const owner = opts.holder;
    return this.locks.layer(id, `mount layer ${id}`, async () => {
      let record = await this.load(id, true);
      const view = viewOf(opts);
      if (record !== null && record.path !== null && record.holds.length > 0 && record.view !== undefined && record.view !== view) {
        const shown = (v: string) => (v === '' ? 'without an id map' : `with the id map ${v}`);
        throw new CairnError('ERR_LAYER_IN_USE',
          `layer ${id} is mounted ${shown(record.view)} (held by ${describeHolds(this.info(record))}); it cannot be mounted ${shown(view)} at the same time: put() it first, or get it with the same idMappings`,
          { subject: id });
      }
      if (record === null || record.path === null) {
        record = { boot: bootId(), path: null, view, holds: [] };
        this.addHold(record, owner);
        await this.save(id, record);
        let path: string;
        try {
          path = await this.hooks.mount(id, opts);
        } catch (err) {
          await this.drop(id);
          throw err;
        }
        record.path = path;
      } else {
        this.addHold(record, owner);
      }
      await this.save(id, record);
      if (owner === undefined) this.mine.set(id, (this.mine.get(id) ?? 0) + 1);
      return record.path;
    }, this.getPutLock);
  }

  /** Drops one hold of this driver instance (or of `opts.holder`); the last hold of all unmounts. */
  put(id: string, opts: PutOptions = {}): Promise<void> {
    const owner = opts.holder;
    return this.locks.layer(id, `unmount layer ${id}`, async () => {
      const record = await this.load(id, false);
      const hold = record?.holds.find((h) => this.isOurs(h, owner));
      if (!record || !hold) {
        const others = record ? ` (it is held by ${describeHolds(this.info(record))})` : '';
        throw new CairnError('ERR_NOT_MOUNTED',
          `layer ${id} is not mounted by ${owner ?? 'this driver'}: put() must follow a get()${others}`, { subject: id });
      }
      const holds = hold.count > 1
        ? record.holds.map((h) => (h === hold ? { ...h, count: h.count - 1 } : h))
        : record.holds.filter((h) => h !== hold);
      // A failed unmount leaves the record as it was, so the caller can put again.
      if (holds.length === 0) {
        await this.locks.writeHolder(id);
        await this.hooks.unmount(id, record.path);
        await this.drop(id);
      } else {
        await this.save(id, { ...record, holds });
      }
      if (owner === undefined) {
        const left = (this.mine.get(id) ?? 1) - 1;
        if (left > 0) this.mine.set(id, left);
        else this.mine.delete(id);
      }
    }, this.getPutLock);
  }

  /** The live holds of a layer (dead ones dropped on the way). Under the layer's lock when a decision rides on it. */
  holds(id: string): Promise<HoldInfo[]> {
    return this.locks.layer(id, `read the mount holds of layer ${id}`, async () => {
      const record = await this.load(id, false);
      return record ? this.info(record) : [];
    });
  }

  /** Total live holds of a layer, every process counted. */
  async count(id: string): Promise<number> {
    return (await this.holds(id)).reduce((n, h) => n + h.count, 0);
  }

  /** ERR_LAYER_IN_USE when anyone holds the layer; `doing` completes "cannot … layer X". */
  async assertUnheld(id: string, doing: string): Promise<void> {
    this.refuseHeld(id, doing, await this.holds(id));
  }

  /**
   * assertUnheld for a caller that holds the layer's lock already, perhaps without a frame
   * (overlay2's remove): the record it read with the lock, dead holds dropped on the way.
   * Asking through the lock again would wait on that caller's own lock.
   */
  async assertUnheldLocked(id: string, doing: string): Promise<void> {
    const record = await this.load(id, false);
    this.refuseHeld(id, doing, record ? this.info(record) : []);
  }

  private refuseHeld(id: string, doing: string, holds: HoldInfo[]): void {
    if (holds.length > 0) {
      throw new CairnError('ERR_LAYER_IN_USE',
        `cannot ${doing} layer ${id}: it is mounted, held by ${describeHolds(holds)}; put() it first (a \`cairn mount\` ends with \`cairn umount\`)`,
        { subject: id });
    }
  }

  /** Deletes a removed layer's record. The caller holds the layer's lock. */
  async forget(id: string): Promise<void> {
    await this.drop(id);
  }

  /**
   * Drops every hold of this driver instance, unmounting layers left with none (driver
   * cleanup). Returns the errors of those that could not be released.
   */
  async releaseAll(): Promise<unknown[]> {
    const errors: unknown[] = [];
    for (const id of [...this.mine.keys()]) {
      try {
        await this.locks.layer(id, `release the mounts of layer ${id}`, async () => {
          const record = await this.load(id, false);
          const holds = record?.holds.filter((h) => isNamed(h) || h.session !== this.session) ?? [];
          if (record && holds.length === 0) {
            await this.hooks.unmount(id, record.path);
            await this.drop(id);
          } else if (record && holds.length !== record.holds.length) {
            await this.save(id, { ...record, holds });
          }
          this.mine.delete(id);
        });
      } catch (err) {
        errors.push(err);
      }
    }
    return errors;
  }

  /**
   * Open-time repair: for every hold record, and for every mount the driver found in
   * place (`mounted`: from mountinfo, under its mount directories), drops the holds of
   * dead processes and unmounts what nobody holds, including mounts no record knows
   * (left by an older cairn). Layers another operation holds right now are skipped (it is
   * alive and handles its own); so are unreadable records (every later operation on that
   * layer names the file).
   */
  async sweep(mounted: Array<{ id: string; path: string }> = []): Promise<void> {
    const paths = new Map(mounted.map((m) => [m.id, m.path]));
    // Overflow records (see OVERFLOW) live in files; their layers are visited too, and a
    // dead writer's temp file goes under that layer's free lock.
    const temps = new Set<string>();
    const ids = new Set(paths.keys());
    for (const name of await readdir(this.dir).catch(() => [] as string[])) {
      if (name.endsWith('.json') && !name.startsWith('.')) ids.add(name.slice(0, -'.json'.length));
      else if (name.startsWith('.') && name.endsWith('.json.tmp')) temps.add(name.slice(1, -'.json.tmp'.length));
    }
    for (const id of new Set([...ids, ...temps])) {
      await this.locks.tryLayer(id, `repair the mount holds of layer ${id}`, async () => {
        if (temps.has(id)) await unlink(join(this.dir, `.${id}.json.tmp`)).catch(() => undefined);
        const recorded = this.locks.layerRecord(id) !== null;
        try {
          await this.load(id, false); // drops dead holds, unmounting what then has none
        } catch {
          return;
        }
        const orphan = paths.get(id);
        if (!recorded && orphan !== undefined) await this.hooks.unmount(id, orphan).catch(() => undefined);
      });
    }
  }

  /**
   * True when one of `ids` (the layers the driver finds mounted) has a live hold (dead ones
   * are dropped on the way) or is being worked on right now (its lock is taken). Never waits.
   */
  async anyHeld(ids: Iterable<string>): Promise<boolean> {
    for (const id of ids) {
      const r = await this.locks.tryLayer(id, `read the mount holds of layer ${id}`, async () => {
        try {
          return (await this.load(id, false)) !== null;
        } catch {
          return true; // unreadable: assume someone holds it
        }
      });
      if (!r.ran || r.value) return true;
    }
    return false;
  }

  // ---- the record -----------------------------------------------------------------

  private path(id: string): string {
    return join(this.dir, `${id}.json`);
  }

  /**
   * The record with the holds of dead processes dropped (rewritten if any were); null
   * when there is none or none is left, after undoing the mount it described. With
   * `adopt`, a stale mount that will not come off (EBUSY: someone's cwd is in it) is
   * returned as a record without holds, to be reused by the caller, not stacked upon.
   */
  private async load(id: string, adopt: boolean): Promise<HoldRecord | null> {
    let text = this.locks.layerRecord(id);
    let file = join(this.locks.layerLockDir, id);
    if (text === null) return null;
    if (text === OVERFLOW) {
      file = this.path(id);
      try {
        text = await readFile(file, 'utf8');
      } catch (err) {
        if (errnoCode(err) === 'ENOENT') return null;
        throw this.corrupt(id, file, `cannot be read (${errnoCode(err) ?? String(err)})`, err);
      }
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (err) {
      throw this.corrupt(id, file, 'is not valid JSON', err);
    }
    const record = checkRecord(parsed);
    if (typeof record === 'string') throw this.corrupt(id, file, `is malformed (${record})`);
    const sameBoot = record.boot === bootId();
    const live = sameBoot ? record.holds.filter((h) => isNamed(h) || isProcessAlive(h)) : [];
    if (live.length === record.holds.length && record.path !== null) return record;
    if (live.length > 0 && record.path !== null) {
      const kept = { ...record, holds: live };
      await this.save(id, kept);
      return kept;
    }
    // Nobody is left (or the get that was mounting died): undo the mount. After a reboot
    // there is nothing mounted, but the driver may still tidy (a mount point directory).
    await this.locks.writeHolder(id);
    try {
      await this.hooks.unmount(id, record.path);
    } catch (err) {
      if (!adopt || record.path === null) throw err;
      return { boot: bootId(), path: record.path, holds: [] };
    }
    await this.drop(id);
    return null;
  }

  private async save(id: string, record: HoldRecord): Promise<void> {
    const text = JSON.stringify(record);
    const overflowed = this.locks.layerRecord(id) === OVERFLOW;
    if (Buffer.byteLength(text) <= LAYER_RECORD_BYTES) {
      await this.locks.setLayerRecord(id, text);
      if (overflowed) await unlink(this.path(id)).catch(() => undefined);
      return;
    }
    if (!this.dirMade) {
      await mkdir(this.dir, { recursive: true, mode: 0o700 });
      this.dirMade = true;
    }
    await writeFileAtomic(this.path(id), text, 0o600, { durable: false });
    if (!overflowed) await this.locks.setLayerRecord(id, OVERFLOW);
    else await this.locks.writeHolder(id);
  }

  private async drop(id: string): Promise<void> {
    const current = this.locks.layerRecord(id);
    if (current === null) return;
    if (current === OVERFLOW) await unlink(this.path(id)).catch(() => undefined);
    await this.locks.setLayerRecord(id, null);
  }

  private addHold(record: HoldRecord, owner: string | undefined): void {
    const hold = record.holds.find((h) => this.isOurs(h, owner));
    if (hold) {
      hold.count++;
      return;
    }
    const me = selfIdentity();
    record.holds.push(owner === undefined ? { pid: me.pid, start: me.start, session: this.session, count: 1 } : { owner, count: 1 });
  }

  private isOurs(h: Hold, owner: string | undefined): boolean {
    return owner === undefined ? !isNamed(h) && h.session === this.session && h.pid === process.pid : isNamed(h) && h.owner === owner;
  }

  private info(record: HoldRecord): HoldInfo[] {
    return record.holds.map((h) => ({
      holder: isNamed(h) ? h.owner : `process ${h.pid}`,
      count: h.count,
      mine: !isNamed(h) && h.session === this.session && h.pid === process.pid,
    }));
  }

  private corrupt(id: string, file: string, why: string, cause?: unknown): CairnError {
    return new CairnError('ERR_BACKEND_FAILED',
      `the mount hold record of layer ${id} (in ${file}) ${why}, so cairn cannot tell who holds that layer's mount. ` +
      `If no container uses layer ${id}, delete that file (and unmount the layer's mount if one is left); cairn starts a new record at the next get`,
      cause === undefined ? { subject: file } : { subject: file, cause });
  }
}

/** "process 4711 (2 gets), cli-mount:web" */
export function describeHolds(holds: HoldInfo[]): string {
  return holds.map((h) => `${h.holder}${h.mine ? ' (this driver)' : ''}${h.count > 1 ? ` (${h.count} gets)` : ''}`).join(', ');
}
