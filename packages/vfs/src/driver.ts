import { createHash } from 'node:crypto';
import { constants as fsConstants } from 'node:fs';
import { chmod, chown, copyFile, mkdir, readdir, realpath, rename, rm, rmdir, stat, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import type { Readable } from 'node:stream';
import {
  CairnError, MountRefs, STAGING_DIR, TRASH_DIR, assertValidId, commitStaged, copyTree, detectBackingFs, discardDir,
  errnoCode, fsyncDir, isValidId, LayerQuotas, makeStagingDir, normalizeParent, parseByteSize, openUnderHomeLock,
  readMountInfo, sweepLeftovers, translateSpaceError, mountLabelOption, idMappingsKey, parseIdMappingsKey,
  probeIdmappedMounts, sameIdMappings, validateIdMappings, attachIdmappedView,
} from '@cairnfs/core';
import { NaiveDiff, NaiveDiffDriver, applyLayer } from '@cairnfs/archive';
import type { ApplyDiffOptions, CreateOptions, DriverSetup, GetOptions, HomeLock, IdMappings, StorageDriver } from '@cairnfs/core';
import { constants as sysConstants, mount, shiftOwnership, umount2 } from '@cairnfs/sys';
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

/** An entry of the in-memory layer table; `committed` is false while create() is still copying. */
interface LayerState extends LayerMeta {
  committed: boolean;
}

/**
 * The vfs driver: every layer is a full copy of its parent (cloned extent by extent
 * where the filesystem has reflinks: btrfs, xfs with reflink=1), as moby's vfs. It runs
 * anywhere and is the reference the other drivers are measured against.
 *
 * ## Crash safety: the order of things on disk
 * - create: the metadata file (parent, kind) is written and fsynced *first*, then the
 *   tree is copied into `.staging/` and renamed to `dir/<id>`. So a layer directory
 *   never exists without its metadata. A crash before the rename leaves a metadata file
 *   without a directory (and a staging leftover): open() deletes both. `exists()` is
 *   true only once `dir/<id>` is there.
 * - remove: `dir/<id>` is renamed into `.trash/` first (the layer is gone at that
 *   instant), then the metadata is deleted, then the disk reclaimed.
 * - applyDiff: applied to a staged (reflinked where possible) copy; only a complete
 *   apply is swapped in, with the swap journaled in the metadata (`replacing`), so a
 *   failed or interrupted apply leaves the layer exactly as it was (or, after a crash
 *   between the two renames of the swap, exactly as the finished apply left it).
 *
 * ## Read-only image layers
 * moby's vfs hands out image layers writable. cairn's contract says an image layer is
 * read-only once its applyDiff is done, so `get` of such a layer bind-mounts its
 * directory read-only onto itself (same path as Docker's layout), and the last `put`
 * unmounts it. Mounts found under the home at open (left by a crash) are unmounted.
 * Container layers and image layers not yet applied are handed out as plain directories.
 */
export class VfsDriver extends NaiveDiffDriver implements StorageDriver {
  readonly name = 'vfs';
  private readonly layout: VfsLayout;
  private readonly layers = new Map<string, LayerState>();
  private readonly refs: MountRefs;
  protected readonly naive: NaiveDiff;
  private closed = false;
  /** Whether id-mapped mounts work here (null) or why not; asked on the first id-mapped get or status(). */
  private idmapVerdict: Promise<string | null> | undefined;

  private constructor(
    readonly home: string,
    private readonly lock: HomeLock,
    private readonly reflink: boolean,
    /** xfs project quotas (core's, shared with overlay2), keyed on the layer dirs under dir/. */
    private readonly quotas: LayerQuotas,
    /** `vfs.size`: default size quota of container layers, bytes; 0 = none. */
    private readonly defaultSize: number,
    private readonly idmappedMounts: boolean,
  ) {
    super();
    this.layout = new VfsLayout(home);
    this.refs = new MountRefs({
      mount: (id, opts) => this.mountLayer(id, opts),
      unmount: (id, path) => this.unmountLayer(id, path),
    });
    this.naive = new NaiveDiff({
      get: (id, opts) => this.get(id, opts),
      put: (id) => this.put(id),
      parentOf: async (id) => this.committed(id).parent,
      storedIdMap: async (id) => this.storedIdMap(id),
    }, { whiteouts: 'delete' });
  }

  /**
   * Opens (creating if needed) the home, takes its lock for the driver's lifetime,
   * repairs what a crash left behind, and loads the layer table.
   */
  static async open(setup: DriverSetup<VfsSettings>): Promise<VfsDriver> {
    const { home, settings } = setup;
    await mkdir(home, { recursive: true, mode: 0o700 });
    const quotas = new LayerQuotas(home, new VfsLayout(home).layersDir);
    // As moby, a default size that cannot be enforced is refused at start-up, not ignored.
    if (settings.defaultSize > 0) await quotas.require('vfs.size');
    return openUnderHomeLock(home, { timeoutMs: setup.lockTimeoutMs }, async (lock) => {
      const layout = new VfsLayout(home);
      await mkdir(layout.layersDir, { recursive: true, mode: 0o700 });
      await mkdir(layout.metaDir, { recursive: true, mode: 0o700 });
      await unmountStale(layout.layersDir);
      await mkdir(layout.idmappedDir, { recursive: true, mode: 0o700 });
      await unmountStale(layout.idmappedDir);
      const reflink = await probeReflink(home);
      const driver = new VfsDriver(home, lock, reflink, quotas, settings.defaultSize, settings.idmappedMounts);
      await driver.recover();
      return driver;
    });
  }

  /** Brings disk and table in line after a crash; see the class comment for the orders relied on. */
  private async recover(): Promise<void> {
    const { layout } = this;
    for (const name of await readdir(layout.metaDir)) {
      const id = layout.idOfMetaFile(name);
      if (id === null) {
        await rm(join(layout.metaDir, name), { force: true }); // a temp file of an interrupted write
        continue;
      }
      const meta = await layerMeta.require(join(layout.metaDir, name));
      const dirPresent = await isDir(layout.layerPath(id));
      if (meta.replacing !== undefined) {
        const staged = join(this.home, STAGING_DIR, basename(meta.replacing));
        // Crash between "old tree to trash" and "staged tree into place": finish the swap.
        if (!dirPresent && await isDir(staged)) await rename(staged, layout.layerPath(id));
        delete meta.replacing;
        if (dirPresent || await isDir(layout.layerPath(id))) await layerMeta.write(layout.metaPath(id), meta);
      }
      if (!await isDir(layout.layerPath(id))) {
        await layerMeta.remove(layout.metaPath(id)); // create died before its rename
        continue;
      }
      this.layers.set(id, { ...meta, committed: true });
    }
    // A directory without metadata predates cairn (Docker's own vfs layout): adopt it as a base layer.
    for (const id of await readdir(layout.layersDir)) {
      if (this.layers.has(id) || !isValidId(id)) continue;
      const meta: LayerMeta = { parent: null, kind: 'container', sealed: false };
      await layerMeta.write(layout.metaPath(id), meta);
      this.layers.set(id, { ...meta, committed: true });
    }
    await sweepLeftovers(this.home);
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
    await this.refs.withLock(id, async () => {
      if (this.layers.has(id)) {
        throw new CairnError('ERR_LAYER_EXISTS', `layer ${id} already exists; remove it first or pick another id`, { subject: id });
      }
      // Claim the id and register under the parent at once, so a concurrent remove of the
      // parent sees this child (ERR_LAYER_IN_USE) for the whole time it is being copied.
      await this.withParentLock(parentId, async () => {
        if (parentId !== null && !this.layers.get(parentId)?.committed) {
          throw new CairnError('ERR_PARENT_NOT_FOUND', `cannot create layer ${id}: parent layer ${parentId} does not exist`, { subject: parentId });
        }
        const idmap = parentId === null ? undefined : this.layers.get(parentId)?.idmap;
        this.layers.set(id, { parent: parentId, kind, sealed: false, committed: false, ...(idmap ? { idmap } : {}) });
      });
      let staged: string | null = null;
      try {
        const { committed: _c, ...meta } = this.layers.get(id)!;
        await layerMeta.write(this.layout.metaPath(id), meta); // the parent's tree, so its id map too
        staged = await makeStagingDir(this.home, id);
        // Before the copy, as moby: the parent's tree counts against the layer's limit.
        if (size > 0) await this.quotas.limit(staged, size, id);
        if (parentId === null) {
          await chown(staged, 0, 0);
          await chmod(staged, 0o755);
        } else {
          await copyTree(this.layout.layerPath(parentId), staged, { reflink: this.reflink ? 'always' : 'never' });
        }
        await commitStaged(staged, this.layout.layerPath(id));
        this.layers.get(id)!.committed = true;
      } catch (err) {
        if (staged) await rm(staged, { recursive: true, force: true }).catch(() => undefined);
        await layerMeta.remove(this.layout.metaPath(id)).catch(() => undefined);
        this.layers.delete(id);
        throw translateSpaceError(err, `creating vfs layer ${id}`);
      }
    });
  }

  private withParentLock<T>(parentId: string | null, fn: () => Promise<T>): Promise<T> {
    return parentId === null ? fn() : this.refs.withLock(parentId, fn);
  }

  async exists(id: string): Promise<boolean> {
    assertValidId(id);
    return this.layers.get(id)?.committed === true;
  }

  async remove(id: string): Promise<void> {
    assertValidId(id);
    await this.refs.withLock(id, async () => {
      const layer = this.layers.get(id);
      if (!layer) return; // as moby: removing what is not there is not an error
      if (this.refs.isMounted(id)) {
        throw new CairnError('ERR_LAYER_IN_USE', `layer ${id} is mounted (${this.refs.count(id)} user(s)); put it before removing it`, { subject: id });
      }
      const children = this.childrenOf(id);
      if (children.length > 0) {
        throw new CairnError('ERR_LAYER_IN_USE', `layer ${id} has child layers (${children.slice(0, 5).join(', ')}${children.length > 5 ? ', …' : ''}); remove them first`, { subject: id });
      }
      await discardDir(this.home, this.layout.layerPath(id), id);
      this.layers.delete(id);
      await layerMeta.remove(this.layout.metaPath(id));
      for (const name of await readdir(this.layout.copiesDir).catch(() => [] as string[])) {
        if (name.startsWith(`${id}-`) && /^[0-9a-f]{16}$/.test(name.slice(id.length + 1))) await rm(join(this.layout.copiesDir, name), { recursive: true, force: true });
      }
    });
  }

  async get(id: string, opts: GetOptions = {}): Promise<string> {
    assertValidId(id);
    return this.refs.get(id, opts);
  }

  async put(id: string): Promise<void> {
    assertValidId(id);
    return this.refs.put(id);
  }

  private async mountLayer(id: string, opts: GetOptions): Promise<string> {
    const layer = this.committed(id);
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

  private async unmountLayer(id: string, path: string): Promise<void> {
    if (path === this.layout.idmappedPath(id)) {
      await umount2(path, sysConstants.MNT_DETACH);
      await rmdirQuiet(path);
      return;
    }
    if (this.layers.get(id)?.sealed) await umount2(path);
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
      layer.idmap = idMappingsKey(maps);
      const { committed: _c, ...meta } = layer;
      await layerMeta.write(this.layout.metaPath(id), meta);
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
        await rm(staged, { recursive: true, force: true }).catch(() => undefined);
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
   * Refused (ERR_LAYER_IN_USE) while the layer is mounted (the swap would pull the tree
   * from under its users) or has children (they were copied from the old tree).
   */
  async applyDiff(id: string, parent: string | null | undefined, tar: Readable | AsyncIterable<Uint8Array>, opts: ApplyDiffOptions = {}): Promise<number> {
    assertValidId(id);
    normalizeParent(parent); // validated only: the layer already holds its parent's tree
    return this.refs.withLock(id, async () => {
      const layer = this.committed(id);
      const maps = this.applyMap(id, layer, opts);
      if (this.refs.isMounted(id)) {
        throw new CairnError('ERR_LAYER_IN_USE', `cannot apply a diff to layer ${id} while it is mounted; put it first`, { subject: id });
      }
      const children = this.childrenOf(id);
      if (children.length > 0) {
        throw new CairnError('ERR_LAYER_IN_USE', `cannot apply a diff to layer ${id}: layers ${children.join(', ')} were created on it`, { subject: id });
      }
      const path = this.layout.layerPath(id);
      const staged = await makeStagingDir(this.home, id);
      let bytes: number;
      try {
        await this.quotas.carryOver(path, staged);
        await copyTree(path, staged, { reflink: this.reflink ? 'always' : 'never' });
        bytes = await applyLayer(staged, tar, {
          whiteouts: 'delete', ...(maps ? { idMappings: maps } : {}), ...(opts.ignoreChownErrors ? { ignoreChownErrors: true } : {}),
        });
      } catch (err) {
        await rm(staged, { recursive: true, force: true }).catch(() => undefined);
        throw translateSpaceError(err, `applying a diff to vfs layer ${id}`);
      }
      const { committed: _c, ...meta } = layer;
      await fsyncDir(staged);
      await layerMeta.write(this.layout.metaPath(id), { ...meta, replacing: basename(staged) });
      const trash = join(this.home, TRASH_DIR, `${id}-applied-${Date.now()}`);
      await mkdir(join(this.home, TRASH_DIR), { recursive: true, mode: 0o700 });
      await rename(path, trash);
      await rename(staged, path);
      await fsyncDir(this.layout.layersDir);
      const sealed = layer.kind === 'image';
      const idmap = maps ? idMappingsKey(maps) : undefined;
      await layerMeta.write(this.layout.metaPath(id), { parent: layer.parent, kind: layer.kind, sealed, ...(idmap ? { idmap } : {}) });
      layer.sealed = sealed;
      if (idmap) layer.idmap = idmap;
      await rm(trash, { recursive: true, force: true }).catch(() => undefined);
      return bytes;
    });
  }

  /** The id map the layer's files are stored shifted by, or null (container ids). */
  async storedIdMap(id: string): Promise<IdMappings | null> {
    const { idmap } = this.committed(id);
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
    return [
      ['Backing Filesystem', fs.name],
      ['Reflink', this.reflink ? 'yes' : 'no'],
      ['Layers', String([...this.layers.values()].filter((l) => l.committed).length)],
      ['Id-mapped mounts', await this.idmapUnsupported().then((why) => (why === null ? 'yes' : `no, chown copies (${why})`))],
    ];
  }

  async metadata(id: string): Promise<Record<string, string>> {
    assertValidId(id);
    this.committed(id);
    return {};
  }

  async cleanup(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const errors = await this.refs.unmountAll();
    await this.lock.release();
    if (errors.length > 0) {
      throw new CairnError('ERR_LAYER_IN_USE', `vfs cleanup could not unmount ${errors.length} read-only layer view(s): ${String(errors[0])}`, { cause: errors[0] });
    }
  }

  /** The layer's state, or ERR_LAYER_NOT_FOUND when it does not exist (or is still being created). */
  private committed(id: string): LayerState {
    const layer = this.layers.get(id);
    if (!layer?.committed) {
      throw new CairnError('ERR_LAYER_NOT_FOUND', `layer ${id} does not exist in ${this.home}`, { subject: id });
    }
    return layer;
  }

  private childrenOf(id: string): string[] {
    return [...this.layers].filter(([, l]) => l.parent === id).map(([child]) => child);
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

/** Unmounts read-only views a previous process left under `layersDir` (it died holding them). */
async function unmountStale(layersDir: string): Promise<void> {
  const real = await realpath(layersDir);
  const mounts = (await readMountInfo()).filter((m) => m.mountPoint.startsWith(`${real}/`));
  for (const m of mounts.reverse()) await umount2(m.mountPoint, sysConstants.MNT_DETACH).catch(() => undefined);
}
