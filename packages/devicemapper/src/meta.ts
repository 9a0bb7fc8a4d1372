import { randomBytes } from 'node:crypto';
import { open, readFile, rename, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { errnoCode, fsyncDir } from '@cairnfs/core';
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

export async function readJson<T>(path: string): Promise<T | null> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as T;
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return null;
    throw err;
  }
}

/** Write to a sibling, fsync, rename over, fsync the directory: readers see old or new, never half. */
export async function writeJson(path: string, value: unknown): Promise<void> {
  const tmp = join(dirname(path), `.tmp-${randomBytes(6).toString('hex')}`);
  const handle = await open(tmp, 'w', 0o600);
  try {
    await handle.writeFile(JSON.stringify(value, null, 1));
    await handle.sync();
  } finally {
    await handle.close();
  }
  await rename(tmp, path);
  await fsyncDir(dirname(path));
}

export async function removeFile(path: string): Promise<void> {
  await rm(path, { force: true });
  await fsyncDir(dirname(path));
}
