import { randomInt } from 'node:crypto';
import { mkdir, readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import {
  CairnError, OpenSessions, SharedMounts, SharedTable, StoreLocks, assertValidId, errnoCode, normalizeParent,
  readMountInfo, refuseIdMappings, removeMountPoint, layerNotFound,
} from '@cairnfs/core';
import { NaiveDiff } from '@cairnfs/archive';
import type { ApplyDiffOptions, Change, CreateOptions, DriverSetup, GetOptions, PutOptions, StorageDriver } from '@cairnfs/core';
import { major, minor } from '@cairnfs/sys';
import {
  createDevice, devPath, isActive, isIdTaken, isNoSuchThin, listDevices, makeNode,
  poolMessage, poolStatus, removeDevice, resume, suspendIfActive, thinTable,
} from './dmsetup.js';
import { classify } from './exec.js';
import { growFs, mkfs, mountDevice, rootfsOf, unmountDevice } from './fsops.js';
import { Layout, devicePrefixFor } from './layout.js';
import { deviceSetRecord, layerRecord, transactionRecord } from './meta.js';
import type { DeviceSetMeta, LayerMeta, Transaction } from './meta.js';
import { parseSize } from './options.js';
import type { DmOptions } from './options.js';
import { closePool, openPool } from './pool.js';
import type { Pool } from './pool.js';
import { NAME, ensureKernel } from './probe.js';
import { statusRows } from './status.js';

/** Thin device ids are 24 bits. */
const MAX_DEVICE_ID = 0xffffff;
const BASE = '.base';

/** What the store lock guards: the layer records, the pool-wide record, and the pool's transaction id (read when first needed). */
interface DmTable {
  layers: Map<string, LayerMeta>;
  deviceSet: DeviceSetMeta;
  transactionId: number | null;
}

/**
 * moby's devicemapper graphdriver: every layer is a thin snapshot of its parent's thin
 * device in one pool; the first layer snapshots a base device formatted once. Pool
 * changes run one at a time, each inside a transaction recorded on disk first, so a
 * crash half-way is rolled back on the next open and the pool leaks neither space nor
 * device ids.
 *
 * ## Several processes (core's StoreLocks, SharedMounts, OpenSessions)
 * Every change of the pool (messages, transaction ids, device ids, the base device) runs
 * under the store write lock, as moby's runs under its device-set lock; the records are
 * read again when another process wrote. create holds its layer's and its parent's
 * locks too (the origin is suspended for its snapshot); applyDiff holds its layer's lock
 * throughout, so its undo snapshot is never "restored" by another process's open.
 * Devices are activated for mounts shared through hold records, and an open deactivates
 * only devices nobody holds. The loop-lvm pool is set up under the write lock and torn
 * down at cleanup only by the last driver open on the home with nothing held.
 */
export class DeviceMapperDriver implements StorageDriver {
  readonly name = NAME;
  private readonly table: SharedTable<DmTable>;
  private readonly mounts: SharedMounts;
  private readonly sessions: OpenSessions;
  private readonly naive: NaiveDiff;
  /** The table as the locked section running now sees it (set by read() and write()). */
  private state!: DmTable;
  /** Image layers whose applyDiff is running here (under their lock): they mount read-write until it ends. */
  private readonly applying = new Set<string>();

  private constructor(
    readonly home: string,
    private readonly layout: Layout,
    private readonly opts: DmOptions,
    private readonly locks: StoreLocks,
    private readonly pool: Pool,
    firstDeviceId: number,
  ) {
    this.table = new SharedTable(locks, () => this.loadTable(firstDeviceId));
    this.mounts = new SharedMounts(home, locks, { mount: (id, opts) => this.mountLayer(id, opts), unmount: (id) => this.unmountLayer(id) });
    this.sessions = new OpenSessions(home);
    this.naive = new NaiveDiff({
      get: (id) => this.get(id),
      put: (id) => this.put(id),
      parentOf: (id) => this.read(`read the parent of layer ${id}`, () => this.layers.get(id)?.parent ?? null),
    });
  }

  private get layers(): Map<string, LayerMeta> {
    return this.state.layers;
  }

  private get deviceSet(): DeviceSetMeta {
    return this.state.deviceSet;
  }

  private read<T>(op: string, fn: () => Promise<T> | T): Promise<T> {
    return this.table.read(op, (t) => { this.state = t; return fn(); });
  }

  private write<T>(op: string, fn: () => Promise<T> | T): Promise<T> {
    return this.table.write(op, (t) => { this.state = t; return fn(); });
  }

  /** The pool's transaction id, asked of the kernel once per table load (the caller holds the write lock). */
  private async transactionId(): Promise<number> {
    this.state.transactionId ??= (await poolStatus(this.pool.name)).transactionId;
    return this.state.transactionId;
  }

  private async loadTable(firstDeviceId: number): Promise<DmTable> {
    const layers = new Map<string, LayerMeta>();
    for (const entry of await readdir(this.layout.metaDir)) {
      if (entry.startsWith('.')) continue;
      const meta = await layerRecord.read(this.layout.layerMeta(entry));
      if (meta) layers.set(entry, meta);
    }
    const deviceSet = (await deviceSetRecord.read(this.layout.deviceSetFile)) ?? { nextDeviceId: firstDeviceId, base: null };
    return { layers, deviceSet, transactionId: null };
  }

  /**
   * Sets up (or finds) the pool and repairs what dead processes left, under the store
   * write lock; holds no lock when it returns.
   */
  static async open(ctx: DriverSetup<DmOptions>): Promise<DeviceMapperDriver> {
    const opts = ctx.settings;
    await ensureKernel();
    await mkdir(ctx.home, { recursive: true, mode: 0o700 });
    const st = await stat(ctx.home);
    const layout = new Layout(ctx.home, devicePrefixFor(major(st.dev), minor(st.dev), st.ino));
    await mkdir(layout.metaDir, { recursive: true, mode: 0o700 });
    await mkdir(layout.mntDir, { recursive: true, mode: 0o700 });
    const locks = new StoreLocks(ctx.home, { timeoutMs: ctx.lockTimeoutMs, what: `devicemapper pool of ${ctx.home}` });
    return locks.write('open the devicemapper pool', async () => {
      const saved = await deviceSetRecord.read(layout.deviceSetFile);
      const blockSize = saved?.blockSize ?? opts.blockSize;
      const pool = await openPool(opts, layout, blockSize);
      if (pool.mode === 'loop-lvm') {
        process.emitWarning(`devicemapper at ${ctx.home} uses loop-lvm (sparse files on loop devices): for testing only; use dm.thinpooldev or dm.directlvm_device in production`,
          { code: 'CAIRN_DM_LOOP_LVM' });
      }
      // A fresh home on a pool it does not own (thinpooldev, direct-lvm re-used) may share
      // the pool with other homes: start at a random id so that allocation rarely has to
      // step over ids that others hold (each step is a refused pool message).
      const firstId = pool.mode === 'loop-lvm' ? 1 : 1 + randomInt(MAX_DEVICE_ID - 4096);
      const driver = new DeviceMapperDriver(ctx.home, layout, opts, locks, pool, firstId);
      await driver.write('open the devicemapper pool', () => driver.init());
      return driver;
    });
  }

  /** Open-time repair, under the store write lock: only what no live process owns. */
  private async init(): Promise<void> {
    await this.sessions.join();
    await this.deactivateLeftovers();
    await this.rollbackOpenTransaction();
    await this.undoInterruptedApplies();
    await this.sweepStrays();
    await this.ensureBaseDevice();
    await this.retryDeferredDeletes();
  }

  // ---- open-time recovery ----

  /**
   * Mounts and devices dead processes left behind: holds of dead processes are dropped
   * (unmounting what then has none), and a layer's mount or device nobody holds is taken
   * down, under that layer's lock (a free one: a live get may be between activating the
   * device and mounting it). The base device is only ever active under the write lock,
   * which we hold: any left is a dead process's.
   */
  private async deactivateLeftovers(): Promise<void> {
    const mounted = (await readMountInfo()).filter((m) => m.mountPoint.startsWith(`${this.layout.mntDir}/`))
      .map((m) => ({ id: m.mountPoint.slice(this.layout.mntDir.length + 1).split('/')[0]!, path: m.mountPoint }));
    await this.mounts.sweep(mounted.filter((m) => this.layers.has(m.id)));
    const unheld = async (id: string, undo: () => Promise<void>) => {
      await this.locks.tryLayer(id, `take down what is left of layer ${id}`, async () => {
        if ((await this.mounts.count(id)) === 0) await undo();
      });
    };
    for (const m of (await readMountInfo()).filter((x) => x.mountPoint.startsWith(`${this.layout.mntDir}/`))) {
      const id = m.mountPoint.slice(this.layout.mntDir.length + 1).split('/')[0]!;
      if (this.layers.has(id)) await unheld(id, () => unmountDevice(m.mountPoint));
      else await unmountDevice(m.mountPoint);
    }
    const byName = new Map([...this.layers.keys()].map((id) => [this.layout.deviceName(id), id]));
    for (const name of await listDevices(`${this.layout.devicePrefix}-`)) {
      if (name === this.pool.name) continue;
      const id = byName.get(name);
      if (id === undefined) await removeDevice(name, false, true);
      else await unheld(id, () => removeDevice(name, false, true));
    }
  }

  /**
   * A transaction file means a create or delete did not finish. If the pool already
   * carries its transaction id, the pool change and the metadata were both done and only
   * the file remained; otherwise delete the device and its metadata, which undoes a
   * create and completes a delete.
   */
  private async rollbackOpenTransaction(): Promise<void> {
    const tx = await transactionRecord.read(this.layout.transactionFile);
    if (!tx) return;
    if ((await this.transactionId()) < tx.id) {
      try {
        await poolMessage(this.pool.name, `delete ${tx.deviceId}`);
      } catch (err) {
        if (!isNoSuchThin(err)) throw classify(err, `rolling back transaction ${tx.id} (device ${tx.deviceId})`);
      }
      if (tx.subject === BASE) {
        if (this.deviceSet.base?.deviceId === tx.deviceId) {
          this.deviceSet.base = null;
          await this.saveDeviceSet();
        }
      } else if (this.layers.get(tx.subject)?.deviceId === tx.deviceId) {
        this.layers.delete(tx.subject);
        await layerRecord.remove(this.layout.layerMeta(tx.subject));
      } else {
        // The device was a layer's undo snapshot or a device it was discarding: now gone.
        const meta = this.layers.get(tx.subject);
        if (meta && (meta.undoDeviceId === tx.deviceId || meta.discardDeviceId === tx.deviceId)) {
          if (meta.undoDeviceId === tx.deviceId) delete meta.undoDeviceId;
          if (meta.discardDeviceId === tx.deviceId) delete meta.discardDeviceId;
          await layerRecord.write(this.layout.layerMeta(tx.subject), meta);
        }
      }
    }
    await transactionRecord.remove(this.layout.transactionFile);
  }

  /**
   * A layer that still names an undo snapshot had its applyDiff cut short (a kill, a power
   * loss): its device may hold part of the tar. The snapshot, taken just before the apply,
   * becomes the layer's device again and the half-applied one is deleted, so the layer is
   * back as it was before applyDiff. One metadata write switches the two, so a kill in
   * between leaves either the old state or a device marked for discarding.
   */
  private async undoInterruptedApplies(): Promise<void> {
    for (const [id, meta] of [...this.layers]) {
      if (meta.undoDeviceId === undefined && meta.discardDeviceId === undefined) continue;
      // A free lock: the apply that took the snapshot is gone (a live one holds it).
      await this.locks.tryLayer(id, `roll back the apply of layer ${id}`, async () => {
        if (meta.undoDeviceId !== undefined) {
          const torn = meta.deviceId;
          meta.deviceId = meta.undoDeviceId;
          delete meta.undoDeviceId;
          meta.discardDeviceId = torn;
          await layerRecord.write(this.layout.layerMeta(id), meta);
        }
        if (meta.discardDeviceId !== undefined) await this.deleteSideDevice(id, meta, 'discardDeviceId');
      });
    }
  }

  /**
   * What a kill between two steps leaves that no layer owns: a metadata file half written
   * (writeFileAtomic's `.<name>.tmp`), the empty mount point of a layer removed or never finished.
   * Runs after deactivateLeftovers, so nothing is mounted there any more.
   */
  private async sweepStrays(): Promise<void> {
    for (const entry of await readdir(this.layout.metaDir)) {
      if (entry.startsWith('.') && entry.endsWith('.tmp')) await rm(join(this.layout.metaDir, entry), { force: true });
    }
    for (const entry of await readdir(this.layout.mntDir)) {
      if (!entry.startsWith('.') && !this.layers.has(entry)) await removeMountPoint(this.layout.mountPoint(entry));
    }
  }

  /**
   * Deletes a layer's undo snapshot or discarded device inside a transaction and forgets
   * it in the layer's metadata (with `extra` changes, written in the same step). The
   * caller holds the pool lock (or is open()).
   */
  private async deleteSideDevice(id: string, meta: LayerMeta, field: 'undoDeviceId' | 'discardDeviceId', extra: Partial<LayerMeta> = {}): Promise<void> {
    const deviceId = meta[field];
    if (deviceId === undefined) return;
    const tx = await this.openTransaction(id, deviceId, 'delete');
    try {
      await poolMessage(this.pool.name, `delete ${deviceId}`);
    } catch (err) {
      if (!isNoSuchThin(err)) {
        await transactionRecord.remove(this.layout.transactionFile);
        throw classify(err, `deleting thin device ${deviceId} (no longer used by layer ${id})`, id);
      }
    }
    delete meta[field];
    Object.assign(meta, extra);
    await layerRecord.write(this.layout.layerMeta(id), meta);
    await this.closeTransaction(tx);
  }

  /**
   * Snapshots a layer's device before applyDiff writes into it (see undoInterruptedApplies).
   * An active device is suspended for the snapshot, as for create.
   */
  private async keepUndo(id: string): Promise<void> {
    await this.write(`snapshot layer ${id} before its apply`, async () => {
      const meta = this.current(id);
      const name = this.deviceName(id);
      const tx = await this.createWithFreshId(id, async (undoId) => {
        const active = await suspendIfActive(name);
        try {
          await poolMessage(this.pool.name, `create_snap ${undoId} ${meta.deviceId}`);
        } finally {
          if (active) await resume(name);
        }
      });
      try {
        meta.undoDeviceId = tx.deviceId;
        await layerRecord.write(this.layout.layerMeta(id), meta);
        await this.saveDeviceSet();
      } catch (err) {
        delete meta.undoDeviceId;
        await poolMessage(this.pool.name, `delete ${tx.deviceId}`).catch(() => undefined);
        await transactionRecord.remove(this.layout.transactionFile).catch(() => undefined);
        throw err;
      }
      await this.closeTransaction(tx);
    });
  }

  private async retryDeferredDeletes(): Promise<void> {
    for (const [id, meta] of [...this.layers]) {
      if (meta.deferredDeleted) await this.deleteDevice(id, meta).catch(() => undefined);
    }
  }

  // ---- transactions and device ids ----

  private async saveDeviceSet(): Promise<void> {
    await deviceSetRecord.write(this.layout.deviceSetFile, { ...this.deviceSet, blockSize: this.pool.blockSize });
  }

  private async openTransaction(subject: string, deviceId: number, op: Transaction['op']): Promise<Transaction> {
    const tx: Transaction = { id: (await this.transactionId()) + 1, deviceId, subject, op };
    await transactionRecord.write(this.layout.transactionFile, tx);
    return tx;
  }

  private async closeTransaction(tx: Transaction): Promise<void> {
    try {
      await poolMessage(this.pool.name, `set_transaction_id ${await this.transactionId()} ${tx.id}`);
    } catch (err) {
      throw classify(err, `setting the pool's transaction id to ${tx.id}`);
    }
    this.state.transactionId = tx.id;
    await transactionRecord.remove(this.layout.transactionFile);
  }

  /**
   * Runs `make(deviceId)` (a create_thin or create_snap) with the next free device id
   * inside an open transaction; an id the pool already uses (left by another tool) is
   * skipped, as moby does. Returns the transaction, still open.
   */
  private async createWithFreshId(subject: string, make: (deviceId: number) => Promise<void>): Promise<Transaction> {
    let deviceId = this.deviceSet.nextDeviceId;
    for (let attempt = 0; attempt < 4096; attempt++) {
      const tx = await this.openTransaction(subject, deviceId, 'create');
      try {
        await make(deviceId);
        this.deviceSet.nextDeviceId = deviceId >= MAX_DEVICE_ID ? 1 : deviceId + 1;
        return tx;
      } catch (err) {
        if (!isIdTaken(err)) {
          await transactionRecord.remove(this.layout.transactionFile);
          throw classify(err, `creating thin device ${deviceId} for ${subject}`, subject);
        }
        deviceId = deviceId >= MAX_DEVICE_ID ? 1 : deviceId + 1;
      }
    }
    throw new CairnError('ERR_NO_SPACE', 'no free thin device id found in the pool', { subject });
  }

  /** Undoes a create whose transaction is still open (the caller's error is rethrown). */
  private async abortCreate(tx: Transaction): Promise<void> {
    await removeDevice(this.deviceName(tx.subject)).catch(() => undefined);
    await poolMessage(this.pool.name, `delete ${tx.deviceId}`).catch(() => undefined);
    await transactionRecord.remove(this.layout.transactionFile).catch(() => undefined);
  }

  // ---- the base device ----

  private deviceName(id: string): string {
    return id === BASE ? this.layout.baseName : this.layout.deviceName(id);
  }

  private async ensureBaseDevice(): Promise<void> {
    const base = this.deviceSet.base;
    if (base) {
      if (this.opts.fsSet && this.opts.fs !== base.fs) {
        throw new CairnError('ERR_INVALID_OPTION',
          `dm.fs=${this.opts.fs}, but the base device of ${this.home} was formatted ${base.fs}; the filesystem cannot change once layers exist`, { subject: 'dm.fs' });
      }
      if (this.opts.baseSizeSet && this.opts.baseSize < base.size) {
        throw new CairnError('ERR_INVALID_OPTION',
          `dm.basesize=${this.opts.baseSize} is smaller than the existing base device (${base.size} bytes); it can only grow`, { subject: 'dm.basesize' });
      }
      if (this.opts.baseSizeSet && this.opts.baseSize > base.size) await this.growBase(this.opts.baseSize);
      return;
    }
    await this.write('create the base device', async () => {
      const size = this.opts.baseSize;
      const tx = await this.createWithFreshId(BASE, (id) => poolMessage(this.pool.name, `create_thin ${id}`));
      const name = this.layout.baseName;
      const mnt = this.layout.mountPoint(BASE);
      try {
        await createDevice(name, thinTable(size, this.pool.dev, tx.deviceId));
        await mkfs(devPath(name), this.opts.fs, this.opts.mkfsArgs);
        await mountDevice(devPath(name), mnt, this.opts.fs, this.opts.mountOpt, false);
        try {
          await mkdir(rootfsOf(mnt), { mode: 0o755 });
        } finally {
          await unmountDevice(mnt);
        }
        await removeDevice(name);
        this.deviceSet.base = { deviceId: tx.deviceId, size, fs: this.opts.fs, transactionId: tx.id };
        await this.saveDeviceSet();
      } catch (err) {
        await this.abortCreate(tx);
        throw err;
      }
      await this.closeTransaction(tx);
    });
  }

  private async growBase(size: number): Promise<void> {
    const base = this.deviceSet.base!;
    await this.growDevice(BASE, base.deviceId, size, base.fs);
    base.size = size;
    await this.saveDeviceSet();
  }

  /** Activates a thin device at a larger size and grows its filesystem to match. */
  private async growDevice(subject: string, deviceId: number, size: number, fs: DmOptions['fs']): Promise<void> {
    const name = this.deviceName(subject);
    const mnt = this.layout.mountPoint(subject);
    await createDevice(name, thinTable(size, this.pool.dev, deviceId));
    try {
      await mountDevice(devPath(name), mnt, fs, this.opts.mountOpt, false);
      try {
        await growFs(devPath(name), mnt, fs);
      } finally {
        await unmountDevice(mnt);
      }
    } finally {
      await removeDevice(name);
    }
  }

  // ---- StorageDriver ----

  create(id: string, parent?: string | null, opts?: CreateOptions): Promise<void> {
    return this.createLayer(id, parent, opts, 'ro');
  }

  createReadWrite(id: string, parent?: string | null, opts?: CreateOptions): Promise<void> {
    return this.createLayer(id, parent, opts, 'rw');
  }

  private async createLayer(id: string, parentArg: string | null | undefined, opts: CreateOptions | undefined, kind: LayerMeta['kind']): Promise<void> {
    assertValidId(id);
    const parent = normalizeParent(parentArg);
    if (parent !== null) assertValidId(parent, 'parent id');
    let requested: number | null = null;
    for (const [key, value] of Object.entries(opts?.storageOpt ?? {})) {
      if (key.toLowerCase() !== 'size') {
        throw new CairnError('ERR_INVALID_OPTION', `devicemapper does not know storage option ${key}; it takes only size`, { subject: key });
      }
      requested = parseSize(value, 'size');
    }
    // The parent's lock: its device is suspended for the snapshot, and it must not go or change meanwhile.
    await this.locks.layer(parent === null ? [id] : [id, parent], `create layer ${id}`, () => this.write(`create layer ${id}`, async () => {
      if (this.layers.has(id)) {
        throw new CairnError('ERR_LAYER_EXISTS', `layer ${id} already exists`, { subject: id });
      }
      const origin = parent === null ? this.deviceSet.base! : this.liveLayer(parent);
      if (!origin) throw new CairnError('ERR_PARENT_NOT_FOUND', `parent layer ${parent} does not exist`, { subject: parent ?? undefined });
      if (requested !== null && requested < origin.size) {
        throw new CairnError('ERR_INVALID_OPTION',
          `size ${requested} is smaller than ${origin.size} bytes, the size of ${parent ?? 'the base device'}; a thin snapshot can grow, never shrink (raise dm.basesize for bigger layers, or ask for at least ${origin.size})`,
          { subject: id });
      }
      await this.assertFreeSpace(id);
      const originSubject = parent ?? BASE;
      const originName = this.deviceName(originSubject);
      const tx = await this.createWithFreshId(id, async (deviceId) => {
        // A snapshot of an active origin must be taken with the origin suspended, so
        // that no write is in flight while the pool shares its blocks. The origin's
        // layer lock is held, so no put (of any process) can remove it in between.
        const active = await suspendIfActive(originName);
        try {
          await poolMessage(this.pool.name, `create_snap ${deviceId} ${origin.deviceId}`);
        } finally {
          if (active) await resume(originName);
        }
      });
      const size = Math.max(origin.size, requested ?? 0);
      const meta: LayerMeta = { deviceId: tx.deviceId, size, transactionId: tx.id, parent, kind, applied: false };
      try {
        if (size > origin.size) await this.growDevice(id, tx.deviceId, size, this.fs);
        await layerRecord.write(this.layout.layerMeta(id), meta);
        this.layers.set(id, meta);
        await this.saveDeviceSet();
      } catch (err) {
        this.layers.delete(id);
        await layerRecord.remove(this.layout.layerMeta(id)).catch(() => undefined);
        await this.abortCreate(tx);
        throw err;
      }
      await this.closeTransaction(tx);
    }));
  }

  private get fs(): DmOptions['fs'] {
    return this.deviceSet.base?.fs ?? this.opts.fs;
  }

  /** The layer's record in the table as the running locked section sees it; ERR_LAYER_NOT_FOUND if gone. */
  private current(id: string): LayerMeta {
    const meta = this.liveLayer(id);
    if (!meta) throw layerNotFound(id);
    return meta;
  }

  private liveLayer(id: string): LayerMeta | undefined {
    const meta = this.layers.get(id);
    return meta && !meta.deferredDeleted ? meta : undefined;
  }

  /** moby's dm.min_free_space: refuse a create that would leave less than that share of the pool free. */
  private async assertFreeSpace(id: string): Promise<void> {
    if (this.opts.minFreeSpacePercent === 0) return;
    const s = await poolStatus(this.pool.name);
    const dataFree = (s.totalDataBlocks - s.usedDataBlocks) / s.totalDataBlocks * 100;
    const metaFree = (s.totalMetadataBlocks - s.usedMetadataBlocks) / s.totalMetadataBlocks * 100;
    if (dataFree < this.opts.minFreeSpacePercent || metaFree < this.opts.minFreeSpacePercent) {
      throw new CairnError('ERR_NO_SPACE',
        `thin pool ${this.pool.name} has ${dataFree.toFixed(1)}% data and ${metaFree.toFixed(1)}% metadata space free, below dm.min_free_space=${this.opts.minFreeSpacePercent}%; remove layers or grow the pool`,
        { subject: id });
    }
  }

  async exists(id: string): Promise<boolean> {
    assertValidId(id);
    return this.read(`look up layer ${id}`, () => this.liveLayer(id) !== undefined);
  }

  async remove(id: string): Promise<void> {
    assertValidId(id);
    await this.locks.layer(id, `remove layer ${id}`, async () => {
      await this.mounts.assertUnheld(id, 'remove');
      const removed = await this.write(`remove layer ${id}`, async () => {
        const meta = this.liveLayer(id);
        if (!meta) return false;
        const child = [...this.layers].find(([, m]) => m.parent === id && !m.deferredDeleted);
        if (child) {
          throw new CairnError('ERR_LAYER_IN_USE', `layer ${id} has a child layer (${child[0]}); remove the children first`, { subject: id });
        }
        await this.deleteDevice(id, meta);
        return true;
      });
      if (!removed) return;
      await this.mounts.forget(id);
      await this.locks.forgetLayer(id);
    });
  }

  /**
   * Deletes a layer's thin device inside a transaction, then its metadata. With
   * dm.use_deferred_deletion a busy device is marked deleted (gone for callers) and
   * retried at the next open, as moby does.
   */
  private async deleteDevice(id: string, meta: LayerMeta): Promise<void> {
    await this.deleteSideDevice(id, meta, 'undoDeviceId');
    await this.deleteSideDevice(id, meta, 'discardDeviceId');
    await removeDevice(this.deviceName(id), this.opts.deferredRemoval);
    const tx = await this.openTransaction(id, meta.deviceId, 'delete');
    try {
      await poolMessage(this.pool.name, `delete ${meta.deviceId}`);
    } catch (err) {
      if (!isNoSuchThin(err)) {
        const classified = classify(err, `deleting thin device ${meta.deviceId} of layer ${id}`, id);
        await transactionRecord.remove(this.layout.transactionFile);
        if (this.opts.deferredDeletion && (classified as CairnError).code === 'ERR_LAYER_IN_USE') {
          meta.deferredDeleted = true;
          await layerRecord.write(this.layout.layerMeta(id), meta);
          return;
        }
        throw classified;
      }
    }
    await layerRecord.remove(this.layout.layerMeta(id));
    this.layers.delete(id);
    await this.closeTransaction(tx);
    await removeMountPoint(this.layout.mountPoint(id));
  }

  async get(id: string, opts: GetOptions = {}): Promise<string> {
    assertValidId(id);
    refuseIdMappings('devicemapper', id, opts.idMappings);
    return this.mounts.get(id, opts);
  }

  async put(id: string, opts: PutOptions = {}): Promise<void> {
    assertValidId(id);
    await this.mounts.put(id, opts);
  }

  /** Hold count of a layer's mount, every process counted (for tests and diagnostics). */
  mountCount(id: string): Promise<number> {
    assertValidId(id);
    return this.mounts.count(id);
  }

  /** Activates and mounts the layer's device (under the layer's lock, see SharedMounts). */
  private async mountLayer(id: string, opts: GetOptions): Promise<string> {
    const { meta, fs } = await this.read(`mount layer ${id}`, () => ({ meta: this.liveLayer(id), fs: this.fs }));
    if (!meta) throw layerNotFound(id);
    const name = this.deviceName(id);
    const table = thinTable(meta.size, this.pool.dev, meta.deviceId);
    if (!isActive(name)) await createDevice(name, table);
    const readOnly = meta.kind === 'ro' && meta.applied && !this.applying.has(id);
    const mountIt = () => mountDevice(devPath(name), this.layout.mountPoint(id), fs, this.opts.mountOpt, readOnly, opts.mountLabel);
    try {
      try {
        await mountIt();
      } catch (err) {
        // ENXIO: a /dev/mapper node without its device (a process killed inside a dmsetup
        // remove leaves one, and there is no udev to tidy it): mknodes drops it, then the
        // device is made for real (found by the kill trials with several processes).
        if (errnoCode((err as { cause?: unknown }).cause) !== 'ENXIO') throw err;
        await makeNode(name).catch(() => rm(devPath(name), { force: true }));
        if (!isActive(name)) await createDevice(name, table);
        await mountIt();
      }
    } catch (err) {
      await removeDevice(name).catch(() => undefined);
      throw err;
    }
    return rootfsOf(this.layout.mountPoint(id));
  }

  private async unmountLayer(id: string): Promise<void> {
    await unmountDevice(this.layout.mountPoint(id));
    await removeDevice(this.deviceName(id), this.opts.deferredRemoval);
  }

  diff(id: string, parent?: string | null): Promise<Readable> {
    return this.naive.diff(id, parent);
  }

  changes(id: string, parent?: string | null): Promise<Change[]> {
    return this.naive.changes(id, parent);
  }

  async applyDiff(id: string, parent: string | null | undefined, tar: Readable | AsyncIterable<Uint8Array>, opts: ApplyDiffOptions = {}): Promise<number> {
    assertValidId(id);
    return this.locks.layer(id, `apply a diff to layer ${id}`, () => this.applyLocked(id, parent, tar, opts));
  }

  private async applyLocked(id: string, parent: string | null | undefined, tar: Readable | AsyncIterable<Uint8Array>, opts: ApplyDiffOptions): Promise<number> {
    await this.read(`apply a diff to layer ${id}`, () => this.current(id));
    this.applying.add(id);
    try {
      // The apply writes into the layer's device in place: an undo snapshot taken first
      // lets open put the layer back if the process dies half-way (found by the kill -9
      // trials). It is deleted once the apply is done, with the layer marked applied in the
      // same metadata write. A failed apply leaves the layer as it is, as before.
      await this.keepUndo(id);
      let bytes: number;
      try {
        bytes = await this.naive.applyDiff(id, parent, tar, opts);
      } catch (err) {
        await this.write(`drop the undo snapshot of layer ${id}`, () => this.deleteSideDevice(id, this.current(id), 'undoDeviceId')).catch(() => undefined);
        throw err;
      }
      // The record as the table has it now (it may have been read again since the snapshot).
      await this.write(`finish the apply of layer ${id}`, () => {
        const meta = this.current(id);
        return this.deleteSideDevice(id, meta, 'undoDeviceId', meta.kind === 'ro' ? { applied: true } : {});
      });
      return bytes;
    } finally {
      this.applying.delete(id);
    }
  }

  diffSize(id: string, parent?: string | null): Promise<number> {
    return this.naive.diffSize(id, parent);
  }

  async status(): Promise<Array<[string, string]>> {
    return this.read('report status', () => this.statusLocked());
  }

  private async statusLocked(): Promise<Array<[string, string]>> {
    const deferredDeleted = [...this.layers.values()].filter((m) => m.deferredDeleted).length;
    return statusRows(this.home, this.pool, this.opts, this.deviceSet.base?.size ?? this.opts.baseSize, this.fs, deferredDeleted);
  }

  async metadata(id: string): Promise<Record<string, string>> {
    assertValidId(id);
    const meta = await this.read(`read the metadata of layer ${id}`, () => this.liveLayer(id));
    if (!meta) throw layerNotFound(id);
    return {
      DeviceId: String(meta.deviceId),
      DeviceSize: String(meta.size),
      DeviceName: devPath(this.deviceName(id)),
      TransactionId: String(meta.transactionId),
      MergedDir: rootfsOf(this.layout.mountPoint(id)),
    };
  }

  /**
   * Drops this driver's holds (unmounting and deactivating what nobody else holds). The
   * last driver open on the home, with nothing held by anyone (`cairn mount`s included),
   * also deactivates what is left and, for loop-lvm, the pool and its loop devices.
   * Holds no lock afterwards.
   */
  async cleanup(): Promise<void> {
    try {
      const errors = await this.mounts.releaseAll();
      if (errors.length > 0) throw errors[0];
      await this.write('close the devicemapper pool', async () => {
        await this.sessions.leave();
        const mounted = (await readMountInfo()).filter((m) => m.mountPoint.startsWith(`${this.layout.mntDir}/`))
          .map((m) => m.mountPoint.slice(this.layout.mntDir.length + 1).split('/')[0]!);
        if ((await this.sessions.others()) > 0 || await this.mounts.anyHeld(mounted)) return;
        for (const name of await listDevices(`${this.layout.devicePrefix}-`)) {
          if (name !== this.pool.name) await removeDevice(name, false, true);
        }
        await closePool(this.pool);
      });
    } finally {
      await this.locks.close();
    }
  }
}
