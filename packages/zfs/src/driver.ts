import { mkdir, readdir, realpath, rmdir } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import {
  CairnError, MountRefs, openUnderHomeLock, assertValidId, normalizeParent, parseByteSize, readMountInfo,
  translateSpaceError, refuseIdMappings,
} from '@cairnfs/core';
import { NaiveDiff, NaiveDiffDriver } from '@cairnfs/archive';
import type { CreateOptions, DriverSetup, GetOptions, HomeLock, StorageDriver, ApplyDiffOptions } from '@cairnfs/core';
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
  /** False while create() is still running: the id is claimed but the layer does not exist yet. */
  committed: boolean;
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
 */
export class ZfsDriver extends NaiveDiffDriver implements StorageDriver {
  readonly name = 'zfs';
  private readonly layers = new Map<string, LayerState>();
  private readonly refs: MountRefs;
  protected readonly naive: NaiveDiff;
  /** Layers zfs-fuse mounted by itself when they were cloned: mounted, but with no user yet. */
  private readonly parked = new Set<string>();
  private closed = false;

  private constructor(
    readonly home: string,
    readonly layout: ZfsLayout,
    /** The zfs/zpool runner; `commands.calls` counts every process started. */
    readonly commands: ZfsCommands,
    private readonly mounter: ZfsMounter,
    private readonly lock: HomeLock,
  ) {
    super();
    this.refs = new MountRefs({
      mount: (id, opts) => this.mountLayer(id, opts),
      unmount: (id, path) => this.mounter.unmount(this.layout.dataset(id), path),
    });
    this.naive = new NaiveDiff({
      get: (id) => this.get(id),
      put: (id) => this.put(id),
      parentOf: async (id) => this.committed(id).parent,
    }, { whiteouts: 'delete', contentCheckSince: (id) => this.coarseTimesSince(id) });
  }

  /**
   * zfs-fuse keeps whole-second timestamps, so a same-size edit within a second of the
   * parent's looks unchanged by metadata: files changed since the layer's dataset was
   * made are then compared by content. OpenZFS keeps nanoseconds and needs none of it.
   */
  private async coarseTimesSince(id: string): Promise<number | null> {
    if (this.mounter.method !== 'zfs-mount') return null;
    let since = this.creationTimes.get(id);
    if (since === undefined) {
      const ds = this.layout.dataset(id);
      since = Number((await this.commands.getProperties([ds], ['creation'])).get(ds)?.get('creation'));
      if (!Number.isFinite(since)) return 0; // unknown: compare every file by content rather than miss an edit
      this.creationTimes.set(id, since);
    }
    return since;
  }

  /** Dataset creation times (epoch seconds) by layer id; they never change. */
  private readonly creationTimes = new Map<string, number>();

  /** The parent dataset layers are made under. */
  get fsname(): string {
    return this.layout.fsname;
  }

  get mountMethod(): MountMethod {
    return this.mounter.method;
  }

  /**
   * Opens the driver on `home` (created if needed): takes the home lock, finds the parent
   * dataset, reads the layer table in one call, repairs what a crash left and adopts
   * layers that are still mounted (each counted once, so one `put` unmounts it).
   */
  static async open(setup: DriverSetup<ZfsSettings>): Promise<ZfsDriver> {
    const { home } = setup;
    const commands = await ZfsCommands.locate();
    const { fsname } = await probeZfs(home, setup.settings.fsname);
    return openUnderHomeLock(home, { timeoutMs: setup.lockTimeoutMs }, async (lock) => {
      await checkParentDataset(commands, fsname);
      const layout = new ZfsLayout(await realpath(home), fsname);
      await mkdir(layout.graphDir, { recursive: true, mode: 0o700 });
      const mounter = new ZfsMounter(await detectMountMethod(), commands);
      const driver = new ZfsDriver(home, layout, commands, mounter, lock);
      await driver.recover();
      return driver;
    });
  }

  /** Loads the layer table and brings ZFS and the mount table in line with it. */
  private async recover(): Promise<void> {
    const { layout, commands } = this;
    const props = ['type', 'origin', KIND_PROPERTY, SEALED_PROPERTY, 'defer_destroy', 'mountpoint'];
    // -d 2 reaches <fsname>/<id>@<child> without walking foreign trees below fsname.
    const table = await commands.getProperties([layout.fsname], props, { recursive: true, depth: 2 });
    const snapshots: Array<{ name: string; parent: string; child: string; deferred: boolean }> = [];
    const origins = new Map<string, string>(); // snapshot name → layer cloned from it
    const undos: string[] = [];
    for (const [name, row] of table) {
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
      this.layers.set(id, { parent: snap?.parent ?? null, kind, sealed: kind === 'image' && row.get(SEALED_PROPERTY) === 'yes', committed: true });
      const mountpoint = row.get('mountpoint');
      if (this.mounter.method === 'zfs-mount' && mountpoint !== layout.mountPath(id)) {
        // The home moved (or was reached by another path): point the dataset at its new mount path.
        await commands.zfs('set', `mountpoint=${layout.mountPath(id)}`, name);
      }
    }
    for (const undo of undos) {
      const id = layout.idOfDataset(undo.slice(0, -`@${UNDO_SNAPSHOT}`.length));
      const layer = id === null ? undefined : this.layers.get(id);
      if (layer) await this.rollBackApply(id!, layer, undo);
    }
    for (const snap of snapshots) {
      if (!this.layers.has(snap.parent)) continue; // not a snapshot of one of our layers
      if (origins.get(snap.name) !== snap.child) {
        await commands.zfs('destroy', snap.name); // an interrupted create: nothing was cloned from it
      } else if (!snap.deferred) {
        await commands.zfs('destroy', '-d', snap.name); // create died before marking it
      }
    }
    await this.adoptMounts();
  }

  /**
   * An applyDiff was cut short: the layer goes back to its undo snapshot (contents, and
   * unsealed if the seal had landed), then the snapshot goes. Repeatable if cut again.
   */
  private async rollBackApply(id: string, layer: LayerState, undo: string): Promise<void> {
    const dataset = this.layout.dataset(id);
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

  /** Counts layers mounted at their path (left by an earlier process) as held once; drops empty stale mount points. */
  private async adoptMounts(): Promise<void> {
    const table = await readMountInfo();
    for (const name of await readdir(this.layout.graphDir)) {
      const path = this.layout.mountPath(name);
      const layer = this.layers.get(name);
      if (layer && findDatasetMount(table, this.layout.dataset(name), path)) this.refs.adopt(name, path, 1);
      else await rmdir(path).catch(() => undefined); // an empty mount point from a crash
    }
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
    this.assertOpen();
    await this.refs.withLock(id, async () => {
      if (this.layers.has(id)) {
        throw new CairnError('ERR_LAYER_EXISTS', `layer ${id} already exists; remove it first or pick another id`, { subject: id });
      }
      // Claim the id under the parent's lock, so a concurrent remove of the parent sees this child.
      await this.withLockOf(parentId, async () => {
        if (parentId !== null && !this.layers.get(parentId)?.committed) {
          throw new CairnError('ERR_PARENT_NOT_FOUND', `cannot create layer ${id}: parent layer ${parentId} does not exist`, { subject: parentId });
        }
        this.layers.set(id, { parent: parentId, kind, sealed: false, committed: false });
      });
      try {
        await this.createDataset(id, parentId, kind, quota);
        this.layers.get(id)!.committed = true;
      } catch (err) {
        this.layers.delete(id);
        throw createError(err, id, this.layout.dataset(id));
      }
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

  private withLockOf<T>(id: string | null, fn: () => Promise<T>): Promise<T> {
    return id === null ? fn() : this.refs.withLock(id, fn);
  }

  async exists(id: string): Promise<boolean> {
    assertValidId(id);
    return this.layers.get(id)?.committed === true;
  }

  async remove(id: string): Promise<void> {
    assertValidId(id);
    this.assertOpen();
    await this.refs.withLock(id, async () => {
      const layer = this.layers.get(id);
      if (!layer?.committed) return; // as moby: removing what is not there is not an error
      if (this.refs.isMounted(id)) {
        throw new CairnError('ERR_LAYER_IN_USE', `layer ${id} is mounted (${this.refs.count(id)} user(s)); put it before removing it`, { subject: id });
      }
      const children = this.childrenOf(id);
      if (children.length > 0) {
        throw new CairnError('ERR_LAYER_IN_USE', `layer ${id} has child layers (${children.slice(0, 5).join(', ')}${children.length > 5 ? ', …' : ''}); remove them first`, { subject: id });
      }
      const path = this.layout.mountPath(id);
      if (this.parked.has(id)) {
        await this.mounter.unmount(this.layout.dataset(id), path);
        this.parked.delete(id);
      }
      const dataset = this.layout.dataset(id);
      try {
        // -r takes the layer's own stray snapshots along; ZFS still refuses if a clone depends on one.
        await retryWhileBusy(() => this.commands.zfs('destroy', '-r', dataset));
      } catch (err) {
        if (!(err instanceof ZfsCommandError && err.notFound)) {
          throw new CairnError('ERR_LAYER_IN_USE', `cannot destroy dataset ${dataset} of layer ${id}: ${errorText(err)}`, { subject: id, cause: err });
        }
      }
      this.layers.delete(id);
      await rmdir(path).catch(() => undefined);
    });
  }

  async get(id: string, opts: GetOptions = {}): Promise<string> {
    assertValidId(id);
    refuseIdMappings('zfs', id, opts.idMappings);
    this.assertOpen();
    return this.refs.get(id, opts);
  }

  async put(id: string): Promise<void> {
    assertValidId(id);
    return this.refs.put(id);
  }

  private async mountLayer(id: string, opts: GetOptions): Promise<string> {
    const layer = this.committed(id);
    const path = this.layout.mountPath(id);
    if (this.parked.delete(id)) return path;
    try {
      await this.mounter.mount(this.layout.dataset(id), path, { readOnly: layer.sealed, ...(opts.mountLabel ? { mountLabel: opts.mountLabel } : {}) });
    } catch (err) {
      throw new CairnError('ERR_NOT_SUPPORTED', `cannot mount layer ${id} (${this.layout.dataset(id)}) at ${path}: ${errorText(err)}`, { subject: id, cause: err });
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
    const layer = this.committed(id);
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
        await this.refs.withLock(id, async () => {
          layer.sealed = true;
          if (this.refs.isMounted(id)) await makeReadOnly(this.layout.mountPath(id));
        });
      }
    } finally {
      // Only now is the apply done (a failed one leaves the layer as it always has). If this
      // fails the apply fails too: a later open would roll the layer back.
      await retryWhileBusy(() => this.commands.zfs('destroy', undo));
    }
    return bytes;
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
    this.committed(id);
    return { Dataset: this.layout.dataset(id), Mountpoint: this.layout.mountPath(id) };
  }

  async cleanup(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const errors = await this.refs.unmountAll();
    for (const id of [...this.parked]) {
      await this.mounter.unmount(this.layout.dataset(id), this.layout.mountPath(id)).then(() => this.parked.delete(id), (err: unknown) => errors.push(err));
    }
    await this.lock.release();
    if (errors.length > 0) {
      throw new CairnError('ERR_LAYER_IN_USE', `zfs cleanup could not unmount ${errors.length} layer(s): ${errorText(errors[0])}`, { cause: errors[0] });
    }
  }

  /** The parent each layer was created on (from the datasets' origins); for tests and tools. */
  parentOf(id: string): string | null {
    assertValidId(id);
    return this.committed(id).parent;
  }

  private committed(id: string): LayerState {
    const layer = this.layers.get(id);
    if (!layer?.committed) {
      throw new CairnError('ERR_LAYER_NOT_FOUND', `layer ${id} does not exist under ${this.layout.fsname}`, { subject: id });
    }
    return layer;
  }

  private childrenOf(id: string): string[] {
    return [...this.layers].filter(([, l]) => l.parent === id).map(([child]) => child);
  }

  private assertOpen(): void {
    if (this.closed) throw new CairnError('ERR_NOT_SUPPORTED', `the zfs driver on ${this.home} was cleaned up; open it again`, { subject: this.home });
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
