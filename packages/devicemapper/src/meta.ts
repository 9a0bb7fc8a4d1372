import { RecordFile, isValidId } from '@cairnfs/core';
import type { DmFs } from './options.js';

/** One layer's thin device, as moby's per-device metadata file. */
export interface LayerMeta {
  deviceId: number;
  /** Size of the thin device in bytes. */
  size: number;
  /** Pool transaction id of the create that made it. */
  transactionId: number;
  parent: string | null;
  /** 'ro' for create (read-only once applied), 'rw' for createReadWrite. */
  kind: 'ro' | 'rw';
  /** An image layer's applyDiff finished: it mounts read-only from now on. */
  applied: boolean;
  /** Delete was deferred because the device was busy; the layer no longer exists for callers. */
  deferredDeleted?: boolean;
  /**
   * A thin snapshot of the device taken before applyDiff wrote into it. Present while an
   * apply may be cut short: open then makes it the layer's device again (see discardDeviceId).
   */
  undoDeviceId?: number;
  /** A device this layer no longer uses and that still has to be deleted (a half-applied one). */
  discardDeviceId?: number;
}

/** Pool-wide state. */
export interface DeviceSetMeta {
  nextDeviceId: number;
  /** The pool's block size in bytes, fixed when the pool was made (absent in homes from before it was recorded). */
  blockSize?: number;
  base: { deviceId: number; size: number; fs: DmFs; transactionId: number } | null;
}

/** An operation that changes the pool, recorded before it touches the pool (moby's transaction-metadata). */
export interface Transaction {
  /** The pool transaction id this operation will set when it completes. */
  id: number;
  deviceId: number;
  /** The layer id, or '.base' for the base device. */
  subject: string;
  op: 'create' | 'delete';
}

const uint = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;
const optionalUint = (v: unknown): boolean => v === undefined || uint(v);

function checkLayer(raw: unknown): LayerMeta | string {
  const m = (raw ?? {}) as Partial<LayerMeta>;
  if (!uint(m.deviceId) || !uint(m.size) || !uint(m.transactionId)) return 'deviceId, size and transactionId must be non-negative integers';
  if (!(m.parent === null || isValidId(m.parent))) return 'parent is not a layer id';
  if (m.kind !== 'ro' && m.kind !== 'rw') return 'kind is neither ro nor rw';
  if (typeof m.applied !== 'boolean') return 'applied is not a boolean';
  if (!optionalUint(m.undoDeviceId) || !optionalUint(m.discardDeviceId)) return 'undoDeviceId/discardDeviceId must be device ids';
  if (m.deferredDeleted !== undefined && typeof m.deferredDeleted !== 'boolean') return 'deferredDeleted is not a boolean';
  return m as LayerMeta;
}

function checkDeviceSet(raw: unknown): DeviceSetMeta | string {
  const m = (raw ?? {}) as Partial<DeviceSetMeta>;
  if (!uint(m.nextDeviceId)) return 'nextDeviceId must be a non-negative integer';
  if (!optionalUint(m.blockSize)) return 'blockSize must be a non-negative integer';
  const b = m.base;
  if (b !== null && !(typeof b === 'object' && b !== undefined && uint(b.deviceId) && uint(b.size) && uint(b.transactionId) && (b.fs === 'ext4' || b.fs === 'xfs'))) {
    return 'base must be null or { deviceId, size, fs, transactionId }';
  }
  return m as DeviceSetMeta;
}

function checkTransaction(raw: unknown): Transaction | string {
  const m = (raw ?? {}) as Partial<Transaction>;
  if (!uint(m.id) || !uint(m.deviceId)) return 'id and deviceId must be non-negative integers';
  if (typeof m.subject !== 'string' || !(m.subject === '.base' || isValidId(m.subject))) return 'subject is neither a layer id nor .base';
  if (m.op !== 'create' && m.op !== 'delete') return 'op is neither create nor delete';
  return m as Transaction;
}

const REPAIR = 'restore it from a backup, or remove the devicemapper home and its pool to start over';

/** `metadata/<id>`: one layer's thin device. */
export const layerRecord = new RecordFile<LayerMeta>('devicemapper layer metadata', checkLayer, REPAIR);
/** `metadata/.deviceset`: pool-wide state. */
export const deviceSetRecord = new RecordFile<DeviceSetMeta>('devicemapper pool metadata', checkDeviceSet, REPAIR);
/** `metadata/.transaction`: the operation in flight, if any. */
export const transactionRecord = new RecordFile<Transaction>('devicemapper transaction record', checkTransaction, REPAIR);
