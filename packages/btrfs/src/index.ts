import { readdir } from 'node:fs/promises';
import { CairnError, detectBackingFs, errnoCode, isValidId } from '@cairnfs/core';
import type { DriverContext, DriverFactory, ProbeResult, StorageDriver } from '@cairnfs/core';
import { BtrfsDriver, incompatible } from './driver.js';
import { BtrfsLayout } from './layout.js';
import { parseDriverOptions } from './options.js';

export { BtrfsDriver, type BtrfsOpenOptions } from './driver.js';
export { BtrfsLayout } from './layout.js';
export type { LayerMeta } from './meta.js';
export type { BtrfsOptions } from './options.js';

const PRIORITY = 2;

/**
 * The btrfs driver as the registry sees it: priority 2 (after overlay2, as moby), and
 * auto-selected only when the root is on btrfs. It needs no btrfs-progs: every
 * subvolume and qgroup operation is an ioctl. What it does need is root
 * (CAP_SYS_ADMIN): deleting subvolumes and setting qgroup limits are privileged.
 */
export const btrfsDriver: DriverFactory = {
  name: 'btrfs',
  priority: PRIORITY,
  requiresOwnFilesystem: true,

  async probe(ctx: DriverContext): Promise<ProbeResult> {
    const backingFs = (await detectBackingFs(ctx.home)).name;
    if (backingFs !== 'btrfs') {
      return { name: 'btrfs', priority: PRIORITY, usable: false, backingFs, code: 'ERR_INCOMPATIBLE_FS', reason: incompatible(ctx.home, backingFs).message };
    }
    if (process.getuid?.() !== 0) {
      return {
        name: 'btrfs', priority: PRIORITY, usable: false, backingFs, code: 'ERR_PREREQUISITES',
        reason: 'the btrfs driver needs root (CAP_SYS_ADMIN) to destroy subvolumes and set qgroup limits; run as root',
      };
    }
    return { name: 'btrfs', priority: PRIORITY, usable: true, backingFs };
  },

  async open(ctx: DriverContext): Promise<StorageDriver> {
    parseDriverOptions(ctx.options); // option errors before anything is created
    const probed = await btrfsDriver.probe(ctx);
    if (!probed.usable) throw new CairnError(probed.code ?? 'ERR_NOT_SUPPORTED', probed.reason ?? 'btrfs is not usable here', { subject: ctx.home });
    return BtrfsDriver.open(ctx.home, { options: ctx.options, lockTimeoutMs: ctx.lockTimeoutMs });
  },

  async hasLayers(ctx: DriverContext): Promise<boolean> {
    try {
      return (await readdir(new BtrfsLayout(ctx.home).subvolumesDir)).some((name) => isValidId(name));
    } catch (err) {
      if (errnoCode(err) === 'ENOENT' || errnoCode(err) === 'ENOTDIR') return false;
      throw err;
    }
  },
};
