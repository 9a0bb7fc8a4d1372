import { randomInt } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readdir, rm, rmdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import {
  CairnError, KeyedMutex, MountRefs, openUnderHomeLock, assertValidId, detectBackingFs, normalizeParent,
  readMountInfo, refuseIdMappings,
} from '@cairnfs/core';
import { NaiveDiff } from '@cairnfs/archive';
import type { Change, CreateOptions, DriverSetup, GetOptions, HomeLock, StorageDriver, ApplyDiffOptions } from '@cairnfs/core';
import { major, minor } from '@cairnfs/sys';
import {
  METADATA_BLOCK, createDevice, devPath, isActive, isIdTaken, isNoSuchThin, libraryVersion, listDevices,
  poolMessage, poolStatus, removeDevice, resume, suspendIfActive, targetVersions, thinTable,
} from './dmsetup.js';
import { classify, run, udevRunning } from './exec.js';
import { growFs, mkfs, mountDevice, rootfsOf, unmountDevice } from './fsops.js';
import { Layout, devicePrefixFor } from './layout.js';
import { deviceSetRecord, layerRecord, transactionRecord } from './meta.js';
import type { DeviceSetMeta, LayerMeta, Transaction } from './meta.js';
import { humanSize, parseSize } from './options.js';
import type { DmOptions } from './options.js';
import { closePool, openPool } from './pool.js';
import type { Pool } from './pool.js';
import { NAME, kernelMissing } from './probe.js';

/** Thin device ids are 24 bits. */
const MAX_DEVICE_ID = 0xffffff;
const BASE = '.base';

/**
 * moby's devicemapper graphdriver: every layer is a thin snapshot of its parent's thin
 * device in one pool; the first layer snapshots a base device formatted once. Pool
 * changes run one at a time, each inside a transaction recorded on disk first, so a
 * crash half-way is rolled back on the next open and the pool leaks neither space nor
 * device ids.
 */
export class DeviceMapperDriver implements StorageDriver {
  readonly name = NAME;
  private readonly refs: MountRefs;
  private readonly naive: NaiveDiff;
  /** Serialises everything that changes the pool (messages, transaction ids, device ids). */
  private readonly poolLock = new KeyedMutex();
  private readonly layers = new Map<string, LayerMeta>();
  /** Image layers whose applyDiff is running: they mount read-write until it ends. */
  private readonly applying = new Set<string>();
  private transactionId = 0;
  private closed = false;

  private constructor(
    readonly home: string,
    private readonly layout: Layout,
    private readonly opts: DmOptions,
    private readonly lock: HomeLock,
    private readonly pool: Pool,
    private deviceSet: DeviceSetMeta,
  ) {
    this.refs = new MountRefs({ mount: (id, opts) => this.mountLayer(id, opts), unmount: (id) => this.unmountLayer(id) });
    this.naive = new NaiveDiff({ get: (id) => this.get(id), put: (id) => this.put(id), parentOf: async (id) => this.layers.get(id)?.parent ?? null });
  }

  static async open(ctx: DriverSetup<DmOptions>): Promise<DeviceMapperDriver> {
    const opts = ctx.settings;
    return openUnderHomeLock(ctx.home, { timeoutMs: ctx.lockTimeoutMs }, async (lock) => {
      await ensureKernel();
      const st = await stat(ctx.home);
      const layout = new Layout(ctx.home, devicePrefixFor(major(st.dev), minor(st.dev), st.ino));
      await mkdir(layout.metaDir, { recursive: true, mode: 0o700 });
      await mkdir(layout.mntDir, { recursive: true, mode: 0o700 });
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
      const driver = new DeviceMapperDriver(ctx.home, layout, opts, lock, pool, saved ?? { nextDeviceId: firstId, base: null });
      await driver.init();
      return driver;
    });
  }

  private async init(): Promise<void> {
    await this.deactivateLeftovers();
    this.transactionId = (await poolStatus(this.pool.name)).transactionId;
    await this.loadLayers();
    await this.rollbackOpenTransaction();
    await this.undoInterruptedApplies();
    await this.sweepStrays();
    await this.ensureBaseDevice();
    await this.retryDeferredDeletes();
  }

  // ---- open-time recovery ----

  /** Devices and mounts an earlier process left behind (it crashed, or was killed). */
  private async deactivateLeftovers(): Promise<void> {
    const prefix = `${this.layout.devicePrefix}-`;
    for (const m of await readMountInfo()) {
      if (m.mountPoint.startsWith(`${this.layout.mntDir}/`)) await unmountDevice(m.mountPoint);
    }
    for (const name of await listDevices(prefix)) {
      if (name !== this.pool.name) await removeDevice(name, false, true);
    }
  }

  private async loadLayers(): Promise<void> {
    for (const entry of await readdir(this.layout.metaDir)) {
      if (entry.startsWith('.')) continue;
      const meta = await layerRecord.read(this.layout.layerMeta(entry));
      if (meta) this.layers.set(entry, meta);
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
    if (this.transactionId < tx.id) {
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
    for (const [id, meta] of this.layers) {
      if (meta.undoDeviceId !== undefined) {
        const torn = meta.deviceId;
        meta.deviceId = meta.undoDeviceId;
        delete meta.undoDeviceId;
        meta.discardDeviceId = torn;
        await layerRecord.write(this.layout.layerMeta(id), meta);
      }
      if (meta.discardDeviceId !== undefined) await this.deleteSideDevice(id, meta, 'discardDeviceId');
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
      if (!entry.startsWith('.') && !this.layers.has(entry)) await rmdir(this.layout.mountPoint(entry)).catch(() => undefined);
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
  private async keepUndo(id: string, meta: LayerMeta): Promise<void> {
    await this.poolLock.run('pool', async () => {
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
    const tx: Transaction = { id: this.transactionId + 1, deviceId, subject, op };
    await transactionRecord.write(this.layout.transactionFile, tx);
    return tx;
  }

  private async closeTransaction(tx: Transaction): Promise<void> {
    try {
      await poolMessage(this.pool.name, `set_transaction_id ${this.transactionId} ${tx.id}`);
    } catch (err) {
      throw classify(err, `setting the pool's transaction id to ${tx.id}`);
    }
    this.transactionId = tx.id;
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
    await this.poolLock.run('pool', async () => {
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
    this.assertOpen();
    await this.poolLock.run('pool', async () => {
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
      const tx = await this.createWithFreshId(id, (deviceId) => this.withOriginLock(parent, async () => {
        // A snapshot of an active origin must be taken with the origin suspended, so
        // that no write is in flight while the pool shares its blocks. The origin's
        // get/put lock is held so a concurrent put cannot remove it in between.
        const active = await suspendIfActive(originName);
        try {
          await poolMessage(this.pool.name, `create_snap ${deviceId} ${origin.deviceId}`);
        } finally {
          if (active) await resume(originName);
        }
      }));
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
    });
  }

  private withOriginLock<T>(parent: string | null, fn: () => Promise<T>): Promise<T> {
    return parent === null ? fn() : this.refs.withLock(parent, fn);
  }

  private get fs(): DmOptions['fs'] {
    return this.deviceSet.base?.fs ?? this.opts.fs;
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
    return this.liveLayer(id) !== undefined;
  }

  async remove(id: string): Promise<void> {
    assertValidId(id);
    this.assertOpen();
    await this.refs.withLock(id, async () => {
      const meta = this.liveLayer(id);
      if (!meta) return;
      if (this.refs.isMounted(id)) {
        throw new CairnError('ERR_LAYER_IN_USE', `layer ${id} is mounted; put() it before removing it`, { subject: id });
      }
      const child = [...this.layers].find(([, m]) => m.parent === id && !m.deferredDeleted);
      if (child) {
        throw new CairnError('ERR_LAYER_IN_USE', `layer ${id} has a child layer (${child[0]}); remove the children first`, { subject: id });
      }
      await this.poolLock.run('pool', () => this.deleteDevice(id, meta));
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
    await rm(this.layout.mountPoint(id), { recursive: true, force: true });
  }

  async get(id: string, opts: GetOptions = {}): Promise<string> {
    assertValidId(id);
    refuseIdMappings('devicemapper', id, opts.idMappings);
    this.assertOpen();
    if (!this.liveLayer(id)) throw new CairnError('ERR_LAYER_NOT_FOUND', `layer ${id} does not exist`, { subject: id });
    return this.refs.get(id, opts);
  }

  async put(id: string): Promise<void> {
    assertValidId(id);
    await this.refs.put(id);
  }

  private async mountLayer(id: string, opts: GetOptions): Promise<string> {
    const meta = this.liveLayer(id);
    if (!meta) throw new CairnError('ERR_LAYER_NOT_FOUND', `layer ${id} does not exist`, { subject: id });
    const name = this.deviceName(id);
    if (!isActive(name)) await createDevice(name, thinTable(meta.size, this.pool.dev, meta.deviceId));
    const readOnly = meta.kind === 'ro' && meta.applied && !this.applying.has(id);
    try {
      await mountDevice(devPath(name), this.layout.mountPoint(id), this.fs, this.opts.mountOpt, readOnly, opts.mountLabel);
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
    const meta = this.liveLayer(id);
    if (!meta) throw new CairnError('ERR_LAYER_NOT_FOUND', `layer ${id} does not exist`, { subject: id });
    this.applying.add(id);
    try {
      // The apply writes into the layer's device in place: an undo snapshot taken first
      // lets open put the layer back if the process dies half-way (found by the kill -9
      // trials). It is deleted once the apply is done, with the layer marked applied in the
      // same metadata write. A failed apply leaves the layer as it is, as before.
      await this.keepUndo(id, meta);
      let bytes: number;
      try {
        bytes = await this.naive.applyDiff(id, parent, tar, opts);
      } catch (err) {
        await this.poolLock.run('pool', () => this.deleteSideDevice(id, meta, 'undoDeviceId')).catch(() => undefined);
        throw err;
      }
      await this.poolLock.run('pool', () => this.deleteSideDevice(id, meta, 'undoDeviceId', meta.kind === 'ro' ? { applied: true } : {}));
      return bytes;
    } finally {
      this.applying.delete(id);
    }
  }

  diffSize(id: string, parent?: string | null): Promise<number> {
    return this.naive.diffSize(id, parent);
  }

  async status(): Promise<Array<[string, string]>> {
    const s = await poolStatus(this.pool.name);
    const dataUsed = s.usedDataBlocks * this.pool.blockSize;
    const dataTotal = s.totalDataBlocks * this.pool.blockSize;
    const metaUsed = s.usedMetadataBlocks * METADATA_BLOCK;
    const metaTotal = s.totalMetadataBlocks * METADATA_BLOCK;
    const minFree = Math.floor(dataTotal * this.opts.minFreeSpacePercent / 100);
    let backing = 'unknown';
    try { backing = (await detectBackingFs(this.home)).name; } catch { /* keep unknown */ }
    const out: Array<[string, string]> = [
      ['Pool Name', this.pool.name],
      ['Pool Mode', this.pool.mode === 'loop-lvm' ? 'loop-lvm (loopback files: for testing only, not for production)' : this.pool.mode],
      ['Pool Blocksize', humanSize(this.pool.blockSize)],
      ['Base Device Size', humanSize(this.deviceSet.base?.size ?? this.opts.baseSize)],
      ['Backing Filesystem', this.fs === 'ext4' ? 'extfs' : 'xfs'],
      ['Home Filesystem', backing],
      ['Udev Sync Supported', String(udevRunning())],
    ];
    if (this.pool.loop) {
      out.push(['Data file', this.pool.loop.dataDev], ['Metadata file', this.pool.loop.metadataDev]);
    }
    out.push(
      ['Data Space Used', humanSize(dataUsed)],
      ['Data Space Total', humanSize(dataTotal)],
      ['Data Space Available', humanSize(dataTotal - dataUsed)],
      ['Metadata Space Used', humanSize(metaUsed)],
      ['Metadata Space Total', humanSize(metaTotal)],
      ['Metadata Space Available', humanSize(metaTotal - metaUsed)],
      ['Thin Pool Minimum Free Space', humanSize(minFree)],
      ['Deferred Removal Enabled', String(this.opts.deferredRemoval)],
      ['Deferred Deletion Enabled', String(this.opts.deferredDeletion)],
      ['Deferred Deleted Device Count', String([...this.layers.values()].filter((m) => m.deferredDeleted).length)],
    );
    if (this.pool.loop) {
      out.push(['Data loop file', this.pool.loop.dataFile], ['Metadata loop file', this.pool.loop.metadataFile]);
    }
    out.push(['Library Version', await libraryVersion()]);
    return out;
  }

  async metadata(id: string): Promise<Record<string, string>> {
    assertValidId(id);
    const meta = this.liveLayer(id);
    if (!meta) throw new CairnError('ERR_LAYER_NOT_FOUND', `layer ${id} does not exist`, { subject: id });
    return {
      DeviceId: String(meta.deviceId),
      DeviceSize: String(meta.size),
      DeviceName: devPath(this.deviceName(id)),
      TransactionId: String(meta.transactionId),
      MergedDir: rootfsOf(this.layout.mountPoint(id)),
    };
  }

  async cleanup(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      const errors = await this.refs.unmountAll();
      if (errors.length > 0) throw errors[0];
      for (const name of await listDevices(`${this.layout.devicePrefix}-`)) {
        if (name !== this.pool.name) await removeDevice(name, false, true);
      }
      await closePool(this.pool);
    } finally {
      await this.lock.release();
    }
  }

  private assertOpen(): void {
    if (this.closed) throw new CairnError('ERR_NOT_SUPPORTED', `the devicemapper driver at ${this.home} was cleaned up; open it again`, { subject: this.home });
  }
}

/** Loads the thin-pool target when the kernel has it as a module, and checks it is there. */
async function ensureKernel(): Promise<void> {
  const missing = kernelMissing();
  if (missing) throw new CairnError('ERR_NOT_SUPPORTED', missing);
  // Loaded already (the common case after the first open): skip the dmsetup round trip.
  if (existsSync('/sys/module/dm_thin_pool')) return;
  let targets = await targetVersions().catch(() => new Map<string, string>());
  if (!targets.has('thin-pool')) {
    await run('modprobe', ['dm_thin_pool'], 'kmod').catch(() => undefined);
    targets = await targetVersions();
  }
  if (!targets.has('thin-pool')) {
    throw new CairnError('ERR_NOT_SUPPORTED', 'device-mapper has no thin-pool target (modprobe dm_thin_pool failed); devicemapper needs CONFIG_DM_THIN_PROVISIONING');
  }
}
