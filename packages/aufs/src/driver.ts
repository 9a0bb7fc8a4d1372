import { chmod, chown, mkdir, open as openFile, readdir, readFile, rename, rm, rmdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import {
  CairnError, MountRefs, STAGING_DIR, TRASH_DIR, assertValidId, copyTree, detectBackingFs, discardDir, fsyncDir,
  isValidId, makeStagingDir, normalizeParent, openUnderHomeLock, sweepLeftovers, translateSpaceError, refuseIdMappings,
} from '@cairnfs/core';
import { NaiveDiff, applyLayer, exportChanges } from '@cairnfs/archive';
import type { Change, CreateOptions, DriverContext, GetOptions, HomeLock, StorageDriver, ApplyDiffOptions } from '@cairnfs/core';
import type { LayerLister, LayerRef } from '@cairnfs/core';
import { umount2 } from '@cairnfs/sys';
import { branchChanges, diffDirBytes, diffDirEntries } from './changes.js';
import { AufsLayout, formatAncestors, parseAncestors } from './layout.js';
import { mountUnion, planAufsMount } from './mount.js';

/** aufs takes at most 127 branches: the layer's own plus 126 ancestors. */
export const MAX_DEPTH = 127;

interface LayerState {
  /** Nearest first, as in the layers file. */
  ancestors: string[];
}

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
 */
export class AufsDriver implements StorageDriver, LayerLister {
  readonly name = 'aufs';
  private readonly layout: AufsLayout;
  private readonly layers = new Map<string, LayerState>();
  /** Ids being created: claimed, not yet visible. */
  private readonly pending = new Set<string>();
  private readonly refs: MountRefs;
  private readonly naive: NaiveDiff;
  private closed = false;

  private constructor(readonly home: string, private readonly lock: HomeLock, private readonly kernelMissing: string | null) {
    this.layout = new AufsLayout(home);
    this.refs = new MountRefs({
      mount: (id, opts) => this.mountLayer(id, opts),
      unmount: (_id, path) => umount2(path),
    });
    this.naive = new NaiveDiff({
      get: (id) => this.get(id),
      put: (id) => this.put(id),
      parentOf: async (id) => this.state(id).ancestors[0] ?? null,
    }, { whiteouts: 'aufs' });
  }

  /**
   * Opens (creating if needed) the home and loads every layers file. `kernelMissing` is
   * why aufs cannot be mounted here (null when it can): the driver opens either way.
   */
  static async open(setup: DriverContext, kernelMissing: string | null): Promise<AufsDriver> {
    const { home } = setup;
    await mkdir(home, { recursive: true, mode: 0o700 });
    return openUnderHomeLock(home, { timeoutMs: setup.lockTimeoutMs }, async (lock) => {
      const driver = new AufsDriver(home, lock, kernelMissing);
      await driver.load();
      return driver;
    });
  }

  private async load(): Promise<void> {
    const { layout } = this;
    for (const dir of [layout.diffRoot, layout.layersRoot, layout.mntRoot]) await mkdir(dir, { recursive: true, mode: 0o700 });
    for (const id of await readdir(layout.layersRoot)) {
      if (!isValidId(id)) continue;
      const ancestors = parseAncestors(await readFile(layout.layersFile(id), 'utf8'));
      const bad = ancestors.find((a) => !isValidId(a));
      if (bad !== undefined) {
        throw new CairnError('ERR_PREREQUISITES', `aufs layers file ${layout.layersFile(id)} names an invalid layer id ${JSON.stringify(bad)}; repair or remove it`, { subject: id });
      }
      this.layers.set(id, { ancestors });
      // applyDiff removes an empty diff dir before renaming the staged one in: finish that state.
      await mkdir(layout.diffDir(id), { recursive: true, mode: 0o755 });
    }
    await sweepLeftovers(this.home);
  }

  /** Every layer with its parent (LayerLister: lets migrate() read a store without a list from the caller). */
  async listLayers(): Promise<LayerRef[]> {
    return [...this.layers].map(([id, s]) => ({ id, parent: s.ancestors[0] ?? null }));
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
    await this.refs.withLock(id, async () => {
      if (this.layers.has(id) || this.pending.has(id)) {
        throw new CairnError('ERR_LAYER_EXISTS', `layer ${id} already exists; remove it first or pick another id`, { subject: id });
      }
      const parentState = parentId === null ? null : this.layers.get(parentId);
      if (parentId !== null && !parentState) {
        throw new CairnError('ERR_PARENT_NOT_FOUND', `cannot create layer ${id}: parent layer ${parentId} does not exist`, { subject: parentId });
      }
      const ancestors = parentId === null ? [] : [parentId, ...parentState!.ancestors];
      if (ancestors.length + 1 > MAX_DEPTH) {
        throw new CairnError('ERR_MAX_DEPTH', `cannot create layer ${id}: aufs mounts at most ${MAX_DEPTH} branches and this layer would be the ${ancestors.length + 1}th; squash the image`, { subject: id });
      }
      this.pending.add(id);
      try {
        // A bare diff dir without a layers file is a leftover of a create that died: start afresh.
        await rm(this.layout.diffDir(id), { recursive: true, force: true });
        await mkdir(this.layout.diffDir(id), { mode: 0o755 });
        await chmod(this.layout.diffDir(id), 0o755);
        await mkdir(this.layout.mntDir(id), { recursive: true, mode: 0o755 });
        await this.writeLayersFile(id, formatAncestors(parentId, parentState?.ancestors ?? []));
        this.layers.set(id, { ancestors });
      } catch (err) {
        await rm(this.layout.diffDir(id), { recursive: true, force: true }).catch(() => undefined);
        throw translateSpaceError(err, `creating aufs layer ${id}`);
      } finally {
        this.pending.delete(id);
      }
    });
  }

  private async writeLayersFile(id: string, text: string): Promise<void> {
    const staging = join(this.home, STAGING_DIR);
    await mkdir(staging, { recursive: true, mode: 0o700 });
    const tmp = join(staging, `layers-${id}-${process.pid}-${Date.now()}`);
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

  async exists(id: string): Promise<boolean> {
    assertValidId(id);
    return this.layers.has(id);
  }

  async remove(id: string): Promise<void> {
    assertValidId(id);
    await this.refs.withLock(id, async () => {
      if (!this.layers.has(id)) return; // as moby: removing what is not there is not an error
      if (this.refs.isMounted(id)) {
        throw new CairnError('ERR_LAYER_IN_USE', `layer ${id} is mounted (${this.refs.count(id)} user(s)); put it before removing it`, { subject: id });
      }
      const children = this.childrenOf(id);
      if (children.length > 0) {
        throw new CairnError('ERR_LAYER_IN_USE', `layer ${id} has child layers (${children.slice(0, 5).join(', ')}${children.length > 5 ? ', …' : ''}); remove them first`, { subject: id });
      }
      await rm(this.layout.layersFile(id));
      await fsyncDir(this.layout.layersRoot);
      this.layers.delete(id);
      await discardDir(this.home, this.layout.diffDir(id), id);
      await rm(this.layout.mntDir(id), { recursive: true, force: true });
    });
  }

  async get(id: string, opts: GetOptions = {}): Promise<string> {
    assertValidId(id);
    refuseIdMappings('aufs', id, opts.idMappings);
    // The mount data is checked first: an unsafe label or branch path is the caller's to fix on any kernel.
    planAufsMount(this.layout.diffDir(id), this.state(id).ancestors.map((a) => this.layout.diffDir(a)), opts.mountLabel);
    if (this.kernelMissing !== null) {
      throw new CairnError('ERR_NOT_SUPPORTED', `cannot mount aufs layer ${id}: ${this.kernelMissing}`, { subject: id });
    }
    return this.refs.get(id, opts);
  }

  async put(id: string): Promise<void> {
    assertValidId(id);
    return this.refs.put(id);
  }

  private async mountLayer(id: string, opts: GetOptions): Promise<string> {
    const target = this.layout.mntDir(id);
    await mkdir(target, { recursive: true, mode: 0o755 });
    const ro = this.state(id).ancestors.map((a) => this.layout.diffDir(a));
    await mountUnion(this.layout.diffDir(id), ro, target, opts.mountLabel);
    return target;
  }

  /** Native when `parent` is the layer's own parent (diff/<id> is the changeset); core's naive diff (needs get) otherwise. */
  async diff(id: string, parent?: string | null): Promise<Readable> {
    if (this.isDirectParent(id, parent)) {
      const dir = this.layout.diffDir(id);
      return exportChanges(dir, diffDirEntries(dir), { whiteoutNames: 'keep' }); // its .wh. files are its whiteouts
    }
    return this.naive.diff(id, parent);
  }

  async changes(id: string, parent?: string | null): Promise<Change[]> {
    if (this.isDirectParent(id, parent)) {
      return branchChanges(this.layout.diffDir(id), this.state(id).ancestors.map((a) => this.layout.diffDir(a)));
    }
    return this.naive.changes(id, parent);
  }

  async diffSize(id: string, parent?: string | null): Promise<number> {
    if (this.isDirectParent(id, parent)) return diffDirBytes(this.layout.diffDir(id));
    return this.naive.diffSize(id, parent);
  }

  private isDirectParent(id: string, parent: string | null | undefined): boolean {
    assertValidId(id);
    const own = this.state(id).ancestors[0] ?? null;
    return parent === undefined || normalizeParent(parent) === own;
  }

  /** Applies an OCI changeset into `diff/<id>` keeping its `.wh.` entries as aufs whiteout files. */
  async applyDiff(id: string, parent: string | null | undefined, tar: Readable | AsyncIterable<Uint8Array>, opts: ApplyDiffOptions = {}): Promise<number> {
    assertValidId(id);
    normalizeParent(parent); // validated only: the layer's parent is fixed at create
    if (opts.idMappings) {
      throw new CairnError('ERR_NOT_SUPPORTED', `aufs cannot store layer ${id} shifted by idMappings; apply it without them`, { subject: id });
    }
    return this.refs.withLock(id, async () => {
      this.state(id);
      if (this.refs.isMounted(id)) {
        throw new CairnError('ERR_LAYER_IN_USE', `cannot apply a diff to layer ${id} while it is mounted; put it first`, { subject: id });
      }
      const diffDir = this.layout.diffDir(id);
      const before = await stat(diffDir);
      const staged = await makeStagingDir(this.home, id);
      const trash = join(this.home, TRASH_DIR, `${id}-applied-${process.pid}-${Date.now()}`);
      let bytes: number;
      try {
        await chown(staged, before.uid, before.gid);
        await chmod(staged, before.mode & 0o7777);
        const empty = (await readdir(diffDir)).length === 0;
        if (!empty) await copyTree(diffDir, staged);
        bytes = await applyLayer(staged, tar, { whiteouts: 'aufs', ...(opts.ignoreChownErrors ? { ignoreChownErrors: true } : {}) });
        await fsyncDir(staged);
        if (empty) {
          await rmdir(diffDir);
        } else {
          await mkdir(join(this.home, TRASH_DIR), { recursive: true, mode: 0o700 });
          await rename(diffDir, trash);
        }
        await rename(staged, diffDir);
        await fsyncDir(this.layout.diffRoot);
      } catch (err) {
        await rm(staged, { recursive: true, force: true }).catch(() => undefined);
        throw translateSpaceError(err, `applying a diff to aufs layer ${id}`);
      }
      await rm(trash, { recursive: true, force: true }).catch(() => undefined);
      return bytes;
    });
  }

  async status(): Promise<Array<[string, string]>> {
    const fs = await detectBackingFs(this.home);
    return [
      ['Root Dir', this.home],
      ['Backing Filesystem', fs.name],
      ['Dirs', String(this.layers.size)],
      ['Kernel aufs', this.kernelMissing === null ? 'yes' : 'no (mounting unavailable; read, diff and export work)'],
    ];
  }

  async metadata(id: string): Promise<Record<string, string>> {
    assertValidId(id);
    this.state(id);
    return { DiffDir: this.layout.diffDir(id), LayersFile: this.layout.layersFile(id), MergedDir: this.layout.mntDir(id) };
  }

  async cleanup(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const errors = await this.refs.unmountAll();
    await this.lock.release();
    if (errors.length > 0) {
      throw new CairnError('ERR_LAYER_IN_USE', `aufs cleanup could not unmount ${errors.length} layer(s): ${String(errors[0])}`, { cause: errors[0] });
    }
  }

  private state(id: string): LayerState {
    const s = this.layers.get(id);
    if (!s) throw new CairnError('ERR_LAYER_NOT_FOUND', `layer ${id} does not exist in ${this.home}`, { subject: id });
    return s;
  }

  private childrenOf(id: string): string[] {
    return [...this.layers].filter(([, s]) => s.ancestors[0] === id).map(([child]) => child);
  }
}
