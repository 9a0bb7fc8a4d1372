import { chmod, chown, lstat, mkdir, readdir, readFile, realpath, rename, rm, rmdir, writeFile } from 'node:fs/promises';
import { release as kernelRelease } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import {
  CairnError, SharedMounts, SharedTable, StoreLocks, assertValidId, detectBackingFs, errnoCode, formatByteSize,
  fsyncDir, normalizeParent, attachIdmappedView, probeIdmappedMounts, readMountInfo, validateIdMappings, layerNotFound,
} from '@cairnfs/core';
import { NaiveDiff, NaiveDiffDriver } from '@cairnfs/archive';
import type { ApplyDiffOptions, CreateOptions, DriverSetup, GetOptions, PutOptions, StorageDriver, LayerFilesDir } from '@cairnfs/core';
import {
  btrfsFsInfo, btrfsGetFlags, btrfsSetReadOnly, btrfsSnapshot, btrfsSubvolCreate, btrfsSubvolId, BTRFS_SUBVOL_RDONLY, constants as sysConstants, umount2,
  removeTree,
} from '@cairnfs/sys';
import { BtrfsLayout, idOfMetaFile, idOfUndoName, isAbandonedName, isLeftoverName } from './layout.js';
import { layerMeta } from './meta.js';
import type { LayerMeta } from './meta.js';
import { parseStorageOpt } from './options.js';
import type { BtrfsOptions } from './options.js';
import { spaceError } from './space.js';
import { SUBVOLUME_ROOT_INO, destroyQgroups, destroySubvolumeTree, limitSubvolume, qgroupLimit, quotaEnabled } from './subvolume.js';

/** Qgroups the kernel would not destroy yet (EBUSY), retried on open and cleanup (under the store write lock). */
const PENDING_QGROUPS_FILE = 'qgroups-pending.json';

type Table = Map<string, LayerMeta>;


/**
 * The btrfs driver, as moby's: every layer is a btrfs subvolume under
 * `${home}/subvolumes/<id>`; a layer with a parent is a snapshot of the parent's
 * subvolume, so creating one costs a few metadata blocks whatever the parent's size.
 * `get` returns the subvolume's path: there is nothing to mount.
 *
 * ## Crash safety
 * - create: the subvolume is made under a staging name inside subvolumes/
 *   (`.staging-<id>-…`), its qgroup limit set, the metadata written and fsynced, and only
 *   then renamed to `<id>`. A failure destroys the staging subvolume and the metadata;
 *   a crash leaves a staging subvolume (and maybe metadata without a layer), which the
 *   next open destroys.
 * - remove: the subvolume is renamed to `.trash-<id>-…` (the layer is gone at that
 *   instant), the metadata deleted, then the subvolume (with any subvolumes a container
 *   created inside it) and its qgroup destroyed. If destroying fails, the trash is
 *   destroyed on the next open; remove itself has already succeeded.
 * - applyDiff: writes into the layer in place, so it first snapshots the layer as
 *   `.undo-<id>` (one ioctl, copy-on-write) and destroys that snapshot only once the
 *   apply is done and the layer sealed. A kill in between leaves the undo snapshot; the
 *   next open puts it back in place of the half-applied layer, so a layer is never seen
 *   torn (found by the kill -9 trials: without it a kill while files were being written
 *   left a layer that existed with part of its tar).
 *
 * ## Read-only image layers
 * A layer made with `create` gets the subvolume read-only flag (BTRFS_SUBVOL_RDONLY)
 * when its applyDiff is done; writes then fail with EROFS. Its children are writable
 * snapshots of it. `createReadWrite` layers stay writable.
 *
 * ## Quota
 * `storageOpt.size` (or the `btrfs.size` default for container layers) becomes a limit
 * on the subvolume's level-0 qgroup, when quotas are enabled on the filesystem. The
 * driver never enables quotas itself (that rescans the whole filesystem and changes
 * every other user's accounting): without them, `size` is ERR_QUOTA_UNSUPPORTED with the
 * command an administrator would run. A snapshot inherits its parent's limit (btrfs does
 * not copy qgroup limits to snapshots). Writes past the limit fail with EDQUOT;
 * applyDiff reports that as ERR_NO_SPACE.
 *
 * ## Several processes (core's StoreLocks, SharedMounts)
 * The layer table (meta/ and subvolumes/) is reloaded when another process changed it.
 * create runs under its layer's and its parent's locks and the store write lock (a
 * snapshot is one ioctl), so a parent can neither vanish nor be half applied under it.
 * remove commits under the write lock and destroys the subvolume after, under the
 * layer's lock; applyDiff holds the layer's lock throughout, which is what keeps its undo
 * snapshot from being "restored" by another process's open. Staging and trash names
 * carry their process, so an open destroys only what dead processes left.
 */
export class BtrfsDriver extends NaiveDiffDriver implements StorageDriver, LayerFilesDir {
  readonly name = 'btrfs';
  private readonly layout: BtrfsLayout;
  private readonly locks: StoreLocks;
  private readonly table: SharedTable<Table>;
  private readonly mounts: SharedMounts;
  protected readonly naive: NaiveDiff;

  private constructor(
    readonly home: string,
    lockTimeoutMs: number,
    private readonly fsid: string,
    private readonly opts: BtrfsOptions,
  ) {
    super();
    this.layout = new BtrfsLayout(home);
    this.locks = new StoreLocks(home, { timeoutMs: lockTimeoutMs, what: `btrfs layer table of ${home}` });
    this.table = new SharedTable(this.locks, () => this.loadTable());
    this.mounts = new SharedMounts(home, this.locks, {
      mount: async (id, opts) => {
        await this.table.read(`get layer ${id}`, (t) => {
          if (!t.has(id)) throw notFound(id);
        });
        if (!opts.idMappings) return this.layout.subvolume(id);
        // btrfs allows id-mapped mounts (FS_ALLOW_IDMAP): the subvolume shown at idmapped/<id>.
        const view = this.idmappedPath(id);
        const readOnly = ((await btrfsGetFlags(this.layout.subvolume(id))) & BTRFS_SUBVOL_RDONLY) !== 0;
        await attachIdmappedView(this.layout.subvolume(id), view, validateIdMappings(opts.idMappings), { readOnly, subject: id });
        return view;
      },
      // Nothing was mounted for a plain get: the path is the subvolume itself. null: a get
      // that died mid-mount may have left the id-mapped view.
      unmount: async (id, path) => {
        if (path !== null && path !== this.idmappedPath(id)) return;
        await umount2(this.idmappedPath(id), sysConstants.MNT_DETACH).catch((err: unknown) => { if (path !== null) throw err; });
        await rmdir(this.idmappedPath(id)).catch(() => undefined);
      },
    });
    this.naive = new NaiveDiff({
      get: (id, opts) => this.get(id, opts),
      put: (id) => this.put(id),
      parentOf: (id) => this.table.read(`read the parent of layer ${id}`, (t) => this.metaOf(t, id).parent),
    }, { whiteouts: 'delete' });
  }

  /**
   * Opens (creating if needed) the home on a btrfs filesystem and repairs what dead
   * processes left (interrupted creates, removes and applies). Holds no lock when it returns.
   */
  static async open(setup: DriverSetup<BtrfsOptions>): Promise<BtrfsDriver> {
    const { home, settings: opts } = setup;
    const fs = await detectBackingFs(home);
    if (fs.name !== 'btrfs') throw incompatible(home, fs.name);
    await mkdir(home, { recursive: true, mode: 0o700 });
    const layout = new BtrfsLayout(home);
    await mkdir(layout.subvolumesDir, { recursive: true, mode: 0o700 });
    await mkdir(layout.metaDir, { recursive: true, mode: 0o700 });
    const { fsid } = await btrfsFsInfo(home);
    const driver = new BtrfsDriver(home, setup.lockTimeoutMs, fsid, opts);
    await driver.recover();
    return driver;
  }

  // ---- lifecycle ----

  create(id: string, parent?: string | null, opts?: CreateOptions): Promise<void> {
    return this.createLayer(id, parent, opts, 'image');
  }

  createReadWrite(id: string, parent?: string | null, opts?: CreateOptions): Promise<void> {
    return this.createLayer(id, parent, opts, 'container');
  }

  /** LayerFilesDir: the layer's subvolume (its whole tree), readable without a `get` and its hold. */
  async layerFilesDir(id: string): Promise<string> {
    if (!(await this.exists(id))) throw layerNotFound(id);
    return this.layout.subvolume(id);
  }

  async exists(id: string): Promise<boolean> {
    assertValidId(id);
    return this.table.read(`look up layer ${id}`, (t) => t.has(id));
  }

  async remove(id: string): Promise<void> {
    assertValidId(id);
    await this.locks.layer(id, `remove layer ${id}`, async () => {
      await this.mounts.assertUnheld(id, 'remove');
      const trash = await this.table.write(`remove layer ${id}`, async (t) => {
        if (!t.has(id)) return null; // as moby: removing an unknown layer is not an error
        const children = [...t].filter(([, m]) => m.parent === id).map(([child]) => child);
        if (children.length > 0) {
          throw new CairnError('ERR_LAYER_IN_USE',
            `cannot remove layer ${id}: layers ${children.slice(0, 5).join(', ')}${children.length > 5 ? ', …' : ''} are built on it; remove them first`,
            { subject: id });
        }
        const name = this.layout.trashName(id);
        await rename(this.layout.subvolume(id), join(this.layout.subvolumesDir, name));
        t.delete(id);
        await fsyncDir(this.layout.subvolumesDir);
        await layerMeta.remove(this.layout.metaFile(id));
        return name;
      });
      if (trash === null) return;
      // Committed: the layer is gone. Reclaiming the disk may fail; an open retries.
      await this.reclaim(trash).catch(() => undefined);
      await this.mounts.forget(id);
      await this.locks.forgetLayer(id);
    });
  }

  /**
   * No mount: the subvolume is the root filesystem, so a mount label has nothing to label.
   * With idMappings, an id-mapped mount of the subvolume at `idmapped/<id>` (read-only for
   * image layers); files written through it are stored in container ids.
   */
  async get(id: string, opts: GetOptions = {}): Promise<string> {
    assertValidId(id);
    return this.mounts.get(id, {
      ...(opts.idMappings ? { idMappings: opts.idMappings } : {}), ...(opts.holder === undefined ? {} : { holder: opts.holder }),
    });
  }

  /** Whether id-mapped mounts work on this filesystem here (null) or why not; asked by status(). */
  private idmapVerdict: Promise<string | null> | undefined;

  /** Where a layer's id-mapped view is mounted while in use. */
  private idmappedPath(id: string): string {
    return join(this.layout.home, 'idmapped', id);
  }

  async put(id: string, opts: PutOptions = {}): Promise<void> {
    assertValidId(id);
    await this.mounts.put(id, opts);
  }

  /** Hold count of a layer, every process counted (for tests and diagnostics). */
  mountCount(id: string): Promise<number> {
    assertValidId(id);
    return this.mounts.count(id);
  }

  // ---- changesets (diff, changes and diffSize: NaiveDiffDriver) ----

  /**
   * Applies a changeset into the layer's subvolume. An image layer is read-only after
   * this (also when the apply fails: it was handed out sealed or is to be removed);
   * its flag is lifted for the apply, so applying twice works.
   */
  async applyDiff(id: string, parent: string | null | undefined, tar: Readable | AsyncIterable<Uint8Array>, opts: ApplyDiffOptions = {}): Promise<number> {
    assertValidId(id);
    normalizeParent(parent);
    // The layer's lock for the whole apply: the undo snapshot is ours while it is held.
    return this.locks.layer(id, `apply a diff to layer ${id}`, async () => {
      const meta = await this.table.read(`apply a diff to layer ${id}`, (t) => this.metaOf(t, id));
      const path = this.layout.subvolume(id);
      const undo = this.layout.undoName(id);
      const readOnly = ((await btrfsGetFlags(path)) & BTRFS_SUBVOL_RDONLY) !== 0;
      await btrfsSnapshot(path, this.layout.subvolumesDir, undo, { readOnly });
      await fsyncDir(this.layout.subvolumesDir);
      try {
        if (meta.kind === 'image') await btrfsSetReadOnly(path, false);
        try {
          return await this.naive.applyDiff(id, parent, tar, opts);
        } catch (err) {
          throw spaceError(err, `applying a layer to ${id}`);
        } finally {
          if (meta.kind === 'image') await btrfsSetReadOnly(path, true);
        }
      } finally {
        // Only now is the apply done (or failed, which leaves the layer as it always has): the undo copy goes.
        await this.reclaim(undo);
      }
    });
  }

  // ---- information ----

  /**
   * moby's btrfs driver prints "Build Version" and "Library Version" of the btrfs-progs
   * it was compiled with; cairn links no libbtrfs (it calls the kernel's ioctls), so it
   * reports what does matter here: the filesystem, its quota state and the options.
   */
  async status(): Promise<Array<[string, string]>> {
    const status: Array<[string, string]> = [
      ['Backing Filesystem', 'btrfs'],
      ['Filesystem UUID', this.fsid],
      ['Kernel Version', kernelRelease()],
      ['Interface', 'btrfs ioctls (linux/btrfs.h) via @cairnfs/sys'],
      ['Quota Enabled', String(await quotaEnabled(this.fsid))],
    ];
    if (this.opts.minSpace !== null) status.push(['Min Space', formatByteSize(this.opts.minSpace)]);
    if (this.opts.defaultSize !== null) status.push(['Default Container Size', formatByteSize(this.opts.defaultSize)]);
    status.push(['Layers', String(await this.table.read('report status', (t) => t.size))]);
    this.idmapVerdict ??= probeIdmappedMounts(this.layout.home).catch((err: unknown) => (err as Error).message);
    const why = await this.idmapVerdict;
    status.push(['Id-mapped mounts', why === null ? 'yes' : `no (${why}): get with idMappings is refused`]);
    return status;
  }

  async metadata(id: string): Promise<Record<string, string>> {
    assertValidId(id);
    const meta = await this.table.read(`read the metadata of layer ${id}`, (t) => this.metaOf(t, id));
    const path = this.layout.subvolume(id);
    const subvolId = await btrfsSubvolId(path);
    const out: Record<string, string> = {
      Path: path,
      SubvolumeId: String(subvolId),
      ReadOnly: String(((await btrfsGetFlags(path)) & BTRFS_SUBVOL_RDONLY) !== 0),
    };
    if (meta.parent !== null) out.Parent = meta.parent;
    const limit = await qgroupLimit(this.fsid, subvolId);
    if (limit !== null) out.Quota = String(limit);
    return out;
  }

  /** Drops this driver's holds (nothing is mounted), retries qgroups left pending; holds no lock afterwards. */
  async cleanup(): Promise<void> {
    await this.mounts.releaseAll();
    if (await pathExists(join(this.layout.metaDir, PENDING_QGROUPS_FILE))) {
      await this.locks.write('retry pending qgroup removals', () => this.retryPendingQgroups()).catch(() => undefined);
    }
    await this.locks.close();
  }

  // ---- internals ----

  private metaOf(t: Table, id: string): LayerMeta {
    const meta = t.get(id);
    if (!meta) throw notFound(id);
    return meta;
  }

  private async createLayer(id: string, parent: string | null | undefined, opts: CreateOptions | undefined, kind: LayerMeta['kind']): Promise<void> {
    assertValidId(id);
    const parentId = normalizeParent(parent);
    let size = parseStorageOpt(opts?.storageOpt, this.opts);
    if (size === null && kind === 'container') size = this.opts.defaultSize;
    const ids = parentId === null ? [id] : [id, parentId];
    await this.locks.layer(ids, `create layer ${id}`, () => this.table.write(`create layer ${id}`, async (t) => {
      if (t.has(id)) throw new CairnError('ERR_LAYER_EXISTS', `layer ${id} already exists`, { subject: id });
      const parentMeta = parentId === null ? null : t.get(parentId);
      if (parentMeta === undefined) {
        throw new CairnError('ERR_PARENT_NOT_FOUND', `cannot create layer ${id}: parent layer ${parentId} does not exist`, { subject: parentId ?? id });
      }
      if (size === null && parentMeta?.sizeBytes !== undefined) size = parentMeta.sizeBytes;

      const dir = this.layout.subvolumesDir;
      const staging = this.layout.stagingName(id);
      const stagingPath = join(dir, staging);
      const meta: LayerMeta = { parent: parentId, kind, ...(size === null ? {} : { sizeBytes: size }) };
      let made = false;
      try {
        if (parentId === null) {
          await btrfsSubvolCreate(dir, staging);
          // The subvolume's root comes out 0777 less the umask (0777 under umask 0: a
          // world-writable container root); a new layer's root is 0755 root:root on every driver.
          await chmod(stagingPath, 0o755);
          await chown(stagingPath, 0, 0);
        } else await btrfsSnapshot(this.layout.subvolume(parentId), dir, staging, { readOnly: false });
        made = true;
        if (size !== null) await this.limit(stagingPath, size, id);
        await layerMeta.write(this.layout.metaFile(id), meta);
        await rename(stagingPath, this.layout.subvolume(id));
        await fsyncDir(dir);
      } catch (err) {
        await this.rollback(id, made ? staging : null);
        throw spaceError(err, `creating layer ${id}`);
      }
      t.set(id, meta);
    }));
  }

  private async limit(path: string, bytes: number, id: string): Promise<void> {
    try {
      await limitSubvolume(path, bytes);
    } catch (err) {
      if (errnoCode(err) === 'ENOTCONN') {
        throw new CairnError('ERR_QUOTA_UNSUPPORTED',
          `cannot give layer ${id} a size of ${formatByteSize(bytes)}: quotas are not enabled on the btrfs filesystem holding ${this.home}. ` +
          'cairn never enables them itself; an administrator can run `btrfs quota enable <mountpoint>`, or create the layer without a size.',
          { subject: id, cause: err });
      }
      throw err;
    }
  }

  /** Undoes a failed create: the staging subvolume (if made) and the metadata file. Never throws. */
  private async rollback(id: string, staging: string | null): Promise<void> {
    if (staging !== null) await this.reclaim(staging).catch(() => undefined);
    await layerMeta.remove(this.layout.metaFile(id)).catch(() => undefined);
  }

  /**
   * Destroys a staging or trash subvolume under subvolumes/ with everything nested in it,
   * and its qgroups; those the kernel will not destroy yet are recorded for a retry.
   */
  private async reclaim(name: string): Promise<void> {
    const path = join(this.layout.subvolumesDir, name);
    const st = await lstat(path).catch((err: unknown) => {
      if (errnoCode(err) === 'ENOENT') return null;
      throw err;
    });
    if (st === null) return;
    if (!st.isDirectory() || st.ino !== SUBVOLUME_ROOT_INO) {
      await removeTree(path); // not a subvolume (never made by us): plain delete
      return;
    }
    const ids = await destroySubvolumeTree(this.layout.subvolumesDir, name);
    const busy = await destroyQgroups(this.home, ids);
    if (busy.length > 0) {
      await this.locks.write('record pending qgroup removals', async () => {
        await this.savePendingQgroups([...await this.loadPendingQgroups(), ...busy]);
      });
    }
  }

  /** The layer table from disk: meta/ for what cairn made, subvolumes/ for what exists. */
  private async loadTable(): Promise<Table> {
    const table: Table = new Map();
    const present = new Set((await readdir(this.layout.subvolumesDir)).filter((n) => !n.startsWith('.')));
    for (const file of await readdir(this.layout.metaDir)) {
      const id = idOfMetaFile(file);
      if (id === null || !present.has(id)) continue;
      const meta = await layerMeta.read(join(this.layout.metaDir, file));
      if (meta) table.set(id, meta);
    }
    // A subvolume without metadata is a home written by moby: a base container layer.
    for (const id of present) {
      if (!table.has(id) && idOfMetaFile(`${id}.json`) !== null) table.set(id, { parent: null, kind: 'container' });
    }
    return table;
  }

  /**
   * Open-time repair, under the store write lock and only of what dead processes left:
   * undo snapshots of applies that died (their layer's lock is free), staging and trash
   * subvolumes of dead processes, metadata whose subvolume never got its final name,
   * subvolumes without metadata (a home written by moby: adopted as base container
   * layers), and qgroups left pending. Looks first under the read lock.
   */
  private async recover(): Promise<void> {
    // Id-mapped views under idmapped/ that nobody holds (a dead process's) come off.
    const views = join(this.layout.home, 'idmapped');
    const real = await realpath(views).catch(() => views);
    const mounted = (await readMountInfo()).filter((m) => m.mountPoint.startsWith(`${real}/`))
      .map((m) => ({ id: m.mountPoint.slice(real.length + 1).split('/')[0]!, path: m.mountPoint }));
    await this.mounts.sweep(mounted.filter((m) => idOfMetaFile(`${m.id}.json`) !== null));
    const dirty = await this.table.read('open the btrfs driver', async (t) => {
      const names = await readdir(this.layout.subvolumesDir);
      const metas = await readdir(this.layout.metaDir);
      return names.some((n) => idOfUndoName(n) !== null || isAbandonedName(n))
        || metas.some((f) => { const id = idOfMetaFile(f); return id === null ? f !== PENDING_QGROUPS_FILE : !t.has(id) || !names.includes(id); })
        || [...t.keys()].some((id) => !metas.includes(`${id}.json`))
        || metas.includes(PENDING_QGROUPS_FILE);
    });
    if (!dirty) return;
    await this.table.write('repair the btrfs home after a crash', async (t) => {
      for (const name of await readdir(this.layout.subvolumesDir)) {
        const id = idOfUndoName(name);
        if (id !== null) await this.locks.tryLayer(id, `roll back the apply of layer ${id}`, () => this.restoreUndo(id));
      }
      const names = await readdir(this.layout.subvolumesDir);
      for (const name of names) if (isAbandonedName(name)) await this.reclaim(name);
      const present = new Set(names.filter((n) => !isLeftoverName(n) && !n.startsWith('.')));
      for (const file of await readdir(this.layout.metaDir)) {
        const id = idOfMetaFile(file);
        const path = join(this.layout.metaDir, file);
        if (id === null) {
          if (file !== PENDING_QGROUPS_FILE) await rm(path, { force: true }); // temp files of a write that died
        } else if (!present.has(id)) {
          await layerMeta.remove(path);
        }
      }
      for (const id of present) {
        if (idOfMetaFile(`${id}.json`) === null || await pathExists(this.layout.metaFile(id))) continue;
        await layerMeta.write(this.layout.metaFile(id), { parent: null, kind: 'container' });
      }
      await this.retryPendingQgroups();
      t.clear();
      for (const [id, meta] of await this.loadTable()) t.set(id, meta);
    });
  }

  /**
   * An applyDiff was cut short: puts the layer's undo snapshot back in its place (the
   * half-applied subvolume goes to the trash) and gives it the layer's qgroup limit.
   * Each step can be cut again; repeating the whole is safe.
   */
  private async restoreUndo(id: string): Promise<void> {
    const dir = this.layout.subvolumesDir;
    const undo = join(dir, this.layout.undoName(id));
    // Looked for again now that the layer's lock is ours: the apply that made it may have
    // finished, and removed it, between the directory listing and the lock. Rolling back
    // then would trash the applied layer (a kill trial with a live second process found it).
    if (!(await lstat(undo).then(() => true, () => false))) return;
    const path = this.layout.subvolume(id);
    const trash = this.layout.trashName(id);
    const present = await lstat(path).then(() => true, () => false);
    if (present) await rename(path, join(dir, trash));
    await rename(undo, path);
    await fsyncDir(dir);
    const meta = await layerMeta.read(this.layout.metaFile(id)).catch(() => null);
    if (meta?.sizeBytes !== undefined) await this.limit(path, meta.sizeBytes, id);
    if (present) await this.reclaim(trash);
  }

  /** Retries the qgroups the kernel would not destroy before (the caller holds the store write lock). */
  private async retryPendingQgroups(): Promise<void> {
    const pending = await this.loadPendingQgroups();
    if (pending.length === 0) return;
    await this.savePendingQgroups(await destroyQgroups(this.home, pending));
  }

  private async loadPendingQgroups(): Promise<number[]> {
    try {
      const parsed = JSON.parse(await readFile(join(this.layout.metaDir, PENDING_QGROUPS_FILE), 'utf8')) as unknown;
      return Array.isArray(parsed) ? parsed.filter((n): n is number => Number.isSafeInteger(n)) : [];
    } catch {
      return [];
    }
  }

  private async savePendingQgroups(pending: number[]): Promise<void> {
    const path = join(this.layout.metaDir, PENDING_QGROUPS_FILE);
    if (pending.length === 0) await rm(path, { force: true });
    else await writeFile(path, JSON.stringify([...new Set(pending)]));
  }
}

async function pathExists(path: string): Promise<boolean> {
  return lstat(path).then(() => true, () => false);
}

function notFound(id: string): CairnError {
  return layerNotFound(id);
}

/** ERR_INCOMPATIBLE_FS for a home that is not on btrfs. */
export function incompatible(home: string, fsName: string): CairnError {
  return new CairnError('ERR_INCOMPATIBLE_FS',
    `backing filesystem is ${fsName}, not btrfs: the btrfs driver keeps layers as btrfs subvolumes, so its home (${home}) must be on a btrfs filesystem`,
    { subject: home });
}
