import { readFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { errnoCode } from '@cairnfs/core';
import {
  btrfsQgroupDestroy, btrfsQgroupLimit, btrfsSetReadOnly, btrfsSubvolChildren, btrfsSubvolDestroy, btrfsSubvolId,
} from '@cairnfs/sys';

/**
 * Subvolume work the driver builds on, all through ioctls in @cairnfs/sys (no `btrfs`
 * process per layer: see the benchmark in test/bench.test.ts for the difference).
 */

/** BTRFS_FIRST_FREE_OBJECTID: the inode number of every subvolume's root directory. */
export const SUBVOLUME_ROOT_INO = 256;

/**
 * Destroys the subvolume `dir/name` and every subvolume nested in it (a container may
 * have run `btrfs subvolume create` inside its rootfs; SNAP_DESTROY refuses a subvolume
 * with nested ones, ENOTEMPTY). Children are found through the subvolume's root refs
 * (BTRFS_IOC_GET_SUBVOL_ROOTREF), which costs one ioctl per nested subvolume, instead of
 * walking the layer for directories with inode 256, which would read every directory of
 * a possibly huge rootfs to find usually nothing. The read-only flag is cleared first so
 * the children's directory entries can be removed. Returns the ids of every subvolume
 * destroyed (for their qgroups), deepest first.
 */
export async function destroySubvolumeTree(dir: string, name: string): Promise<number[]> {
  const path = join(dir, name);
  await btrfsSetReadOnly(path, false);
  const id = await btrfsSubvolId(path);
  const destroyed: number[] = [];
  for (const child of await btrfsSubvolChildren(path)) {
    destroyed.push(...await destroySubvolumeTree(join(path, dirname(child.path)), basename(child.path)));
  }
  await btrfsSubvolDestroy(dir, name);
  destroyed.push(id);
  return destroyed;
}

/** True when quotas (qgroups) are enabled on the btrfs filesystem with this UUID. */
export async function quotaEnabled(fsid: string): Promise<boolean> {
  try {
    return (await readFile(`/sys/fs/btrfs/${fsid}/qgroups/enabled`, 'utf8')).trim() === '1';
  } catch (err) {
    // The qgroups directory exists only while quotas are enabled.
    if (errnoCode(err) === 'ENOENT') return false;
    throw err;
  }
}

/** The max-referenced limit of a subvolume's qgroup from sysfs, or null when it has none or quotas are off. */
export async function qgroupLimit(fsid: string, subvolId: number): Promise<number | null> {
  try {
    const text = (await readFile(`/sys/fs/btrfs/${fsid}/qgroups/0_${subvolId}/max_referenced`, 'utf8')).trim();
    const value = Number(text);
    return Number.isSafeInteger(value) && value > 0 ? value : null;
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return null;
    throw err;
  }
}

/** Caps the referenced bytes of the subvolume at `path` (its level-0 qgroup). ENOTCONN when quotas are off. */
export async function limitSubvolume(path: string, bytes: number): Promise<void> {
  await btrfsQgroupLimit(path, await btrfsSubvolId(path), bytes);
}

/**
 * Destroys the level-0 qgroups of destroyed subvolumes, as moby does on remove. Returns
 * the ids the kernel refused with EBUSY: the subvolume is deleted but not yet cleaned
 * up by btrfs's cleaner thread. Recent kernels delete such a qgroup themselves once the
 * cleaner is done; for older ones the caller retries later. Missing qgroups (ENOENT)
 * and disabled quotas (ENOTCONN) are fine: there is nothing to destroy.
 */
export async function destroyQgroups(fsPath: string, ids: readonly number[]): Promise<number[]> {
  const busy: number[] = [];
  for (const id of ids) {
    try {
      await btrfsQgroupDestroy(fsPath, id);
    } catch (err) {
      const code = errnoCode(err);
      if (code === 'EBUSY') busy.push(id);
      else if (code !== 'ENOENT' && code !== 'ENOTCONN' && code !== 'EINVAL') throw err;
    }
  }
  return busy;
}
