import { mkdir, readdir, realpath, rmdir } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import {
  CairnError, SharedMounts, SharedTable, StoreLocks, assertValidId, normalizeParent, parseByteSize, readMountInfo,
  translateSpaceError, refuseIdMappings, layerNotFound,
} from '@cairnfs/core';
import { NaiveDiff, NaiveDiffDriver } from '@cairnfs/archive';
import type { ApplyDiffOptions, CreateOptions, DriverSetup, GetOptions, PutOptions, StorageDriver } from '@cairnfs/core';
import { ZfsCommandError, ZfsCommands } from './command.js';
import { ZfsLayout } from './layout.js';
import { ZfsMounter, detectMountMethod, findDatasetMount, makeReadOnly, mountProperties, retryWhileBusy } from './mount.js';
import type { MountMethod } from './mount.js';
import { checkParentDataset, probeZfs } from './probe.js';

/** User property marking a dataset as a cairn layer, with its kind. Set at creation, so it comes for free. */
export const KIND_PROPERTY = 'cairn:kind';
/** User property set (`yes`) on an image layer once its applyDiff is done; its mounts are then read-only. */
export const SEALED_PROPERTY = 'cairn:sealed';

/**
 * The snapshot `<fsname>/<id>@cairn:undo` keeps a layer as it was while applyDiff writes
 * into it. ':' is never in a layer id, so the origin-snapshot bookkeeping ignores it.
 */
export const UNDO_SNAPSHOT = 'cairn:undo';

export type LayerKind = 'image' | 'container';

interface LayerState {
  parent: string | null;
  kind: LayerKind;
  /** An image layer whose applyDiff is done (`cairn:sealed=yes`): mounted read-only. */
  sealed: boolean;
}

/** What one recursive `zfs get` under fsname says: the layers, and the snapshots repairs look at. */
interface Scan {
  layers: Map<string, LayerState>;
  snapshots: Array<{ name: string; parent: string; child: string; deferred: boolean }>;
  /** Snapshot name → the layer cloned from it. */
  origins: Map<string, string>;
  undos: string[];
  /** Datasets whose mountpoint is not their layer's path (the home moved). */
  misplaced: Array<{ id: string; dataset: string }>;
}

/** The layer table as one `zfs get` reads it, plus what we learn later that never changes for a dataset. */
interface Table {
  layers: Map<string, LayerState>;
  /** Dataset creation times (epoch seconds) by layer id, filled on demand. */
  creation: Map<string, number>;
  /** The scan the table was loaded from (for the open-time repairs). */
  scan: Scan;
}

/** The parsed `zfs.*` options. */
export interface ZfsSettings {
  /** `zfs.fsname`: the parent dataset of the layers; null = the dataset that holds the home (moby's default). */
  fsname: string | null;
}

/**
 * The zfs driver, as moby's: every layer is a dataset `<fsname>/<id>`; a child is a
 * clone of the snapshot `<fsname>/<parent>@<child>`, which is marked for deferred
 * destruction right away, so it disappears with the child's dataset and never blocks
 * the parent's removal for longer than the child lives.
 *
 * ## Every `zfs` call is a process
 * The layer table is read once at open (one recursive `zfs get`) and kept in memory; the home
 * lock guarantees no other cairn process changes it. Calls per operation, measured on
 * zfs-fuse by the tests: create 1, create on a parent 3 (snapshot, clone, deferred
 * destroy), remove 1, get 1 (`zfs mount`; 0 for a fresh clone, which zfs-fuse mounts
 * itself), last put 1 (`zfs unmount`, see ZfsMounter.unmount), exists/metadata 0,
 * status 2 (zfs get + zpool list). Under OpenZFS get and put are mount(2)/umount2(2),
 * no process. applyDiff: 2 (the undo snapshot and its destroy, see Crash safety), an image
 * layer 1 more (`cairn:sealed=yes`).
 * `commands.calls` counts them.
 *
 * ## Crash safety
 * Each dataset comes into being in one `zfs create`/`zfs clone` call carrying all its
 * properties (kind, mount settings, quota), so a layer either exists whole or not at
 * all. What an interrupted create can leave is its origin snapshot: open() destroys
 * snapshots of ours that no layer was cloned from, and marks for deferred destruction
 * those a clone was made from before the crash. A failed create destroys what it made.
 *
 * applyDiff writes into the mounted dataset in place, so it snapshots the layer first
 * (`@cairn:undo`) and destroys that snapshot only once the apply is done and sealed; open
 * rolls back to an undo snapshot it finds, so a kill mid-apply never leaves a torn layer
 * (found by the kill -9 trials: seed 413271905, trial 18, left a layer that existed with
 * part of its tar). Two more calls per applyDiff.
 *
 * Datasets under fsname without the `cairn:kind` property are not ours (fsname defaults
 * to the dataset that holds the home, which may hold anything): they are never listed,
 * mounted or destroyed.
 *
 * ## Several processes (core's StoreLocks, SharedMounts)
 * The table is read again (one `zfs get`) only when another process changed it (the store
 * lock's generation). A dataset appears whole in one call, so create holds only its
 * layer's and its parent's locks while it runs its zfs calls (the parent can be neither
 * removed nor applied meanwhile) and takes the store write lock just to publish the new
 * layer. An interrupted create's origin snapshot (`<parent>@<child>`) and an interrupted
 * apply's undo snapshot are repaired only under a free lock of the layer they belong to.
 * A fresh clone that zfs-fuse mounted by itself is used by the first get of any process
 * (it checks the mount table); this driver unmounts the ones it made but nobody got at
 * cleanup.
 */
export class ZfsDriver extends NaiveDiffDriver implements StorageDriver {
  readonly name = 'zfs';
  private readonly locks: StoreLocks;
  private readonly table: SharedTable<Table>;
  private readonly mounts: SharedMounts;
  protected readonly naive: NaiveDiff;
  /** Layers this driver created that zfs-fuse mounted by itself at clone time (unmounted at cleanup if nobody holds them). */
  private readonly parked = new Set<string>();

  private constructor(
    readonly home: string,
    readonly layout: ZfsLayout,
    /** The zfs/zpool runner; `commands.calls` counts every process started. */
    readonly commands: ZfsCommands,
    private readonly mounter: ZfsMounter,
    lockTimeoutMs: number,
  ) {
    super();
    this.locks = new StoreLocks(home, { timeoutMs: lockTimeoutMs, what: `zfs layer table of ${home}` });
    this.table = new SharedTable(this.locks, () => this.loadTable());
    this.mounts = new SharedMounts(home, this.locks, {
      mount: (id, opts) => this.mountLayer(id, opts),
      unmount: (id, path) => this.mounter.unmount(this.layout.dataset(id), path ?? this.layout.mountPath(id)),
    });
    this.naive = new NaiveDiff({
      get: (id) => this.get(id),
      put: (id) => this.put(id),
      parentOf: (id) => this.parentOf(id),
    }, { whiteouts: 'delete', contentCheckSince: (id) => this.coarseTimesSince(id) });
  }

  /**
   * zfs-fuse keeps whole-second timestamps, so a same-size edit within a second of the
   * parent's looks unchanged by metadata: files changed since the layer's dataset was
   * made are then compared by content. OpenZFS keeps nanoseconds and needs none of it.
   */
  private async coarseTimesSince(id: string): Promise<number | null> {
    if (this.mounter.method !== 'zfs-mount') return null;
    return this.table.read(`read the creation time of layer ${id}`, async (t) => {
      let since = t.creation.get(id);
      if (since === undefined) {
        const ds = this.layout.dataset(id);
        since = Number((await this.commands.getProperties([ds], ['creation'])).get(ds)?.get('creation'));
        if (!Number.isFinite(since)) return 0; // unknown: compare every file by content rather than miss an edit
        t.creation.set(id, since);
      }
      return since;
    });
  }

  /** The parent dataset layers are made under. */
  get fsname(): string {
    return this.layout.fsname;
  }

  get mountMethod(): MountMethod {
    return this.mounter.method;
  }

  /**
   * Opens the driver on `home` (created if needed): finds the parent dataset, reads the
   * layer table in one call, repairs what dead processes left and drops mounts nobody
   * holds. Holds no lock when it returns.
   */
  static async open(setup: DriverSetup<ZfsSettings>): Promise<ZfsDriver> {
    const { home } = setup;
    const commands = await ZfsCommands.locate();
    const { fsname } = await probeZfs(home, setup.settings.fsname);
    await checkParentDataset(commands, fsname);
    await mkdir(home, { recursive: true, mode: 0o700 });
    const layout = new ZfsLayout(await realpath(home), fsname);
    await mkdir(layout.graphDir, { recursive: true, mode: 0o700 });
    const mounter = new ZfsMounter(await detectMountMethod(), commands);
    const driver = new ZfsDriver(home, layout, commands, mounter, setup.lockTimeoutMs);
    await driver.recover();
    return driver;
  }

  /** Reads the layer table: our datasets under fsname (one recursive `zfs get`). */
  private async loadTable(): Promise<Table> {
    const scan = await this.scan();
    return { layers: scan.layers, creation: new Map(), scan };
  }

  /** Datasets and snapshots under fsname, as the table and the repairs need them. */
  private async scan(): Promise<Scan> {
    const { layout, commands } = this;
    const props = ['type', 'origin', KIND_PROPERTY, SEALED_PROPERTY, 'defer_destroy', 'mountpoint'];
    // -d 2 reaches <fsname>/<id>@<child> without walking foreign trees below fsname.
    const rows = await commands.getProperties([layout.fsname], props, { recursive: true, depth: 2 });
    const layers = new Map<string, LayerState>();
    const snapshots: Scan['snapshots'] = [];
    const origins = new Map<string, string>(); // snapshot name → layer cloned from it
    const undos: string[] = [];
    const misplaced: Scan['misplaced'] = [];
    for (const [name, row] of rows) {
      if (row.get('type') === 'snapshot' && name.endsWith(`@${UNDO_SNAPSHOT}`)) {
        undos.push(name);
        continue;
      }
      if (row.get('type') === 'snapshot') {
        const snap = layout.parseSnapshot(name);
        if (snap) snapshots.push({ name, ...snap, deferred: row.get('defer_destroy') === 'on' });
        continue;
      }
      const id = layout.idOfDataset(name);
      const kind = row.get(KIND_PROPERTY);
      if (id === null || row.get('type') !== 'filesystem' || (kind !== 'image' && kind !== 'container')) continue;
      const origin = row.get('origin') ?? '-';
      const snap = origin === '-' ? null : layout.parseSnapshot(origin);
      if (snap) origins.set(origin, id);
      layers.set(id, { parent: snap?.parent ?? null, kind, sealed: kind === 'image' && row.get(SEALED_PROPERTY) === 'yes' });
      if (this.mounter.method === 'zfs-mount' && row.get('mountpoint') !== layout.mountPath(id)) misplaced.push({ id, dataset: name });
    }
    return { layers, snapshots, origins, undos, misplaced };
  }

  /**
   * Brings ZFS and the mount table in line, as far as no live process owns the pieces:
   * undo snapshots of applies that died, origin snapshots of creates that died, datasets
   * whose mount path moved, mounts nobody holds. Takes the write lock only when needed.
   */
  private async recover(): Promise<void> {
    const { layout, commands } = this;
    const scan = await this.table.read('open the zfs driver', (t) => t.scan);
    const needed = scan.undos.length > 0 || scan.misplaced.length > 0
      || scan.snapshots.some((s) => scan.layers.has(s.parent) && (scan.origins.get(s.name) !== s.child || !s.deferred));
    if (needed) {
      await this.table.write('repair the zfs layers after a crash', async (t) => {
        const now = await this.scan();
        for (const { dataset, id } of now.misplaced) {
          // The home moved (or was reached by another path): point the dataset at its new mount path.
          await commands.zfs('set', `mountpoint=${layout.mountPath(id)}`, dataset);
        }
        for (const undo of now.undos) {
          const id = layout.idOfDataset(undo.slice(0, -`@${UNDO_SNAPSHOT}`.length));
          const layer = id === null ? undefined : now.layers.get(id);
          if (layer) await this.locks.tryLayer(id!, `roll back the apply of layer ${id}`, () => this.rollBackApply(id!, layer, undo));
        }
        for (const snap of now.snapshots) {
          if (!now.layers.has(snap.parent)) continue; // not a snapshot of one of our layers
          // The child's lock: a create of that child may be between its snapshot and its clone.
          await this.locks.tryLayer(snap.child, `tidy the origin snapshot ${snap.name}`, async () => {
            if (now.origins.get(snap.name) !== snap.child) {
              await commands.zfs('destroy', snap.name); // an interrupted create: nothing was cloned from it
            } else if (!snap.deferred) {
              await commands.zfs('destroy', '-d', snap.name); // create died before marking it
            }
          });
        }
        t.scan = await this.scan();
        t.layers = t.scan.layers;
        t.creation.clear();
      });
    }
    await this.sweepMounts();
  }

  /**
   * An applyDiff was cut short: the layer goes back to its undo snapshot (contents, and
   * unsealed if the seal had landed), then the snapshot goes. Repeatable if cut again.
   */
  private async rollBackApply(id: string, layer: LayerState, undo: string): Promise<void> {
    const dataset = this.layout.dataset(id);
    // Looked for again now that the layer's lock is ours: the apply that made the snapshot
    // may have finished, and destroyed it, since the scan. (If the look itself fails, the
    // snapshot stays, and the next open tries again.)
    if (!(await this.commands.getProperties([undo], ['type']).then((rows) => rows.has(undo), () => false))) return;
    try {
      await retryWhileBusy(() => this.commands.zfs('rollback', undo));
    } catch (err) {
      throw new CairnError('ERR_PREREQUISITES',
        `layer ${id} was left half-applied by an interrupted applyDiff and ${dataset} could not be rolled back to ${undo}: ${errorText(err)}; ` +
        `run \`zfs rollback ${undo}\` (or remove the layer) and open again`, { subject: id, cause: err });
    }
    if (layer.sealed) {
      await this.commands.zfs('inherit', SEALED_PROPERTY, dataset);
      layer.sealed = false;
    }
    await retryWhileBusy(() => this.commands.zfs('destroy', undo));
  }

  /** Mounts of our datasets at their paths that nobody holds come off; empty stale mount points go. */
  private async sweepMounts(): Promise<void> {
    const table = await readMountInfo();
    const layers = await this.table.read('open the zfs driver', (t) => new Set(t.layers.keys()));
    const found: Array<{ id: string; path: string }> = [];
    for (const name of await readdir(this.layout.graphDir)) {
      const path = this.layout.mountPath(name);
      if (layers.has(name) && findDatasetMount(table, this.layout.dataset(name), path)) found.push({ id: name, path });
      else await rmdir(path).catch(() => undefined); // an empty mount point from a crash
    }
    await this.mounts.sweep(found);
  }

  create(id: string, parent?: string | null, opts?: CreateOptions): Promise<void> {
    return this.createLayer(id, parent, opts, 'image');
  }

  createReadWrite(id: string, parent?: string | null, opts?: CreateOptions): Promise<void> {
    return this.createLayer(id, parent, opts, 'container');
  }

  private async createLayer(id: string, parent: string | null | undefined, opts: CreateOptions | undefined, kind: LayerKind): Promise<void> {
    assertValidId(id);
    const parentId = normalizeParent(parent);
    const quota = quotaOf(opts?.storageOpt);
    // The parent's lock keeps it from being removed or applied while it is snapshotted and cloned.
    await this.locks.layer(parentId === null ? [id] : [id, parentId], `create layer ${id}`, async () => {
      await this.table.read(`create layer ${id}`, (t) => {
        if (t.layers.has(id)) {
          throw new CairnError('ERR_LAYER_EXISTS', `layer ${id} already exists; remove it first or pick another id`, { subject: id });
        }
        if (parentId !== null && !t.layers.has(parentId)) {
          throw new CairnError('ERR_PARENT_NOT_FOUND', `cannot create layer ${id}: parent layer ${parentId} does not exist`, { subject: parentId });
        }
      });
      try {
        await this.createDataset(id, parentId, kind, quota);
      } catch (err) {
        throw createError(err, id, this.layout.dataset(id));
      }
      // Published: the generation tells every other process to read the table again.
      await this.table.write(`create layer ${id}`, (t) => {
        t.layers.set(id, { parent: parentId, kind, sealed: false });
        t.creation.delete(id);
      });
    });
  }

  /** The zfs side of create; on failure destroys whatever it made before rethrowing. */
  private async createDataset(id: string, parentId: string | null, kind: LayerKind, quota: number | null): Promise<void> {
    const { layout, commands } = this;
    const dataset = layout.dataset(id);
    const props: Record<string, string> = { [KIND_PROPERTY]: kind, ...mountProperties(this.mounter.method, layout.mountPath(id)) };
    if (quota !== null) props.quota = String(quota);
    const propArgs = Object.entries(props).flatMap(([k, v]) => ['-o', `${k}=${v}`]);
    if (parentId === null) {
      await commands.zfs('create', ...propArgs, dataset);
      return;
    }
    const snapshot = layout.originSnapshot(parentId, id);
    await commands.zfs('snapshot', snapshot);
    try {
      await commands.zfs('clone', ...propArgs, snapshot, dataset);
      // Deferred: the snapshot stays while the clone needs it and goes when the clone is destroyed.
      await commands.zfs('destroy', '-d', snapshot);
    } catch (err) {
      // zfs-fuse's clone can fail *after* making the dataset (when mounting it fails), so destroy by name either way.
      await retryWhileBusy(() => commands.zfs('destroy', '-r', dataset)).catch(() => undefined);
      await retryWhileBusy(() => commands.zfs('destroy', snapshot)).catch(() => undefined);
      throw err;
    }
    if (this.mounter.method === 'zfs-mount' && findDatasetMount(await readMountInfo(), dataset, layout.mountPath(id))) {
      this.parked.add(id); // zfs-fuse mounts a fresh clone itself: the first get uses that mount
    }
  }

  async exists(id: string): Promise<boolean> {
    assertValidId(id);
    return this.table.read(`look up layer ${id}`, (t) => t.layers.has(id));
  }

  async remove(id: string): Promise<void> {
    assertValidId(id);
    // No child can appear while we hold this layer's lock (a create on it takes it too).
    await this.locks.layer(id, `remove layer ${id}`, async () => {
      const exists = await this.table.read(`remove layer ${id}`, (t) => {
        if (!t.layers.has(id)) return false; // as moby: removing what is not there is not an error
        const children = this.childrenOf(t, id);
        if (children.length > 0) {
          throw new CairnError('ERR_LAYER_IN_USE', `layer ${id} has child layers (${children.slice(0, 5).join(', ')}${children.length > 5 ? ', …' : ''}); remove them first`, { subject: id });
        }
        return true;
      });
      if (!exists) return;
      await this.mounts.assertUnheld(id, 'remove');
      const path = this.layout.mountPath(id);
      const dataset = this.layout.dataset(id);
      // A fresh clone zfs-fuse mounted by itself, which nobody got: unmount it first.
      if (this.parked.delete(id) || (this.mounter.method === 'zfs-mount' && findDatasetMount(await readMountInfo(), dataset, path))) {
        await this.mounter.unmount(dataset, path);
      }
      try {
        // -r takes the layer's own stray snapshots along; ZFS still refuses if a clone depends on one.
        await retryWhileBusy(() => this.commands.zfs('destroy', '-r', dataset));
      } catch (err) {
        if (!(err instanceof ZfsCommandError && err.notFound)) {
          throw new CairnError('ERR_LAYER_IN_USE', `cannot destroy dataset ${dataset} of layer ${id}: ${errorText(err)}`, { subject: id, cause: err });
        }
      }
      await this.table.write(`remove layer ${id}`, (t) => {
        t.layers.delete(id);
        t.creation.delete(id);
      });
      await rmdir(path).catch(() => undefined);
      await this.mounts.forget(id);
      await this.locks.forgetLayer(id);
    });
  }

  async get(id: string, opts: GetOptions = {}): Promise<string> {
    assertValidId(id);
    refuseIdMappings('zfs', id, opts.idMappings);
    return this.mounts.get(id, opts);
  }

  async put(id: string, opts: PutOptions = {}): Promise<void> {
    assertValidId(id);
    return this.mounts.put(id, opts);
  }

  /** Hold count of a layer's mount, every process counted (for tests and diagnostics). */
  mountCount(id: string): Promise<number> {
    assertValidId(id);
    return this.mounts.count(id);
  }

  private async mountLayer(id: string, opts: GetOptions): Promise<string> {
    const layer = await this.table.read(`mount layer ${id}`, (t) => this.committed(t, id));
    const path = this.layout.mountPath(id);
    const dataset = this.layout.dataset(id);
    this.parked.delete(id);
    // zfs-fuse mounted a fresh clone itself (in whichever process created it): use that mount.
    if (this.mounter.method === 'zfs-mount' && findDatasetMount(await readMountInfo(), dataset, path)) {
      if (layer.sealed) await makeReadOnly(path);
      return path;
    }
    try {
      await this.mounter.mount(dataset, path, { readOnly: layer.sealed, ...(opts.mountLabel ? { mountLabel: opts.mountLabel } : {}) });
    } catch (err) {
      throw new CairnError('ERR_NOT_SUPPORTED', `cannot mount layer ${id} (${dataset}) at ${path}: ${errorText(err)}`, { subject: id, cause: err });
    }
    return path;
  }

  // diff, changes and diffSize: NaiveDiffDriver.

  /**
   * Extracts the changeset into the mounted layer. An image layer (made with `create`)
   * is then sealed: `cairn:sealed=yes` on its dataset (one call), and every mount of it,
   * present and future, read-only. Its clones are not affected.
   */
  async applyDiff(id: string, parent: string | null | undefined, tar: Readable | AsyncIterable<Uint8Array>, opts: ApplyDiffOptions = {}): Promise<number> {
    assertValidId(id);
    normalizeParent(parent);
    // The layer's lock for the whole apply: the undo snapshot is ours while it is held.
    return this.locks.layer(id, `apply a diff to layer ${id}`, async () => {
      const layer = await this.table.read(`apply a diff to layer ${id}`, (t) => this.committed(t, id));
      if (layer.sealed) {
        throw new CairnError('ERR_LAYER_IN_USE', `image layer ${id} already had its diff applied and is read-only; create a new layer for more changes`, { subject: id });
      }
      const undo = `${this.layout.dataset(id)}@${UNDO_SNAPSHOT}`;
      await this.commands.zfs('snapshot', undo);
      let bytes: number;
      try {
        try {
          bytes = await this.naive.applyDiff(id, parent, tar, opts);
        } catch (err) {
          throw translateSpaceError(err, `applying a diff to zfs layer ${id}`);
        }
        if (layer.kind === 'image') {
          await this.commands.zfs('set', `${SEALED_PROPERTY}=yes`, this.layout.dataset(id));
          await this.table.write(`seal layer ${id}`, (t) => {
            const now = t.layers.get(id);
            if (now) now.sealed = true;
          });
          if ((await this.mounts.count(id)) > 0) await makeReadOnly(this.layout.mountPath(id));
        }
      } finally {
        // Only now is the apply done (a failed one leaves the layer as it always has). If this
        // fails the apply fails too: a later open would roll the layer back.
        await retryWhileBusy(() => this.commands.zfs('destroy', undo));
      }
      return bytes;
    });
  }

  /** What moby's zfs driver reports; sizes in exact bytes. Two calls: one `zfs get`, one `zpool list`. */
  async status(): Promise<Array<[string, string]>> {
    const fsname = this.layout.fsname;
    const pool = fsname.split('/')[0]!;
    const [props, health] = await Promise.all([
      this.commands.getProperties([fsname], ['used', 'available', 'quota', 'compression']),
      this.commands.run('zpool', ['list', '-H', '-o', 'health', pool]).then((out) => out.trim(), (err: unknown) => `unknown (${errorText(err)})`),
    ]);
    const row = props.get(fsname) ?? new Map<string, string>();
    const quota = row.get('quota') ?? '0';
    return [
      ['Zpool', pool],
      ['Zpool Health', health],
      ['Parent Dataset', fsname],
      ['Space Used By Parent', row.get('used') ?? ''],
      ['Space Available', row.get('available') ?? ''],
      ['Parent Quota', quota === '0' || quota === '-' || quota === 'none' ? 'no' : quota],
      ['Compression', row.get('compression') ?? ''],
    ];
  }

  /** As moby: the layer's dataset and mount point. */
  async metadata(id: string): Promise<Record<string, string>> {
    assertValidId(id);
    await this.table.read(`read the metadata of layer ${id}`, (t) => this.committed(t, id));
    return { Dataset: this.layout.dataset(id), Mountpoint: this.layout.mountPath(id) };
  }

  /**
   * Drops this driver's holds (unmounting what nobody else holds) and unmounts the fresh
   * clones it made that nobody got. Holds no lock afterwards.
   */
  async cleanup(): Promise<void> {
    const errors = await this.mounts.releaseAll();
    for (const id of [...this.parked]) {
      try {
        await this.locks.layer(id, `unmount the fresh clone ${id}`, async () => {
          if ((await this.mounts.count(id)) > 0) return; // someone got it meanwhile: theirs now
          const dataset = this.layout.dataset(id);
          const path = this.layout.mountPath(id);
          if (findDatasetMount(await readMountInfo(), dataset, path)) await this.mounter.unmount(dataset, path);
        });
        this.parked.delete(id);
      } catch (err) {
        errors.push(err);
      }
    }
    await this.locks.close();
    if (errors.length > 0) {
      throw new CairnError('ERR_LAYER_IN_USE', `zfs cleanup could not unmount ${errors.length} layer(s): ${errorText(errors[0])}`, { cause: errors[0] });
    }
  }

  /** The parent each layer was created on (from the datasets' origins); for tests and tools. */
  async parentOf(id: string): Promise<string | null> {
    assertValidId(id);
    return this.table.read(`read the parent of layer ${id}`, (t) => this.committed(t, id).parent);
  }

  private committed(t: Table, id: string): LayerState {
    const layer = t.layers.get(id);
    if (!layer) {
      throw layerNotFound(id, `under ${this.layout.fsname}`);
    }
    return layer;
  }

  private childrenOf(t: Table, id: string): string[] {
    return [...t.layers].filter(([, l]) => l.parent === id).map(([child]) => child);
  }
}

/** `storageOpt` → the dataset quota in bytes, or null; moby's zfs accepts only `size`. */
function quotaOf(storageOpt: Record<string, string> | undefined): number | null {
  let quota: number | null = null;
  for (const [key, value] of Object.entries(storageOpt ?? {})) {
    if (key.toLowerCase() !== 'size') {
      throw new CairnError('ERR_INVALID_OPTION', `storage option ${JSON.stringify(key)} is not supported by the zfs driver; it takes size`, { subject: key });
    }
    quota = parseByteSize(value, 'storageOpt.size');
    if (quota === 0) quota = null; // size 0 = no quota, as moby
  }
  return quota;
}

function createError(err: unknown, id: string, dataset: string): unknown {
  if (err instanceof CairnError) return err;
  if (err instanceof ZfsCommandError) {
    if (err.alreadyExists) {
      return new CairnError('ERR_LAYER_EXISTS', `cannot create layer ${id}: dataset ${dataset} already exists but is not a cairn layer; rename or destroy it`, { subject: id, cause: err });
    }
    if (err.noSpace) return new CairnError('ERR_NO_SPACE', `cannot create layer ${id}: the pool is out of space (${err.stderr.trim()})`, { subject: id, cause: err });
    return new CairnError('ERR_NOT_SUPPORTED', `cannot create layer ${id}: ${err.message}`, { subject: id, cause: err });
  }
  return err;
}

function errorText(err: unknown): string {
  if (err instanceof ZfsCommandError) return err.stderr.trim() || err.message;
  return err instanceof Error ? err.message : String(err);
}
