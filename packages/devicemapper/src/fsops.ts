import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { constants, mount, umount2 } from '@cairnfs/sys';
import { CairnError, mountLabelOption } from '@cairnfs/core';
import { classify, run } from './exec.js';
import type { DmFs } from './options.js';

/** Formats a fresh thin device. ext4 as moby: no discard, tables initialised up front (no lazy-init thread writing into the pool later). */
export async function mkfs(dev: string, fs: DmFs, extra: readonly string[]): Promise<void> {
  try {
    if (fs === 'ext4') {
      await run('mkfs.ext4', ['-q', '-F', '-E', 'nodiscard,lazy_itable_init=0,lazy_journal_init=0', ...extra, dev], 'e2fsprogs');
    } else {
      await run('mkfs.xfs', ['-q', '-f', '-K', ...extra, dev], 'xfsprogs');
    }
  } catch (err) {
    throw classify(err, `formatting ${dev} as ${fs}`, dev);
  }
}

/** Mount data for a thin device. XFS snapshots share the origin's UUID, so they mount only with nouuid. */
export function mountData(fs: DmFs, extra: string, mountLabel?: string): string {
  const opts = fs === 'xfs' ? ['nouuid'] : [];
  if (extra) opts.push(extra);
  const context = mountLabelOption(mountLabel);
  if (context !== null) opts.push(context);
  return opts.join(',');
}

export async function mountDevice(dev: string, target: string, fs: DmFs, extra: string, readOnly: boolean, mountLabel?: string): Promise<void> {
  await mkdir(target, { recursive: true, mode: 0o700 });
  try {
    await mount(dev, target, fs, readOnly ? constants.MS_RDONLY : 0, mountData(fs, extra, mountLabel));
  } catch (err) {
    throw new CairnError('ERR_BACKEND_FAILED', `mounting ${dev} (${fs}) on ${target} failed: ${(err as Error).message}`, { subject: target, cause: err });
  }
}

export async function unmountDevice(target: string): Promise<void> {
  try {
    await umount2(target, 0);
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === 'EINVAL' || code === 'ENOENT') return; // not mounted
    if (code === 'EBUSY') {
      throw new CairnError('ERR_LAYER_IN_USE', `cannot unmount ${target}: it is busy (a process has files open there)`, { subject: target, cause: err });
    }
    throw err;
  }
}

/** Grows a mounted filesystem to fill its (just enlarged) device. */
export async function growFs(dev: string, mountPoint: string, fs: DmFs): Promise<void> {
  try {
    if (fs === 'ext4') await run('resize2fs', [dev], 'e2fsprogs');
    else await run('xfs_growfs', [mountPoint], 'xfsprogs');
  } catch (err) {
    throw classify(err, `growing the ${fs} filesystem on ${dev}`, dev);
  }
}

/** The directory inside each device's filesystem that layers see as their root. */
export function rootfsOf(mountPoint: string): string {
  return join(mountPoint, 'rootfs');
}
