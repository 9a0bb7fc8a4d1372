import { defineDriver, detectBackingFs, dirHasEntries, isValidId } from '@cairnfs/core';
import { BtrfsDriver, incompatible } from './driver.js';
import { BtrfsLayout } from './layout.js';
import { parseDriverOptions, type BtrfsOptions } from './options.js';

export { BtrfsDriver } from './driver.js';
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
export const btrfsDriver = defineDriver<BtrfsOptions>({
  name: 'btrfs',
  priority: PRIORITY,
  requiresOwnFilesystem: true,
  parseOptions: parseDriverOptions,

  async probe(setup) {
    const backingFs = (await detectBackingFs(setup.home)).name;
    if (backingFs !== 'btrfs') {
      return { usable: false, backingFs, code: 'ERR_INCOMPATIBLE_FS', reason: incompatible(setup.home, backingFs).message };
    }
    if (process.getuid?.() !== 0) {
      return {
        usable: false, backingFs, code: 'ERR_PREREQUISITES',
        reason: 'the btrfs driver needs root (CAP_SYS_ADMIN) to destroy subvolumes and set qgroup limits; run as root',
      };
    }
    return { usable: true, backingFs };
  },

  open: (setup) => BtrfsDriver.open(setup),
  hasLayers: (ctx) => dirHasEntries(new BtrfsLayout(ctx.home).subvolumesDir, isValidId),
});
