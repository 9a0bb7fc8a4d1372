import { createHash } from 'node:crypto';
import { constants as fsConstants } from 'node:fs';
import { chmod, chown, copyFile, mkdir, readdir, realpath, rename, rm, rmdir, stat, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import type { Readable } from 'node:stream';
import {
  CairnError, STAGING_DIR, TRASH_DIR, SharedMounts, SharedTable, StoreLocks, assertValidId, commitStaged, copyTree,
  detectBackingFs, errnoCode, fsyncDir, isOwnerAlive, isValidId, LayerQuotas, makeStagingDir, moveToTrash, normalizeParent,
  parseByteSize, readMountInfo, sweepLeftovers, translateSpaceError, mountLabelOption, idMappingsKey, parseIdMappingsKey,
  probeIdmappedMounts, sameIdMappings, validateIdMappings, attachIdmappedView, layerNotFound,
} from '@cairnfs/core';
import { NaiveDiff, NaiveDiffDriver, applyLayer } from '@cairnfs/archive';
import type { ApplyDiffOptions, CreateOptions, DriverSetup, GetOptions, IdMappings, PutOptions, StorageDriver, LayerFilesDir } from '@cairnfs/core';
import { constants as sysConstants, mount, removeTree, shiftOwnership, umount2 } from '@cairnfs/sys';
import { VfsLayout } from './layout.js';
import { layerMeta } from './meta.js';
import type { LayerMeta } from './meta.js';

/** The parsed `vfs.*` options. */
export interface VfsSettings {
  /** `vfs.size`: default size quota of container layers, bytes; 0 = none. */
  defaultSize: number;
  /** `vfs.idmapped_mounts` (default true): false makes every id-mapped get a chown copy. */
  idmappedMounts: boolean;
}

/** An entry of the layer table; `committed` is false while a create is still copying (or died doing so). */
interface LayerState extends LayerMeta {
  committed: boolean;
}

type Table = Map<string, LayerState>;

/**
 * The vfs driver: every layer is a full copy of its parent (cloned extent by extent
 * where the filesystem has reflinks: btrfs, xfs with reflink=1), as moby's vfs. It runs
 * anywhere and is the reference the other drivers are measured against.
 *
 * ## Crash safety: the order of things on disk
 * - create: the metadata file (parent, kind) is written and fsynced *first*, then the
 *   tree is copied into `.staging/` and renamed to `dir/<id>`. So a layer directory
 *   never exists without its metadata. A crash before the rename leaves a metadata file
 *   without a directory (and a staging leftover): the next process that can take that
 *   layer's lock deletes both. `exists()` is true only once `dir/<id>` is there.
 * - remove: `dir/<id>` is renamed into `.trash/` first (the layer is gone at that
 *   instant), then the metadata is deleted, then the disk reclaimed.
 * - applyDiff: applied to a staged (reflinked where possible) copy; only a complete
 *   apply is swapped in, with the swap journaled in the metadata (`replacing`), so a
 *   failed or interrupted apply leaves the layer exactly as it was (or, after a crash
 *   between the two renames of the swap, exactly as the finished apply left it).
 *
 * ## Several processes (core's StoreLocks, SharedMounts)
 * The layer table (meta/ and dir/) is read under the store lock and reloaded when another
 * process changed it. create holds the new layer's lock throughout, and its parent's
 * lock while it registers itself as a child (from then on the parent can be neither
 * removed nor re-applied); the copy runs outside the store lock. applyDiff holds the
 * layer's lock throughout and the store lock only for the swap. A create or apply that
 * died is recognised by its layer lock being free, and repaired by whoever comes next.
 *
 * ## Read-only image layers
 * moby's vfs hands out image layers writable. cairn's contract says an image layer is
 * read-only once its applyDiff is done, so `get` of such a layer bind-mounts its
 * directory read-only onto itself (same path as Docker's layout), and the last `put`
 * (of any process) unmounts it. Container layers and image layers not yet applied are
 * handed out as plain directories.
 */
export class VfsDriver extends NaiveDiffDriver implements StorageDriver, LayerFilesDir {
  readonly name = 'vfs';
  private readonly layout: VfsLayout;
  private readonly locks: StoreLocks;
  private readonly table: SharedTable<Table>;
  private readonly mounts: SharedMounts;
  protected readonly naive: NaiveDiff;
  /** Whether id-mapped mounts work here (null) or why not; asked on the first id-mapped get or status(). */
  private idmapVerdict: Promise<string | null> | undefined;

  private constructor(
    readonly home: string,
    lockTimeoutMs: number,
    private readonly reflink: boolean,
    /** xfs project quotas (core's, shared with overlay2), keyed on the layer dirs under dir/. */
    private readonly quotas: LayerQuotas,
    /** `vfs.size`: default size quota of container layers, bytes; 0 = none. */
    private readonly defaultSize: number,
    private readonly idmappedMounts: boolean,
  ) {
    super();
    this.layout = new VfsLayout(home);
    this.locks = new StoreLocks(home, { timeoutMs: lockTimeoutMs, what: `vfs layer table of ${home}` });
    this.table = new SharedTable(this.locks, () => this.loadTable());
    this.mounts = new SharedMounts(home, this.locks, {
      mount: (id, opts) => this.mountLayer(id, opts),
      unmount: (id, path) => this.unmountLayer(id, path),
    });
    this.naive = new NaiveDiff({
      get: (id, opts) => this.get(id, opts),
      put: (id) => this.put(id),
      parentOf: (id) => this.table.read(`read the parent of layer ${id}`, (t) => this.committed(t, id).parent),
      storedIdMap: (id) => this.storedIdMap(id),
    }, { whiteouts: 'delete' });
  }

  /** Opens (creating if needed) the home and repairs what dead processes left behind. Holds no lock when it returns. */
  static async open(setup: DriverSetup<VfsSettings>): Promise<VfsDriver> {
    const { home, settings } = setup;
    await mkdir(home, { recursive: true, mode: 0o700 });
    const quotas = new LayerQuotas(home, new VfsLayout(home).layersDir);
    // As moby, a default size that cannot be enforced is refused at start-up, not ignored.
    if (settings.defaultSize > 0) await quotas.require('vfs.size');
    const layout = new VfsLayout(home);
    await mkdir(layout.layersDir, { recursive: true, mode: 0o700 });
    await mkdir(layout.metaDir, { recursive: true, mode: 0o700 });
    await mkdir(layout.idmappedDir, { recursive: true, mode: 0o700 });
    const reflink = await probeReflink(home);
    const driver = new VfsDriver(home, setup.lockTimeoutMs, reflink, quotas, settings.defaultSize, settings.idmappedMounts);
    await driver.recover();
    return driver;
  }

  /** Reads the layer table from disk: meta/ says what layers there are, dir/ which are complete. */
  private async loadTable(): Promise<Table> {
    const { layout } = this;
    const table: Table = new Map();
    const dirs = new Set(await readdir(layout.layersDir));
    for (const name of await readdir(layout.metaDir)) {
      const id = layout.idOfMetaFile(name);
      if (id === null || !isValidId(id)) continue;
      const meta = await layerMeta.read(join(layout.metaDir, name));
      if (!meta) continue; // removed between the readdir and the read
      // Mid-swap the directory is briefly absent: the layer still exists (see applyDiff).
      table.set(id, { ...meta, committed: dirs.has(id) || meta.replacing !== undefined });
    }
    // A directory without metadata predates cairn (Docker's own vfs layout): a base layer.
    for (const id of dirs) {
      if (!table.has(id) && isValidId(id)) table.set(id, { parent: null, kind: 'container', sealed: false, committed: true });
    }
    return table;
  }

  /**
   * Brings disk in line after crashes, as far as no live process owns the pieces: creates
   * that died before their rename, applies that died mid-swap, Docker directories without
   * metadata, leftovers of dead processes, mounts nobody holds. Looks under the read lock
   * first and takes the write lock only when there is something to repair.
   */
  private async recover(): Promise<void> {
    const { layout } = this;
    const work = await this.table.read('open the vfs driver', async (t) => {
      const pending = [...t].filter(([, l]) => !l.committed || l.replacing !== undefined).map(([id]) => id);
      const metas = new Set((await readdir(layout.metaDir)).map((n) => layout.idOfMetaFile(n)));
      const unrecorded = [...t.keys()].filter((id) => !metas.has(id));
      const strays = (await readdir(layout.metaDir)).some((n) => layout.idOfMetaFile(n) === null);
      const leftovers = (await Promise.all([STAGING_DIR, TRASH_DIR].map((d) => readdir(join(this.home, d)).catch(() => [])))).flat();
      return { pending, unrecorded, dirty: pending.length + unrecorded.length > 0 || strays || leftovers.some((n) => !isOwnerAlive(n)) };
    });
    if (work.dirty) {
      await this.table.write('repair the vfs home after a crash', async (t) => {
        for (const name of await readdir(layout.metaDir)) {
          // A temp file of a write that died (writeFileAtomic's `.<name>.tmp`), unless its writer still runs.
          if (layout.idOfMetaFile(name) === null) await rm(join(layout.metaDir, name), { force: true });
        }
        for (const id of work.pending) await this.locks.tryLayer(id, `repair layer ${id}`, () => this.repairLayer(t, id));
        for (const id of work.unrecorded) {
          const layer = t.get(id);
          if (layer?.committed && !await isFile(layout.metaPath(id))) await layerMeta.write(layout.metaPath(id), { parent: layer.parent, kind: layer.kind, sealed: layer.sealed });
        }
        const keep = new Set([...t.values()].map((l) => l.replacing).filter((r): r is string => r !== undefined));
        // Under the write lock, as every repair is: a swap being finished cannot lose its staged tree.
        await sweepLeftovers(this.home, { keep: (path) => keep.has(basename(path)) });
      });
    }
    // Read-only views under dir/ and id-mapped views under idmapped/ that nobody holds come off.
    const table = await readMountInfo();
    const mounted: Array<{ id: string; path: string }> = [];
    for (const dir of [layout.layersDir, layout.idmappedDir]) {
      const real = await realpath(dir);
      for (const m of table) {
        const id = m.mountPoint.startsWith(`${real}/`) ? m.mountPoint.slice(real.length + 1).split('/')[0]! : '';
        if (isValidId(id)) mounted.push({ id, path: m.mountPoint });
      }
    }
    await this.mounts.sweep(mounted);
  }

  /**
   * Finishes or undoes what a dead create or apply left of layer `id` (the caller holds
   * the write lock and the layer's lock, so its owner is gone).
   */
  private async repairLayer(t: Table, id: string): Promise<void> {
    const { layout } = this;
    const meta = await layerMeta.read(layout.metaPath(id));
    if (!meta) return;
    if (meta.replacing !== undefined) {
      const staged = join(this.home, STAGING_DIR, basename(meta.replacing));
      // Died between "old tree to trash" and "staged tree into place": finish the swap.
      if (!await isDir(layout.layerPath(id)) && await isDir(staged)) await rename(staged, layout.layerPath(id));
      delete meta.replacing;
      if (await isDir(layout.layerPath(id))) await layerMeta.write(layout.metaPath(id), meta);
    }
    if (!await isDir(layout.layerPath(id))) {
      await layerMeta.remove(layout.metaPath(id)); // create died before its rename
      t.delete(id);
      return;
    }
    t.set(id, { ...meta, committed: true });
  }

  create(id: string, parent?: string | null, opts?: CreateOptions): Promise<void> {
    return this.createLayer(id, parent, opts, 'image');
  }

  createReadWrite(id: string, parent?: string | null, opts?: CreateOptions): Promise<void> {
    return this.createLayer(id, parent, opts, 'container');
  }

  private async createLayer(id: string, parent: string | null | undefined, opts: CreateOptions | undefined, kind: LayerMeta['kind']): Promise<void> {
    assertValidId(id);
    const parentId = normalizeParent(parent);
    const size = sizeFor(id, opts?.storageOpt, kind, this.defaultSize);
    // Refused before anything is made where quotas cannot work.
    if (size > 0) await this.quotas.require(`cannot give layer ${id} a size quota`);
    await this.locks.layer(parentId === null ? [id] : [id, parentId], `create layer ${id}`, async (unlock) => {
      // Claim the id and register under the parent at once, so a concurrent remove or
      // apply of the parent sees this child (ERR_LAYER_IN_USE) for the whole copy.
      await this.table.write(`create layer ${id}`, async (t) => {
        const existing = t.get(id);
        if (existing?.committed) {
          throw new CairnError('ERR_LAYER_EXISTS', `layer ${id} already exists; remove it first or pick another id`, { subject: id });
        }
        // Holding its lock, an uncommitted entry can only be the leftover of a dead create.
        if (existing) await this.repairLayer(t, id);
        if (parentId !== null && !t.get(parentId)?.committed) {
          throw new CairnError('ERR_PARENT_NOT_FOUND', `cannot create layer ${id}: parent layer ${parentId} does not exist`, { subject: parentId });
        }
        // The parent's tree, so its id map too.
        const idmap = parentId === null ? undefined : t.get(parentId)?.idmap;
        const meta: LayerMeta = { parent: parentId, kind, sealed: false, ...(idmap ? { idmap } : {}) };
        await layerMeta.write(this.layout.metaPath(id), meta);
        t.set(id, { ...meta, committed: false });
      });
      let staged: string | null = null;
      try {
        staged = await makeStagingDir(this.home, id);
        // Before the copy, as moby: the parent's tree counts against the layer's limit.
        if (size > 0) await this.quotas.limit(staged, size, id);
        if (parentId === null) {
          await chown(staged, 0, 0);
          await chmod(staged, 0o755);
        } else {
          await copyTree(this.layout.layerPath(parentId), staged, { reflink: this.reflink ? 'always' : 'never' });
        }
        // The parent is copied: it may change or go now (this child keeps it from going).
        if (parentId !== null) await unlock(parentId);
        await this.table.write(`create layer ${id}`, async (t) => {
          await commitStaged(staged!, this.layout.layerPath(id));
          const claimed = t.get(id);
          t.set(id, { ...(claimed ?? { parent: parentId, kind, sealed: false }), committed: true });
        });
      } catch (err) {
        if (staged) await removeTree(staged).catch(() => undefined);
        await this.table.write(`undo the create of layer ${id}`, async (t) => {
          if (t.get(id)?.committed) return;
          await layerMeta.remove(this.layout.metaPath(id));
          t.delete(id);
        }).catch(() => undefined);
        throw translateSpaceError(err, `creating vfs layer ${id}`);
      }
    });
  }

  /** LayerFilesDir: the layer's directory (its whole tree), readable without the read-only view `get` mounts. */
  async layerFilesDir(id: string): Promise<string> {
    if (!(await this.exists(id))) throw layerNotFound(id);
    return this.layout.layerPath(id);
  }

  async exists(id: string): Promise<boolean> {
    assertValidId(id);
    return this.table.read(`look up layer ${id}`, (t) => t.get(id)?.committed === true);
  }

  async remove(id: string): Promise<void> {
    assertValidId(id);
    await this.locks.layer(id, `remove layer ${id}`, async () => {
      await this.mounts.assertUnheld(id, 'remove');
      const trash = await this.table.write(`remove layer ${id}`, async (t) => {
        const layer = t.get(id);
        if (!layer) return null; // as moby: removing what is not there is not an error
        if (!layer.committed) {
          await this.repairLayer(t, id); // a dead create's leftover: ours to tidy, as we hold its lock
          return null;
        }
        const children = await this.childrenOf(t, id);
        if (children.length > 0) {
          throw new CairnError('ERR_LAYER_IN_USE', `layer ${id} has child layers (${children.slice(0, 5).join(', ')}${children.length > 5 ? ', …' : ''}); remove them first`, { subject: id });
        }
        const moved = await moveToTrash(this.home, this.layout.layerPath(id), id);
        t.delete(id);
        await layerMeta.remove(this.layout.metaPath(id));
        return moved;
      });
      if (trash === null) return;
      await removeTree(trash).catch(() => undefined);
      for (const name of await readdir(this.layout.copiesDir).catch(() => [] as string[])) {
        if (name.startsWith(`${id}-`) && /^[0-9a-f]{16}$/.test(name.slice(id.length + 1))) await removeTree(join(this.layout.copiesDir, name));
      }
      await this.mounts.forget(id);
      await this.locks.forgetLayer(id);
    });
  }

  async get(id: string, opts: GetOptions = {}): Promise<string> {
    assertValidId(id);
    return this.mounts.get(id, opts);
  }

  async put(id: string, opts: PutOptions = {}): Promise<void> {
    assertValidId(id);
    return this.mounts.put(id, opts);
  }

  /** The hold count of a layer's mount, every process counted (for tests and diagnostics). */
  mountCount(id: string): Promise<number> {
    assertValidId(id);
    return this.mounts.count(id);
  }

  private async mountLayer(id: string, opts: GetOptions): Promise<string> {
    const layer = await this.table.read(`mount layer ${id}`, (t) => this.committed(t, id));
    const path = this.layout.layerPath(id);
    if (opts.idMappings) {
      const mapped = await this.mountMapped(id, layer, validateIdMappings(opts.idMappings));
      if (mapped !== null) return mapped;
    }
    if (layer.sealed) {
      // Bind onto itself, then make that bind read-only (a bind mount ignores MS_RDONLY on the first call).
      await mount(path, path, null, sysConstants.MS_BIND);
      try {
        await mount('none', path, null, sysConstants.MS_BIND | sysConstants.MS_REMOUNT | sysConstants.MS_RDONLY, mountLabelOption(opts.mountLabel));
      } catch (err) {
        await umount2(path, sysConstants.MNT_DETACH).catch(() => undefined);
        throw err;
      }
    }
    return path;
  }

  /**
   * Unmounts the view a get made: an id-mapped view, or the read-only bind of a sealed
   * layer (an unsealed layer was never mounted: EINVAL). `path` null (a get that died
   * mid-mount): whichever of the two is there.
   */
  private async unmountLayer(id: string, path: string | null): Promise<void> {
    if (path === null || path === this.layout.idmappedPath(id)) {
      await umount2(this.layout.idmappedPath(id), sysConstants.MNT_DETACH).catch(() => undefined);
      await rmdirQuiet(this.layout.idmappedPath(id));
      if (path !== null) return;
    }
    try {
      await umount2(this.layout.layerPath(id));
    } catch (err) {
      if (errnoCode(err) !== 'EINVAL' && errnoCode(err) !== 'ENOENT') throw err;
    }
  }

  /** null when id-mapped mounts work here, else why the driver makes chown copies instead. */
  idmapUnsupported(): Promise<string | null> {
    this.idmapVerdict ??= this.idmappedMounts
      ? probeIdmappedMounts(this.home).catch((err: unknown) => `the id-mapped mount probe failed: ${(err as Error).message}`)
      : Promise.resolve('vfs.idmapped_mounts=false');
    return this.idmapVerdict;
  }



  /**
   * get with idMappings: the layer's own dir attached through an id-mapped mount at
   * `idmapped/<id>` (read-only for sealed image layers); files written through it are
   * stored back in container ids, so nothing needs recording. Where id-mapped mounts do
   * not work: a container layer (already the container's own full copy) is shifted in
   * place and its map recorded; an image layer gets a chown copy, kept per map and bound
   * read-only. A layer already stored shifted by the same map is handed out as it is
   * (null: the caller's ordinary path); by another map, refused.
   */
  private async mountMapped(id: string, layer: LayerState, maps: IdMappings): Promise<string | null> {
    if (layer.idmap !== undefined) {
      if (sameIdMappings(parseIdMappingsKey(layer.idmap, `layer ${id}`), maps)) return null;
      throw new CairnError('ERR_INVALID_OPTION',
        `layer ${id} is stored shifted by the id map ${layer.idmap}; it cannot be shown with ${idMappingsKey(maps)} (use the same idMappings)`, { subject: id });
    }
    const target = this.layout.idmappedPath(id);
    const why = await this.idmapUnsupported();
    if (why === null) {
      await attachIdmappedView(this.layout.layerPath(id), target, maps, { readOnly: layer.sealed, subject: id });
      return target;
    }
    if (!layer.sealed) {
      // The container's own copy: shift it in place, once, and remember the map.
      await shiftOwnership(this.layout.layerPath(id), maps, true);
      // The table changes (other processes must see the map): under the store write lock.
      await this.table.write(`record the id map of layer ${id}`, async (t) => {
        const now = this.committed(t, id);
        const { committed: _c, ...meta } = { ...now, idmap: idMappingsKey(maps) };
        await layerMeta.write(this.layout.metaPath(id), meta);
        t.set(id, { ...meta, committed: true });
      });
      return null;
    }
    const copy = this.layout.copyPath(id, createHash('sha256').update(idMappingsKey(maps)).digest('hex').slice(0, 16));
    if (!(await isDir(copy))) {
      await mkdir(this.layout.copiesDir, { recursive: true, mode: 0o700 });
      const staged = await makeStagingDir(this.home, `${id}-idmap`);
      try {
        await copyTree(this.layout.layerPath(id), staged, { reflink: this.reflink ? 'always' : 'never' });
        await shiftOwnership(staged, maps, true);
        await rename(staged, copy);
      } catch (err) {
        await removeTree(staged).catch(() => undefined);
        throw translateSpaceError(err, `making a chown copy of vfs layer ${id}`);
      }
    }
    await mkdir(target, { mode: 0o700 }).catch((err) => { if (errnoCode(err) !== 'EEXIST') throw err; });
    try {
      await mount(copy, target, null, sysConstants.MS_BIND);
      await mount('none', target, null, sysConstants.MS_BIND | sysConstants.MS_REMOUNT | sysConstants.MS_RDONLY);
    } catch (err) {
      await umount2(target, sysConstants.MNT_DETACH).catch(() => undefined);
      await rmdirQuiet(target);
      throw err;
    }
    return target;
  }

  /**
   * Applies a changeset to a staged copy of the layer and swaps it in only when the
   * whole tar applied, so a corrupt or truncated tar leaves the layer untouched. The
   * copy is a reflink where the filesystem clones, a byte copy elsewhere.
   *
   * Refused (ERR_LAYER_IN_USE) while the layer is mounted by anyone (the swap would pull
   * the tree from under its users) or has children (they were copied from the old tree).
   */
  async applyDiff(id: string, parent: string | null | undefined, tar: Readable | AsyncIterable<Uint8Array>, opts: ApplyDiffOptions = {}): Promise<number> {
    assertValidId(id);
    normalizeParent(parent); // validated only: the layer already holds its parent's tree
    return this.locks.layer(id, `apply a diff to layer ${id}`, async () => {
      const maps = await this.table.read(`apply a diff to layer ${id}`, async (t) => {
        const layer = this.committed(t, id);
        const children = await this.childrenOf(t, id);
        if (children.length > 0) {
          throw new CairnError('ERR_LAYER_IN_USE', `cannot apply a diff to layer ${id}: layers ${children.join(', ')} were created on it`, { subject: id });
        }
        return this.applyMap(id, layer, opts);
      });
      await this.mounts.assertUnheld(id, 'apply a diff to');
      const path = this.layout.layerPath(id);
      const staged = await makeStagingDir(this.home, id);
      let bytes: number;
      try {
        await this.quotas.carryOver(path, staged);
        await copyTree(path, staged, { reflink: this.reflink ? 'always' : 'never' });
        bytes = await applyLayer(staged, tar, {
          whiteouts: 'delete', ...(maps ? { idMappings: maps } : {}), ...(opts.ignoreChownErrors ? { ignoreChownErrors: true } : {}),
        });
        await fsyncDir(staged);
      } catch (err) {
        await removeTree(staged).catch(() => undefined);
        throw translateSpaceError(err, `applying a diff to vfs layer ${id}`);
      }
      const trash = await this.table.write(`apply a diff to layer ${id}`, async (t) => {
        const layer = this.committed(t, id);
        const meta: LayerMeta = { parent: layer.parent, kind: layer.kind, sealed: layer.sealed, ...(layer.idmap ? { idmap: layer.idmap } : {}) };
        await layerMeta.write(this.layout.metaPath(id), { ...meta, replacing: basename(staged) });
        const moved = await moveToTrash(this.home, path, id);
        await rename(staged, path);
        await fsyncDir(this.layout.layersDir);
        const sealed = layer.kind === 'image';
        const idmap = maps ? idMappingsKey(maps) : meta.idmap;
        const done: LayerMeta = { parent: meta.parent, kind: meta.kind, sealed, ...(idmap ? { idmap } : {}) };
        await layerMeta.write(this.layout.metaPath(id), done);
        t.set(id, { ...done, committed: true });
        return moved;
      });
      await removeTree(trash).catch(() => undefined);
      return bytes;
    });
  }

  /** The id map the layer's files are stored shifted by, or null (container ids). */
  async storedIdMap(id: string): Promise<IdMappings | null> {
    const { idmap } = await this.table.read(`read the id map of layer ${id}`, (t) => this.committed(t, id));
    return idmap === undefined ? null : parseIdMappingsKey(idmap, `layer ${id}`);
  }

  /**
   * The map an applyDiff stores owners by: the one asked for, else the one the layer already
   * holds (inherited from its parent). A layer's files are in one id space: a map other than
   * the layer's own is refused, and so is a map for a layer holding an unshifted parent tree.
   */
  private applyMap(id: string, layer: LayerState, opts: ApplyDiffOptions): IdMappings | null {
    const held = layer.idmap === undefined ? null : parseIdMappingsKey(layer.idmap, `layer ${id}`);
    if (!opts.idMappings) return held;
    const maps = validateIdMappings(opts.idMappings);
    if (held ? !sameIdMappings(held, maps) : layer.parent !== null) {
      throw new CairnError('ERR_INVALID_OPTION',
        `layer ${id} holds its parent's files ${held ? `shifted by ${layer.idmap}` : 'in container ids'}; apply it with ${held ? 'the same idMappings' : 'no idMappings (or apply the whole image with them)'}`,
        { subject: id });
    }
    return maps;
  }

  async status(): Promise<Array<[string, string]>> {
    const fs = await detectBackingFs(this.home);
    const layers = await this.table.read('report status', (t) => [...t.values()].filter((l) => l.committed).length);
    return [
      ['Backing Filesystem', fs.name],
      ['Reflink', this.reflink ? 'yes' : 'no'],
      ['Layers', String(layers)],
      ['Id-mapped mounts', await this.idmapUnsupported().then((why) => (why === null ? 'yes' : `no, chown copies (${why})`))],
    ];
  }

  async metadata(id: string): Promise<Record<string, string>> {
    assertValidId(id);
    await this.table.read(`read the metadata of layer ${id}`, (t) => this.committed(t, id));
    return {};
  }

  /** Drops this driver's mount holds (unmounting what nobody else holds); holds no lock afterwards. */
  async cleanup(): Promise<void> {
    const errors = await this.mounts.releaseAll();
    await this.locks.close();
    if (errors.length > 0) {
      throw new CairnError('ERR_LAYER_IN_USE', `vfs cleanup could not unmount ${errors.length} read-only layer view(s): ${String(errors[0])}`, { cause: errors[0] });
    }
  }

  /** The layer's state, or ERR_LAYER_NOT_FOUND when it does not exist (or is still being created). */
  private committed(t: Table, id: string): LayerState {
    const layer = t.get(id);
    if (!layer?.committed) {
      throw layerNotFound(id, `in ${this.home}`);
    }
    return layer;
  }

  /**
   * Children of `id`, including creates in progress; those a dead process left are
   * tidied on the way (their lock is free). The caller holds the store lock.
   */
  private async childrenOf(t: Table, id: string): Promise<string[]> {
    const children: string[] = [];
    for (const [child, l] of [...t]) {
      if (l.parent !== id) continue;
      if (!l.committed && this.locks.holdsTable() === 'write') {
        const r = await this.locks.tryLayer(child, `tidy the dead create of layer ${child}`, () => this.repairLayer(t, child));
        if (r.ran && !t.has(child)) continue;
      }
      children.push(child);
    }
    return children;
  }
}

/**
 * The size quota a new layer gets, in bytes (0 = none), from storageOpt.size or the
 * driver's default; rejects what vfs cannot honour before anything is created. As moby's
 * vfs, image layers (create) take no storage options.
 */
function sizeFor(id: string, storageOpt: Record<string, string> | undefined, kind: LayerMeta['kind'], defaultSize: number): number {
  let size = kind === 'container' ? defaultSize : 0;
  for (const [key, value] of Object.entries(storageOpt ?? {})) {
    if (key.toLowerCase() !== 'size') {
      throw new CairnError('ERR_INVALID_OPTION', `storage option ${JSON.stringify(key)} is not supported by the vfs driver (known: size)`, { subject: key });
    }
    if (kind === 'image') {
      throw new CairnError('ERR_QUOTA_UNSUPPORTED', `layer ${id}: a size quota applies to container layers (createReadWrite) only; image layers made with create are read-only`, { subject: id });
    }
    size = parseByteSize(value, 'storage option size');
  }
  return size;
}

async function rmdirQuiet(path: string): Promise<void> {
  await rmdir(path).catch(() => undefined);
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isFile();
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return false;
    throw err;
  }
}

async function isDir(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return false;
    throw err;
  }
}

/** Whether files in `home` can be cloned (FICLONE): asked once, at open. */
async function probeReflink(home: string): Promise<boolean> {
  const dir = await makeStagingDir(home, 'reflink-probe');
  try {
    await writeFile(join(dir, 'a'), 'probe');
    await copyFile(join(dir, 'a'), join(dir, 'b'), fsConstants.COPYFILE_FICLONE_FORCE);
    return true;
  } catch {
    return false;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
