import { chmod, chown, mkdir, open as openFile, readdir, readFile, realpath, rename, rm, rmdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import {
  CairnError, STAGING_DIR, SharedMounts, SharedTable, StoreLocks, assertValidId, copyTree, detectBackingFs, errnoCode,
  fsyncDir, isValidId, makeStagingDir, removeMountPoint, moveToTrash, normalizeParent, ownedName, readMountInfo, sweepLeftovers,
  translateSpaceError, refuseIdMappings, layerNotFound,
} from '@cairnfs/core';
import { NaiveDiff, applyLayer, exportChanges } from '@cairnfs/archive';
import type { ApplyDiffOptions, Change, CreateOptions, DriverContext, GetOptions, PutOptions, StorageDriver } from '@cairnfs/core';
import type { LayerFilesDir, LayerLister, LayerRef } from '@cairnfs/core';
import { removeTree, umount2 } from '@cairnfs/sys';
import { branchChanges, diffDirBytes, diffDirEntries } from './changes.js';
import { AufsLayout, formatAncestors, parseAncestors } from './layout.js';
import { mountUnion, planAufsMount } from './mount.js';

/** aufs takes at most 127 branches: the layer's own plus 126 ancestors. */
export const MAX_DEPTH = 127;

interface LayerState {
  /** Nearest first, as in the layers file. */
  ancestors: string[];
}

type Table = Map<string, LayerState>;

/**
 * Docker's aufs driver, layout for layout (see layout.ts). Everything but get/put works
 * on any kernel, from the branch directories alone: an existing Docker aufs store can
 * be listed, diffed and exported — and migrated — on a machine without aufs.
 *
 * ## On disk
 * - create: `diff/<id>` and `mnt/<id>` first, then the layers file, written in
 *   `.staging/` and renamed into `layers/` — the layer exists (moby's test) only once
 *   the rename is done. A crash before leaves bare directories that nothing lists.
 * - applyDiff: the tar is applied to a staged copy of `diff/<id>` and swapped in only
 *   when complete, so a failed apply leaves the layer as it was. The usual case is a
 *   fresh, empty diff dir, replaced in one rename after removing it; a crash between
 *   the two steps leaves the layer with no diff dir, which open() restores (empty, as
 *   it was). A re-apply onto a non-empty layer has a window between its two renames
 *   in which a crash leaves the old content in `.trash/` (swept at the next open).
 * - remove: the layers file goes first (the layer is gone at that instant), then the
 *   directories.
 *
 * ## Several processes (core's StoreLocks, SharedMounts)
 * The layers files are the table, read again when another process wrote. create and the
 * commit of a remove run under the store write lock (a few small files); applyDiff and
 * get/put under the layer's lock, which is also what an open checks before it repairs a
 * layer whose diff dir an apply that died left missing.
 */
export class AufsDriver implements StorageDriver, LayerLister, LayerFilesDir {
  readonly name = 'aufs';
  private readonly layout: AufsLayout;
  private readonly locks: StoreLocks;
  private readonly table: SharedTable<Table>;
  private readonly mounts: SharedMounts;
  private readonly naive: NaiveDiff;

  private constructor(readonly home: string, lockTimeoutMs: number, private readonly kernelMissing: string | null) {
    this.layout = new AufsLayout(home);
    this.locks = new StoreLocks(home, { timeoutMs: lockTimeoutMs, what: `aufs layer table of ${home}` });
    this.table = new SharedTable(this.locks, () => this.loadTable());
    this.mounts = new SharedMounts(home, this.locks, {
      mount: (id, opts) => this.mountLayer(id, opts),
      unmount: (id, path) => this.unmountLayer(id, path),
    });
    this.naive = new NaiveDiff({
      get: (id) => this.get(id),
      put: (id) => this.put(id),
      parentOf: async (id) => (await this.state(id)).ancestors[0] ?? null,
    }, { whiteouts: 'aufs' });
  }

  /**
   * Opens (creating if needed) the home and repairs what dead processes left.
   * `kernelMissing` is why aufs cannot be mounted here (null when it can): the driver
   * opens either way. Holds no lock when it returns.
   */
  static async open(setup: DriverContext, kernelMissing: string | null): Promise<AufsDriver> {
    const { home } = setup;
    await mkdir(home, { recursive: true, mode: 0o700 });
    const driver = new AufsDriver(home, setup.lockTimeoutMs, kernelMissing);
    await driver.recover();
    return driver;
  }

  private async loadTable(): Promise<Table> {
    const { layout } = this;
    const table: Table = new Map();
    for (const id of await readdir(layout.layersRoot)) {
      if (!isValidId(id)) continue;
      let text: string;
      try {
        text = await readFile(layout.layersFile(id), 'utf8');
      } catch (err) {
        if (errnoCode(err) === 'ENOENT') continue; // removed between the readdir and the read
        throw err;
      }
      const ancestors = parseAncestors(text);
      const bad = ancestors.find((a) => !isValidId(a));
      if (bad !== undefined) {
        throw new CairnError('ERR_PREREQUISITES', `aufs layers file ${layout.layersFile(id)} names an invalid layer id ${JSON.stringify(bad)}; repair or remove it`, { subject: id });
      }
      table.set(id, { ancestors });
    }
    return table;
  }

  /**
   * applyDiff removes an empty diff dir before renaming the staged one in: a layer whose
   * apply died in between gets its (empty) diff dir back, under its free lock. Leftovers
   * of dead processes go; mounts nobody holds come off.
   */
  private async recover(): Promise<void> {
    const { layout } = this;
    for (const dir of [layout.diffRoot, layout.layersRoot, layout.mntRoot]) await mkdir(dir, { recursive: true, mode: 0o700 });
    const missing = await this.table.read('open the aufs driver', async (t) => {
      const diffs = new Set(await readdir(layout.diffRoot));
      return [...t.keys()].filter((id) => !diffs.has(id));
    });
    await this.locks.write('repair the aufs home after a crash', async () => {
      for (const id of missing) {
        await this.locks.tryLayer(id, `repair layer ${id}`, () => mkdir(layout.diffDir(id), { recursive: true, mode: 0o755 }));
      }
      await sweepLeftovers(this.home);
    });
    const real = await realpath(layout.mntRoot);
    const mounted = (await readMountInfo()).filter((m) => m.mountPoint.startsWith(`${real}/`))
      .map((m) => ({ id: m.mountPoint.slice(real.length + 1).split('/')[0]!, path: m.mountPoint }))
      .filter((m) => isValidId(m.id));
    await this.mounts.sweep(mounted);
  }

  /** Every layer with its parent (LayerLister: lets migrate() read a store without a list from the caller). */
  async listLayers(): Promise<LayerRef[]> {
    return this.table.read('list layers', (t) => [...t].map(([id, s]) => ({ id, parent: s.ancestors[0] ?? null })));
  }

  create(id: string, parent?: string | null, opts?: CreateOptions): Promise<void> {
    return this.createLayer(id, parent, opts);
  }

  /** aufs keeps container layers exactly as image layers (as moby does). */
  createReadWrite(id: string, parent?: string | null, opts?: CreateOptions): Promise<void> {
    return this.createLayer(id, parent, opts);
  }

  private async createLayer(id: string, parent: string | null | undefined, opts: CreateOptions | undefined): Promise<void> {
    assertValidId(id);
    const parentId = normalizeParent(parent);
    for (const key of Object.keys(opts?.storageOpt ?? {})) {
      const code = key.toLowerCase() === 'size' ? 'ERR_QUOTA_UNSUPPORTED' : 'ERR_INVALID_OPTION';
      throw new CairnError(code, `the aufs driver takes no storage options (got ${JSON.stringify(key)}); create the layer without storageOpt`, { subject: key });
    }
    await this.locks.layer(id, `create layer ${id}`, () => this.table.write(`create layer ${id}`, async (t) => {
      if (t.has(id)) {
        throw new CairnError('ERR_LAYER_EXISTS', `layer ${id} already exists; remove it first or pick another id`, { subject: id });
      }
      const parentState = parentId === null ? null : t.get(parentId);
      if (parentId !== null && !parentState) {
        throw new CairnError('ERR_PARENT_NOT_FOUND', `cannot create layer ${id}: parent layer ${parentId} does not exist`, { subject: parentId });
      }
      const ancestors = parentId === null ? [] : [parentId, ...parentState!.ancestors];
      if (ancestors.length + 1 > MAX_DEPTH) {
        throw new CairnError('ERR_MAX_DEPTH', `cannot create layer ${id}: aufs mounts at most ${MAX_DEPTH} branches and this layer would be the ${ancestors.length + 1}th; squash the image`, { subject: id });
      }
      try {
        // A bare diff dir without a layers file is a leftover of a create that died: start afresh.
        await removeTree(this.layout.diffDir(id));
        await mkdir(this.layout.diffDir(id), { mode: 0o755 });
        await chmod(this.layout.diffDir(id), 0o755);
        await mkdir(this.layout.mntDir(id), { recursive: true, mode: 0o755 });
        await this.writeLayersFile(id, formatAncestors(parentId, parentState?.ancestors ?? []));
        t.set(id, { ancestors });
      } catch (err) {
        await removeTree(this.layout.diffDir(id)).catch(() => undefined);
        throw translateSpaceError(err, `creating aufs layer ${id}`);
      }
    }));
  }

  private async writeLayersFile(id: string, text: string): Promise<void> {
    const staging = join(this.home, STAGING_DIR);
    await mkdir(staging, { recursive: true, mode: 0o700 });
    const tmp = join(staging, ownedName(id));
    const handle = await openFile(tmp, 'w', 0o644);
    try {
      await handle.writeFile(text);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(tmp, this.layout.layersFile(id));
    await fsyncDir(this.layout.layersRoot);
  }

  /** LayerFilesDir: the layer's diff dir, what its applyDiff wrote, readable without a mount (moby's DiffGetter). */
  async layerFilesDir(id: string): Promise<string> {
    if (!(await this.exists(id))) throw layerNotFound(id);
    return this.layout.diffDir(id);
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
        if (!t.has(id)) return null; // as moby: removing what is not there is not an error
        const children = this.childrenOf(t, id);
        if (children.length > 0) {
          throw new CairnError('ERR_LAYER_IN_USE', `layer ${id} has child layers (${children.slice(0, 5).join(', ')}${children.length > 5 ? ', …' : ''}); remove them first`, { subject: id });
        }
        await rm(this.layout.layersFile(id));
        await fsyncDir(this.layout.layersRoot);
        t.delete(id);
        return moveToTrash(this.home, this.layout.diffDir(id), id);
      });
      if (trash === null) return;
      await removeTree(trash).catch(() => undefined);
      await removeMountPoint(this.layout.mntDir(id));
      await this.mounts.forget(id);
      await this.locks.forgetLayer(id);
    });
  }

  async get(id: string, opts: GetOptions = {}): Promise<string> {
    assertValidId(id);
    refuseIdMappings('aufs', id, opts.idMappings);
    // The mount data is checked first: an unsafe label or branch path is the caller's to fix on any kernel.
    planAufsMount(this.layout.diffDir(id), (await this.state(id)).ancestors.map((a) => this.layout.diffDir(a)), opts.mountLabel);
    if (this.kernelMissing !== null) {
      throw new CairnError('ERR_NOT_SUPPORTED', `cannot mount aufs layer ${id}: ${this.kernelMissing}`, { subject: id });
    }
    return this.mounts.get(id, opts);
  }

  async put(id: string, opts: PutOptions = {}): Promise<void> {
    assertValidId(id);
    return this.mounts.put(id, opts);
  }

  private async mountLayer(id: string, opts: GetOptions): Promise<string> {
    const target = this.layout.mntDir(id);
    await mkdir(target, { recursive: true, mode: 0o755 });
    const ro = (await this.state(id)).ancestors.map((a) => this.layout.diffDir(a));
    await mountUnion(this.layout.diffDir(id), ro, target, opts.mountLabel);
    return target;
  }

  private async unmountLayer(id: string, path: string | null): Promise<void> {
    try {
      await umount2(path ?? this.layout.mntDir(id));
    } catch (err) {
      if (errnoCode(err) !== 'EINVAL' && errnoCode(err) !== 'ENOENT') throw err; // not mounted (any more)
    }
  }

  /** Native when `parent` is the layer's own parent (diff/<id> is the changeset); core's naive diff (needs get) otherwise. */
  async diff(id: string, parent?: string | null): Promise<Readable> {
    if (await this.isDirectParent(id, parent)) {
      const dir = this.layout.diffDir(id);
      return exportChanges(dir, diffDirEntries(dir), { whiteoutNames: 'keep' }); // its .wh. files are its whiteouts
    }
    return this.naive.diff(id, parent);
  }

  async changes(id: string, parent?: string | null): Promise<Change[]> {
    if (await this.isDirectParent(id, parent)) {
      return branchChanges(this.layout.diffDir(id), (await this.state(id)).ancestors.map((a) => this.layout.diffDir(a)));
    }
    return this.naive.changes(id, parent);
  }

  async diffSize(id: string, parent?: string | null): Promise<number> {
    if (await this.isDirectParent(id, parent)) return diffDirBytes(this.layout.diffDir(id));
    return this.naive.diffSize(id, parent);
  }

  private async isDirectParent(id: string, parent: string | null | undefined): Promise<boolean> {
    assertValidId(id);
    const own = (await this.state(id)).ancestors[0] ?? null;
    return parent === undefined || normalizeParent(parent) === own;
  }

  /** Applies an OCI changeset into `diff/<id>` keeping its `.wh.` entries as aufs whiteout files. */
  async applyDiff(id: string, parent: string | null | undefined, tar: Readable | AsyncIterable<Uint8Array>, opts: ApplyDiffOptions = {}): Promise<number> {
    assertValidId(id);
    normalizeParent(parent); // validated only: the layer's parent is fixed at create
    if (opts.idMappings) {
      throw new CairnError('ERR_NOT_SUPPORTED', `aufs cannot store layer ${id} shifted by idMappings; apply it without them`, { subject: id });
    }
    return this.locks.layer(id, `apply a diff to layer ${id}`, async () => {
      await this.state(id);
      await this.mounts.assertUnheld(id, 'apply a diff to');
      const diffDir = this.layout.diffDir(id);
      const before = await stat(diffDir);
      const staged = await makeStagingDir(this.home, id);
      let trash: string | null = null;
      let bytes: number;
      try {
        await chown(staged, before.uid, before.gid);
        await chmod(staged, before.mode & 0o7777);
        const empty = (await readdir(diffDir)).length === 0;
        if (!empty) await copyTree(diffDir, staged);
        bytes = await applyLayer(staged, tar, { whiteouts: 'aufs', ...(opts.ignoreChownErrors ? { ignoreChownErrors: true } : {}) });
        await fsyncDir(staged);
        if (empty) await rmdir(diffDir);
        else trash = await moveToTrash(this.home, diffDir, id);
        await rename(staged, diffDir);
        await fsyncDir(this.layout.diffRoot);
      } catch (err) {
        await removeTree(staged).catch(() => undefined);
        throw translateSpaceError(err, `applying a diff to aufs layer ${id}`);
      }
      if (trash !== null) await removeTree(trash).catch(() => undefined);
      return bytes;
    });
  }

  async status(): Promise<Array<[string, string]>> {
    const fs = await detectBackingFs(this.home);
    return [
      ['Root Dir', this.home],
      ['Backing Filesystem', fs.name],
      ['Dirs', String(await this.table.read('report status', (t) => t.size))],
      ['Kernel aufs', this.kernelMissing === null ? 'yes' : 'no (mounting unavailable; read, diff and export work)'],
    ];
  }

  async metadata(id: string): Promise<Record<string, string>> {
    assertValidId(id);
    await this.state(id);
    return { DiffDir: this.layout.diffDir(id), LayersFile: this.layout.layersFile(id), MergedDir: this.layout.mntDir(id) };
  }

  /** Drops this driver's mount holds (unmounting what nobody else holds); holds no lock afterwards. */
  async cleanup(): Promise<void> {
    const errors = await this.mounts.releaseAll();
    await this.locks.close();
    if (errors.length > 0) {
      throw new CairnError('ERR_LAYER_IN_USE', `aufs cleanup could not unmount ${errors.length} layer(s): ${String(errors[0])}`, { cause: errors[0] });
    }
  }

  private state(id: string): Promise<LayerState> {
    return this.table.read(`look up layer ${id}`, (t) => {
      const s = t.get(id);
      if (!s) throw layerNotFound(id, `in ${this.home}`);
      return s;
    });
  }

  private childrenOf(t: Table, id: string): string[] {
    return [...t].filter(([, s]) => s.ancestors[0] === id).map(([child]) => child);
  }
}
