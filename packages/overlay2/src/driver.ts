import { appendFileSync, chmodSync, chownSync, mkdirSync, readFileSync, readlinkSync, rmdirSync, statSync, symlinkSync } from 'node:fs';
import { chmod, mkdir, realpath, rmdir, stat, unlink } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import {
  CairnError, SharedMounts, StoreLocks, assertValidId, commitStaged, discardDir, errnoCode, fsyncDir,
  makeStagingDir, moveToTrash, normalizeParent, parseByteSize, readMountInfo, LayerQuotas, sweepLeftovers,
  secureDir, idMappingsKey, probeIdmappedMounts, sameIdMappings, validateIdMappings, layerNotFound,
} from '@cairnfs/core';
import { NaiveDiff } from '@cairnfs/archive';
import type { ApplyDiffOptions, Change, CreateOptions, DriverSetup, GetOptions, IdMappings, LayerFilesDir, PutOptions, StorageDriver } from '@cairnfs/core';
import * as sys from '@cairnfs/sys';
import {
  COMMITTED_FILE_MODE, DEFAULT_MAX_DEPTH, DIFF_MODE, HOME_MODE, KERNEL_MAX_DEPTH, LAYER_DIR_MODE, LINK_FILE_MODE,
  Layout, WORK_MODE, assertDepth, childLowers, formatLowerFile, generateShortName, idFromDirName,
  parseLowerFile,
} from './layout.js';
import { ensureSymlink, idFromLinkTarget, listLayerIds, readLinkFile, readLinkFileSync, repairLinks } from './links.js';
import { detachMount, performMount, planOverlayMount, planReadOnlyBind } from './mount.js';
import type { MountSpec } from './mount.js';
import { probeOverlay, sweepProbeLeftovers } from './probe.js';
import type { OverlayFeatures } from './probe.js';
import { NativeDiff } from './diff.js';
import { removeChownCopies, sweepIdmapScratch } from './idmap.js';
import { MappedViews } from './mapped.js';

/**
 * Marks a layer made with `create` (an image layer): `created` until its applyDiff is
 * done, then `applied`, after which it mounts read-only, also after a restart. An xattr
 * on `<id>/`, not a file, so the directory listing stays exactly Docker's. Layers from a
 * Docker store lack it; for them moby's own rule applies: a layer with `committed` (it
 * has children) mounts read-only.
 */
export const IMAGE_LAYER_XATTR = 'trusted.cairn.image-layer';
/**
 * The id map a layer's files are stored shifted by (core's idMappingsKey text), when they
 * are: an upper dir written through an id-mapped `get`, or a layer applied with
 * `applyDiff(…, { idMappings })`. diff maps them back to container ids.
 */
export const IDMAP_XATTR = 'trusted.cairn.idmap';

/** The `user.` twin of a `trusted.` xattr name: inside a user namespace trusted.* is out of reach. */
export function userXattrName(name: string, userXattr: boolean): string {
  return userXattr ? name.replace(/^trusted\./, 'user.') : name;
}


/** Driver options overlay2 understands, as moby names them. */
export interface Overlay2Options {
  /** Most lower layers a layer may sit on (moby: 128). Up to 500 with the new mount API. */
  maxDepth: number;
  /** `overlay2.size`: default size quota of container layers, bytes; 0 = none. */
  defaultSize: number;
  /** `overlay2.idmapped_mounts` (default true): false makes every id-mapped get a chown copy. */
  idmappedMounts: boolean;
  /** `overlay2.mount_program`: an absolute path to fuse-overlayfs (or a compatible program) that makes the mounts. */
  mountProgram?: string;
}

/** Parses the `overlay2.*` options (pure; whether this kernel can mount maxDepth layers is checked at open). */
export function parseOptions(options: Readonly<Record<string, string>>): Overlay2Options {
  const out: Overlay2Options = { maxDepth: DEFAULT_MAX_DEPTH, defaultSize: 0, idmappedMounts: true };
  for (const [key, value] of Object.entries(options)) {
    switch (key) {
      case 'overlay2.maxDepth': {
        const n = Number(value);
        if (!Number.isInteger(n) || n < 1 || n > KERNEL_MAX_DEPTH) {
          throw new CairnError('ERR_INVALID_OPTION', `overlay2.maxDepth must be an integer from 1 to ${KERNEL_MAX_DEPTH} (overlayfs' own limit), got ${JSON.stringify(value)}`, { subject: key });
        }
        out.maxDepth = n;
        break;
      }
      case 'overlay2.size':
        out.defaultSize = parseByteSize(value, key);
        break;
      case 'overlay2.override_kernel_check':
        break; // accepted and ignored, as moby does
      case 'overlay2.mount_program':
        if (!value.startsWith('/')) throw new CairnError('ERR_INVALID_OPTION', `overlay2.mount_program must be an absolute path (e.g. /usr/bin/fuse-overlayfs), got ${JSON.stringify(value)}`, { subject: key });
        out.mountProgram = value;
        break;
      case 'overlay2.idmapped_mounts':
        if (value !== 'true' && value !== 'false') throw new CairnError('ERR_INVALID_OPTION', `overlay2.idmapped_mounts must be true or false, got ${JSON.stringify(value)}`, { subject: key });
        out.idmappedMounts = value === 'true';
        break;
      default:
        throw new CairnError('ERR_INVALID_OPTION', `unknown option ${key} for overlay2 (known: overlay2.maxDepth, overlay2.size, overlay2.idmapped_mounts, overlay2.mount_program)`, { subject: key });
    }
  }
  return out;
}

/**
 * Lock options of create and remove: their work never takes, tries or checks a lock of
 * this driver again (it would wait on itself: create's link repair calls repairLinks
 * itself, remove reads the holds it locked with assertUnheldLocked), so they hold the
 * layer and store locks without AsyncLocalStorage frames, as get and put hold the layer's.
 * While any frame lives, Node 20 runs a hook on every promise of the process: in a loop
 * of createReadWrite+get+put+remove that was ~1.2 M instructions per layer (cachegrind).
 */
const FRAMELESS = { frameless: true } as const;

/**
 * moby's overlay2, layout for layout (see layout.ts).
 *
 * ## Several processes (core's StoreLocks, SharedMounts)
 * The layout on disk is the layer table (nothing is cached; the seal mark is read without
 * a lock, see isImageLayer). create and remove run under the store write lock
 * (short: directories, small files, the `l/` link), so "has children?" never races a new
 * child and a link repair never sees a create half made; get/put and applyDiff under the
 * layer's lock, the mount shared by every process that gets the layer.
 */
export class Overlay2Driver implements StorageDriver, LayerFilesDir {
  readonly name = 'overlay2';
  readonly layout: Layout;
  private readonly locks: StoreLocks;
  private readonly mounts: SharedMounts;
  private readonly naive: NaiveDiff;
  private readonly native: NativeDiff;
  /** Project quota control (core's, shared with vfs), made on first need or at open when overlay2.size is set. */
  private quotas: LayerQuotas;
  /** Whether id-mapped mounts work here (null) or why not; asked on the first id-mapped get or status(). */
  private idmapVerdict: Promise<string | null> | undefined;
  /** get with idMappings. */
  private readonly mapped: MappedViews;
  /** Layer xattrs, in the user.* namespace inside a user namespace (trusted.* needs CAP_SYS_ADMIN in the init namespace). */
  private readonly imageXattr: string;
  private readonly idmapXattr: string;

  private constructor(
    readonly home: string,
    readonly features: OverlayFeatures,
    readonly options: Overlay2Options,
    lockTimeoutMs: number,
  ) {
    this.layout = new Layout(home);
    this.imageXattr = userXattrName(IMAGE_LAYER_XATTR, features.userXattr);
    this.idmapXattr = userXattrName(IDMAP_XATTR, features.userXattr);
    this.quotas = new LayerQuotas(home, home); // layer dirs sit directly in the home, as moby's
    this.locks = new StoreLocks(home, { timeoutMs: lockTimeoutMs, what: `overlay2 layer table of ${home}` });
    this.mapped = new MappedViews({
      home, layout: this.layout, locks: this.locks, features, idmapXattr: this.idmapXattr,
      isReadOnly: (id) => this.isReadOnly(id), readLowers: (id) => this.readLowers(id), idOfLowerSync: (entry) => this.idOfLowerSync(entry),
      unmountLayer: (id, path) => this.unmountLayer(id, path), idmapUnsupported: () => this.idmapUnsupported(),
    });
    // mountLayer and unmountLayer take no layer lock (the store lock at most, for a link repair).
    this.mounts = new SharedMounts(home, this.locks, { mount: (id, opts) => this.mountLayer(id, opts), unmount: (id, path) => this.unmountLayer(id, path) }, { leafHooks: true });
    this.naive = new NaiveDiff({
      get: (id, opts) => this.get(id, opts), put: (id) => this.put(id), parentOf: (id) => this.parentOf(id), storedIdMap: (id) => this.storedIdMap(id),
    }, { whiteouts: 'overlay' });
    this.native = new NativeDiff(this.layout, features.userXattr);
  }

  /**
   * Probes the kernel's overlay features (the driver needs them, not just a yes), sweeps
   * what dead processes left, repairs links and drops mounts nobody holds. Holds no lock
   * when it returns.
   */
  static async open(ctx: DriverSetup<Overlay2Options>): Promise<Overlay2Driver> {
    const probe = await probeOverlay(ctx.home, ctx.settings.mountProgram ? { mountProgram: ctx.settings.mountProgram } : {});
    if (!probe.usable) throw new CairnError(probe.code, `overlay2 cannot run on ${ctx.home}: ${probe.reason}`, { subject: ctx.home });
    const options = ctx.settings;
    if (options.maxDepth > DEFAULT_MAX_DEPTH && !probe.features.newMountApi) {
      throw new CairnError('ERR_NOT_SUPPORTED',
        `overlay2.maxDepth=${options.maxDepth} needs the new mount API (fsopen, lowerdir+; Linux 6.8 or later), which this kernel lacks; use at most ${DEFAULT_MAX_DEPTH}`,
        { subject: 'overlay2.maxDepth' });
    }
    await mkdir(ctx.home, { recursive: true, mode: HOME_MODE });
    await chmod(ctx.home, HOME_MODE);
    // moby refuses overlay2.size at start-up where it cannot be enforced, rather than ignoring it.
    const quotas = new LayerQuotas(ctx.home, ctx.home);
    if (options.defaultSize > 0) await quotas.require('overlay2.size');
    const driver = new Overlay2Driver(ctx.home, probe.features, options, ctx.lockTimeoutMs);
    driver.quotas = quotas;
    await driver.recover();
    return driver;
  }

  private async recover(): Promise<void> {
    // l/ names every layer's lower dir: nobody but us may rename its links.
    await secureDir(this.layout.linkDir, 0o700, 'overlay2 link directory');
    const mounts = await readMountInfo();
    const mounted = new Set(mounts.map((m) => m.mountPoint));
    await this.locks.write('repair the overlay2 home', async () => {
      // A crash between mounting and renaming can leave a mount inside a staged dir: detach it before rm.
      await sweepLeftovers(this.home, {
        beforeDelete: async (path) => {
          for (const point of mounted) if (point.startsWith(`${path}/`)) await detachMount(point).catch(() => undefined);
        },
      });
      await sweepProbeLeftovers(this.home, mounted);
      await sweepIdmapScratch(this.home, mounted); // a dead process's only: see idmap.ts
      await repairLinks(this.layout);
      for (const id of await listLayerIds(this.layout)) {
        // Only layers with something to repair are locked: a free lock means the owner is gone.
        const merged = this.layout.mergedDir(id);
        const stale = !mounted.has(merged) && await stat(merged).then(() => true, () => false);
        if (stale || await this.native.hasInterruptedApply(id)) {
          await this.locks.tryLayer(id, `repair layer ${id}`, async () => {
            await this.native.sweepInterruptedApplies(id);
            if (!(await this.mounts.count(id))) await rmdir(merged).catch(() => undefined); // a stale mount point
          });
        }
      }
    });
    // Mounts in place of layers' merged dirs: those nobody holds (an older cairn's, a dead process's) come off.
    const homes = new Set([this.home, await realpath(this.home)]);
    const found: Array<{ id: string; path: string }> = [];
    for (const m of mounts) {
      const parts = m.mountPoint.split('/');
      const id = parts.at(-1) === 'merged' ? idFromDirName(parts.at(-2) ?? '') : undefined;
      if (id !== undefined && homes.has(parts.slice(0, -2).join('/'))) found.push({ id, path: this.layout.mergedDir(id) });
    }
    await this.mounts.sweep(found);
  }

  // ---- lifecycle -------------------------------------------------------------------

  create(id: string, parent?: string | null, opts?: CreateOptions): Promise<void> {
    return this.createLayer(id, parent, opts, true);
  }

  createReadWrite(id: string, parent?: string | null, opts?: CreateOptions): Promise<void> {
    return this.createLayer(id, parent, opts, false);
  }

  private async createLayer(id: string, parentArg: string | null | undefined, opts: CreateOptions | undefined, image: boolean): Promise<void> {
    assertValidId(id);
    const parent = normalizeParent(parentArg);
    const size = this.sizeFor(id, opts, image);
    // Refused before anything is made where quotas cannot work.
    if (size > 0) await this.quotas.require(`cannot give layer ${id} a size quota`);
    // Both locks frameless (nothing in here takes, tries or checks a lock again; see
    // FRAMELESS): a process that only makes, mounts and removes layers runs no promise hook.
    await this.locks.layer(id, `create layer ${id}`, () => this.locks.write(`create layer ${id}`, async () => {
      if (await this.exists(id)) throw new CairnError('ERR_LAYER_EXISTS', `layer ${id} already exists; remove it first or pick another id`, { subject: id });
      let lowers: string[] = [];
      let rootOwner: { uid: number; gid: number } | null = null;
      if (parent !== null) {
        if (!(await this.exists(parent))) throw new CairnError('ERR_PARENT_NOT_FOUND', `cannot create layer ${id}: parent layer ${parent} does not exist`, { subject: parent });
        const parentShort = await this.shortNameOf(parent);
        lowers = childLowers(parentShort, this.readLowersSync(parent));
        assertDepth(lowers, this.options.maxDepth, id);
        const st = statSync(this.layout.diffDir(parent));
        rootOwner = { uid: st.uid, gid: st.gid };
      }
      const short = generateShortName();
      const staged = await makeStagingDir(this.home, id, LAYER_DIR_MODE);
      try {
        // What is made in the staged dir is made synchronously (microseconds each on a local
        // filesystem, where a pool round trip costs ~45 µs of CPU: a layer took 25); the
        // writes that need fsyncs go to the pool, one job each.
        chmodSync(staged, LAYER_DIR_MODE);
        // On the layer dir before anything is made in it, as moby does: diff/ and work/
        // inherit the project id (a dir made earlier would stay outside the quota).
        if (size > 0) await this.quotas.limit(staged, size, id);
        mkdirSync(`${staged}/diff`, { mode: DIFF_MODE });
        chmodSync(`${staged}/diff`, DIFF_MODE);
        if (rootOwner) chownSync(`${staged}/diff`, rootOwner.uid, rootOwner.gid);
        if (parent !== null) {
          mkdirSync(`${staged}/work`, { mode: WORK_MODE });
          chmodSync(`${staged}/work`, WORK_MODE);
        }
        if (image) {
          try {
            sys.lsetxattrSync(staged, this.imageXattr, Buffer.from('created'));
          } catch { /* no xattrs here: the layer reads as not sealed, as before */ }
        }
        // link and lower make the layer usable: written and fsynced, with the staged dir,
        // before the rename publishes it.
        await sys.writeNewFiles(staged, [['link', short], ...(parent !== null ? [['lower', formatLowerFile(lowers)] as const] : [])], LINK_FILE_MODE);
        // The link dangles until the rename below; an open after a crash here sweeps it.
        symlinkSync(this.layout.linkTarget(id), this.layout.linkPath(short));
        await fsyncDir(this.layout.linkDir);
        if (parent !== null) appendFileSync(this.layout.committedFile(parent), '', { mode: COMMITTED_FILE_MODE });
        await commitStaged(staged, this.layout.layerDir(id));
      } catch (err) {
        await unlink(this.layout.linkPath(short)).catch(() => undefined);
        await discardDir(this.home, staged, id).catch(() => undefined);
        throw err;
      }
    }, FRAMELESS), FRAMELESS);
  }

  /** The quota a new layer gets, in bytes (0 = none); refuses what overlay2 cannot do. */
  private sizeFor(id: string, opts: CreateOptions | undefined, image: boolean): number {
    let size = image ? 0 : this.options.defaultSize;
    for (const [key, value] of Object.entries(opts?.storageOpt ?? {})) {
      if (key !== 'size') throw new CairnError('ERR_INVALID_OPTION', `unknown storage option ${key} for overlay2 (known: size)`, { subject: id });
      if (image) throw new CairnError('ERR_QUOTA_UNSUPPORTED', `layer ${id}: a size quota applies to container layers (createReadWrite) only; image layers made with create are read-only`, { subject: id });
      size = parseByteSize(value, 'storage option size');
    }
    return size;
  }

  /** LayerFilesDir: the layer's diff dir, what its applyDiff wrote, readable without a mount (moby's DiffGetter). */
  async layerFilesDir(id: string): Promise<string> {
    if (!(await this.exists(id))) throw layerNotFound(id);
    return this.layout.diffDir(id);
  }

  async exists(id: string): Promise<boolean> {
    assertValidId(id);
    try {
      // A stat of a local directory: synchronous, as readLowers.
      return statSync(this.layout.layerDir(id)).isDirectory();
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return false;
      throw err;
    }
  }

  async remove(id: string): Promise<void> {
    assertValidId(id);
    await this.locks.layer(id, `remove layer ${id}`, async () => {
      if (!(await this.exists(id))) return; // as moby: removing what is not there succeeds
      await this.mounts.assertUnheldLocked(id, 'remove');
      // The layer still exists under the store lock: create and remove of `id` (any
      // process's) hold its layer lock, which this remove has held since it looked.
      const trash = await this.locks.write(`remove layer ${id}`, async () => {
        const child = await this.findChild(id);
        if (child !== undefined) throw new CairnError('ERR_LAYER_IN_USE', `layer ${id} has a child layer ${child}; remove the child first`, { subject: id });
        const short = await readLinkFile(this.layout, id);
        // Out of sight first (atomic rename), then the link: a crash in between leaves a
        // dangling l/ entry, which the next open sweeps.
        let moved: string;
        try {
          moved = await moveToTrash(this.home, this.layout.layerDir(id), id);
        } catch (err) {
          if (errnoCode(err) === 'ENOENT') return null; // deleted by hand meanwhile: gone, as asked
          throw err;
        }
        if (short !== undefined) await unlink(this.layout.linkPath(short)).catch(() => undefined);
        return moved;
      }, FRAMELESS);
      if (trash === null) return;
      await sys.removeTree(trash).catch(() => undefined);
      await removeChownCopies(this.home, id);
      await this.mounts.forget(id);
      await this.locks.forgetLayer(id);
    }, FRAMELESS);
  }

  /** A layer whose nearest lower is `id`'s link, if any. */
  private async findChild(id: string): Promise<string | undefined> {
    const short = await readLinkFile(this.layout, id);
    if (short === undefined) return undefined;
    const entry = `l/${short}`;
    for (const other of await listLayerIds(this.layout)) {
      if (other === id) continue;
      const lowers = await this.readLowers(other).catch(() => []);
      if (lowers[0] === entry) return other;
    }
    return undefined;
  }

  // ---- mounting ----------------------------------------------------------------------

  async get(id: string, opts: GetOptions = {}): Promise<string> {
    assertValidId(id);
    return this.mounts.get(id, opts);
  }

  async put(id: string, opts: PutOptions = {}): Promise<void> {
    assertValidId(id);
    await this.mounts.put(id, opts);
  }

  /** The mount spec `get` would use (exposed for tests and `metadata`). */
  async mountSpecFor(id: string, mountLabel?: string): Promise<MountSpec | null> {
    const lowers = await this.readLowers(id);
    if (lowers.length === 0) {
      return this.isImageLayer(id) ? planReadOnlyBind(this.layout.diffDir(id), this.layout.mergedDir(id)) : null;
    }
    const program = this.features.mountProgram;
    const spec = planOverlayMount({
      home: this.home, id, lowers, readOnly: await this.isReadOnly(id),
      indexOff: this.features.indexOff, userXattr: this.features.userXattr && !program, newMountApi: this.features.newMountApi, mountLabel,
      // A program takes its options as one argument (up to 128 KiB), not one page of mount data.
      ...(program ? { pageSize: 128 * 1024 } : {}),
    });
    return program ? { ...spec, program } : spec;
  }

  private async mountLayer(id: string, opts: GetOptions): Promise<string> {
    if (!(await this.exists(id))) throw layerNotFound(id);
    await this.ensureOwnLink(id);
    if (opts.idMappings) return this.mapped.mount(id, validateIdMappings(opts.idMappings), opts.mountLabel);
    const spec = await this.mountSpecFor(id, opts.mountLabel);
    // moby: a layer without lowers is used as is; there is nothing to overlay.
    if (spec === null) return this.layout.diffDir(id);
    const merged = this.layout.mergedDir(id);
    try {
      mkdirSync(merged, { mode: 0o700 });
    } catch (err) {
      if (errnoCode(err) !== 'EEXIST') throw err;
    }
    try {
      try {
        await performMount(spec);
      } catch (err) {
        // A lost l/ link shows up as ENOENT from the mount; checking all lowers up front
        // would cost a stat per layer on every get (128 on a deep stack), so repair on failure.
        if (errnoCode(err) !== 'ENOENT' || spec.type !== 'overlay') throw err;
        await this.locks.write(`repair the links of layer ${id}`, () => repairLinks(this.layout));
        await performMount(spec);
      }
    } catch (err) {
      await rmdir(merged).catch(() => undefined);
      throw new CairnError(errnoCode(err) === 'EPERM' ? 'ERR_PREREQUISITES' : 'ERR_NOT_SUPPORTED',
        `cannot mount layer ${id}: ${(err as Error).message}`, { subject: id, cause: err });
    }
    return merged;
  }

  // ---- id-mapped views (mapped.ts decides what to mount, idmap.ts mounts it) ----------

  /** The id map layer `id`'s files are stored shifted by, or null (stored in container ids). */
  storedIdMap(id: string): Promise<IdMappings | null> {
    return this.mapped.storedIdMap(id);
  }

  /** null when id-mapped mounts work here, else why the driver makes chown copies instead. */
  idmapUnsupported(): Promise<string | null> {
    this.idmapVerdict ??= this.features.mountProgram ? Promise.resolve(`overlay2.mount_program=${this.features.mountProgram} mounts cannot stack on id-mapped lowers`)
      : this.options.idmappedMounts
        ? probeIdmappedMounts(this.home).catch((err: unknown) => `the id-mapped mount probe failed: ${(err as Error).message}`)
        : Promise.resolve('overlay2.idmapped_mounts=false');
    return this.idmapVerdict;
  }

  /** `path` null: a get died mid-mount; the merged dir is where it would have mounted. */
  private async unmountLayer(id: string, recorded: string | null): Promise<void> {
    if (recorded === this.layout.diffDir(id)) return;
    const path = recorded ?? this.layout.mergedDir(id);
    try {
      await detachMount(path);
    } catch (err) {
      // EINVAL: not a mount point any more (someone unmounted it behind our back).
      if (errnoCode(err) !== 'EINVAL' && errnoCode(err) !== 'ENOENT') throw err;
    }
    try {
      rmdirSync(path);
    } catch { /* busy or not empty: left, as removeMountPoint does */ }
  }

  /** An image layer (made with `create`, or a Docker layer that has children) has no upper when mounted. */
  private async isReadOnly(id: string): Promise<boolean> {
    if (this.isImageLayer(id)) return true;
    try {
      statSync(this.layout.committedFile(id));
      return true;
    } catch {
      return false;
    }
  }

  /**
   * Made with `create` and applied: read-only from now on. Read from the layer dir's xattr
   * on every call, with no lock and no cache: the mark only ever goes from `created` to
   * `applied` (sealIfImageLayer, in applyDiff under the layer's lock), so what one read
   * returns is a state the layer had, and a get asks while holding the layer's lock, when
   * it cannot change at all. A cache would need the store lock to know it is not stale (a
   * layer removed and made again under the same id by another process): one lgetxattr on a
   * local filesystem (microseconds, so synchronous, as StoreLocks reads its lock files) costs
   * less than that lock.
   */
  private isImageLayer(id: string): boolean {
    return this.isMarked(this.layout.layerDir(id), 'applied');
  }

  private isMarked(layerDir: string, mark: 'created' | 'applied'): boolean {
    try {
      return sys.lgetxattrSync(layerDir, this.imageXattr)?.toString() === mark;
    } catch {
      return false; // no such layer: its callers report that
    }
  }

  /** After applyDiff: an image layer becomes read-only (the contract), a container layer stays as it is. */
  private async sealIfImageLayer(id: string): Promise<void> {
    const dir = this.layout.layerDir(id);
    if (!this.isMarked(dir, 'created')) return;
    sys.lsetxattrSync(dir, this.imageXattr, Buffer.from('applied'));
    await fsyncDir(dir); // the seal is inode metadata: durable before applyDiff reports done
  }

  /** Repairs the layer's own `l/` link when it is missing or wrong (under the store write lock: l/ is shared). */
  private async ensureOwnLink(id: string): Promise<void> {
    // Checked synchronously (a small file and a readlink, microseconds each): every get
    // asks, and a pool round trip apiece cost more CPU than the rest of a get+put.
    const short = readLinkFileSync(this.layout, id);
    if (short !== undefined && linkIsRight(this.layout, id, short)) return;
    await this.locks.write(`repair the link of layer ${id}`, async () => {
      const again = await readLinkFile(this.layout, id);
      if (again === undefined) await repairLinks(this.layout);
      else await ensureSymlink(this.layout, id, again);
    });
  }

  // ---- reading the layout -----------------------------------------------------------

  /** Called by create only, which holds the store write lock (frameless: not asked for again here). */
  private async shortNameOf(id: string): Promise<string> {
    let short = readLinkFileSync(this.layout, id);
    if (short === undefined) {
      await repairLinks(this.layout);
      short = await readLinkFile(this.layout, id);
    }
    if (short === undefined) short = generateShortName();
    return short;
  }

  /**
   * The layer's `lower` entries (`l/…`), nearest parent first; [] for a base layer. Read
   * synchronously, as the layer's marks are (isImageLayer): a few hundred bytes of a local
   * file, where a pool round trip per read added up over the lowers of every apply.
   */
  async readLowers(id: string): Promise<string[]> {
    return this.readLowersSync(id);
  }

  private readLowersSync(id: string): string[] {
    try {
      return parseLowerFile(readFileSync(this.layout.lowerFile(id), 'utf8'), id);
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return [];
      throw err;
    }
  }

  /** The layer's parent id, found through its first lower's `l/` link; null for a base layer. */
  async parentOf(id: string): Promise<string | null> {
    const lowers = await this.readLowers(id);
    if (lowers.length === 0) return null;
    return this.idOfLower(lowers[0]!);
  }

  /** Resolves an `l/<short>` entry to the layer id its symlink points at. */
  async idOfLower(entry: string): Promise<string> {
    return this.idOfLowerSync(entry);
  }

  private idOfLowerSync(entry: string): string {
    return this.layerOfLinkTarget(entry, readlinkSync(`${this.home}/${entry}`));
  }

  private layerOfLinkTarget(entry: string, target: string): string {
    const id = idFromLinkTarget(target);
    if (id === undefined) throw new CairnError('ERR_BACKEND_FAILED', `link ${entry} points at ${target}, not at a layer; remove the link and reopen the driver to have it rebuilt`, { subject: entry });
    return id;
  }

  // ---- diffs --------------------------------------------------------------------------

  /** Native diff applies when `parent` is the layer's direct parent and the kernel writes plain changesets. */
  private async useNative(id: string, parent: string | null | undefined, forApply = false): Promise<boolean> {
    // Applying into diff/ is right whoever mounts it; with a mount program only reading the
    // upper dir as a changeset is not (the program keeps its own whiteout format there).
    if (!this.features.nativeDiff && !(forApply && this.features.mountProgram)) return false;
    const direct = await this.parentOf(id);
    const wanted = parent === undefined ? direct : normalizeParent(parent);
    return wanted === direct;
  }

  async diff(id: string, parent?: string | null): Promise<Readable> {
    await this.assertLayer(id);
    if (await this.useNative(id, parent)) return this.native.diff(id, await this.storedIdMap(id));
    return this.naive.diff(id, parent);
  }

  async changes(id: string, parent?: string | null): Promise<Change[]> {
    await this.assertLayer(id);
    if (await this.useNative(id, parent)) return this.native.changes(id, await this.readLowers(id));
    return this.naive.changes(id, parent);
  }

  async applyDiff(id: string, parent: string | null | undefined, tar: Readable | AsyncIterable<Uint8Array>, opts: ApplyDiffOptions = {}): Promise<number> {
    assertValidId(id);
    // Under the layer's lock throughout, so no get (of any process) can mount it while
    // diff/ is being swapped, and the seal lands before another apply can start.
    return this.locks.layer(id, `apply a diff to layer ${id}`, async () => {
      await this.assertLayer(id);
      const maps = await this.applyMap(id, opts);
      const applyOpts = {
        ...(maps ? { idMappings: maps } : {}), ...(opts.ignoreChownErrors ? { ignoreChownErrors: true } : {}),
        ...(this.features.userXattr ? { userXattr: true } : {}),
      };
      let bytes: number;
      if (await this.useNative(id, parent, true)) {
        const staged = (await this.mounts.count(id)) === 0 && await this.native.isEmpty(id);
        bytes = await this.native.applyDiff(id, tar, staged, applyOpts);
      } else {
        bytes = await this.naive.applyDiff(id, parent, tar, applyOpts);
      }
      if (maps && !(await this.storedIdMap(id))) await this.mapped.recordIdMap(id, maps);
      await this.sealIfImageLayer(id);
      return bytes;
    });
  }

  /**
   * The map an applyDiff stores owners by: the one asked for, else the one the layer or its
   * parent is stored by. One image, one id space: a map that differs from the layer's own
   * or from any lower's is refused (get could not show the stack as one).
   */
  private async applyMap(id: string, opts: ApplyDiffOptions): Promise<IdMappings | null> {
    const asked = opts.idMappings ? validateIdMappings(opts.idMappings) : null;
    const lowerIds = this.readLowersSync(id).map((l) => this.idOfLowerSync(l));
    const held = this.mapped.storedIdMapSync(id) ?? (lowerIds.length > 0 ? this.mapped.storedIdMapSync(lowerIds[0]!) : null);
    const maps = asked ?? held;
    for (const layer of [id, ...lowerIds]) {
      const stored = this.mapped.storedIdMapSync(layer);
      const fresh = layer === id && stored === null; // the layer itself takes the map now
      if (!fresh && !sameIdMappings(stored, maps)) {
        throw new CairnError('ERR_INVALID_OPTION',
          `layer ${layer} is stored ${stored ? `shifted by ${idMappingsKey(stored)}` : 'in container ids'}; apply ${id} with ${stored ? 'the same idMappings' : 'no idMappings (or the whole image with them)'}`,
          { subject: id });
      }
    }
    if (asked && !(await this.storedIdMap(id)) && !(await this.native.isEmpty(id))) {
      throw new CairnError('ERR_INVALID_OPTION', `layer ${id} already holds files in container ids; idMappings can be given only for its first applyDiff`, { subject: id });
    }
    return maps;
  }


  async diffSize(id: string, parent?: string | null): Promise<number> {
    await this.assertLayer(id);
    if (await this.useNative(id, parent)) return this.native.diffSize(id);
    return this.naive.diffSize(id, parent);
  }

  private async assertLayer(id: string): Promise<void> {
    assertValidId(id);
    if (!(await this.exists(id))) throw layerNotFound(id);
  }

  // ---- reporting ----------------------------------------------------------------------

  async status(): Promise<Array<[string, string]>> {
    return [
      ['Backing Filesystem', this.features.backingFs],
      ['Supports d_type', String(this.features.dType)],
      ['Using metacopy', String(this.features.metacopy)],
      ['Native Overlay Diff', String(this.features.nativeDiff)],
      ['userxattr', String(this.features.userXattr)],
      ...(this.features.mountProgram ? [['Mount program', this.features.mountProgram] as [string, string]] : []),
      ['Id-mapped mounts', await this.idmapUnsupported().then((why) => (why === null ? 'yes' : `no, chown copies (${why})`))],
    ];
  }

  async metadata(id: string): Promise<Record<string, string>> {
    await this.assertLayer(id);
    const out: Record<string, string> = {
      WorkDir: this.layout.workDir(id),
      MergedDir: this.layout.mergedDir(id),
      UpperDir: this.layout.diffDir(id),
    };
    const lowers = await this.readLowers(id);
    if (lowers.length > 0) {
      const ids = await Promise.all(lowers.map((l) => this.idOfLower(l)));
      out.LowerDir = ids.map((l) => this.layout.diffDir(l)).join(':');
    }
    return out;
  }

  /** Hold count of a layer's mount, every process counted (for tests and diagnostics). */
  mountCount(id: string): Promise<number> {
    assertValidId(id);
    return this.mounts.count(id);
  }

  /** Drops this driver's mount holds, unmounting what nobody else holds; holds no lock afterwards. */
  async cleanup(): Promise<void> {
    const errors = await this.mounts.releaseAll();
    await this.mapped.drain();
    await this.locks.close();
    if (errors.length > 0) {
      throw new CairnError('ERR_LAYER_IN_USE', `overlay2 cleanup: ${errors.length} layer(s) could not be unmounted: ${errors.map((e) => (e as Error).message).join('; ')}`, { cause: errors[0] });
    }
  }
}

/** True when `l/<short>` is the symlink to the layer's diff (read only: no lock needed). */
function linkIsRight(layout: Layout, id: string, short: string): boolean {
  try {
    return readlinkSync(layout.linkPath(short)) === layout.linkTarget(id);
  } catch {
    return false;
  }
}

