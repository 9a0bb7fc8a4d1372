/**
 * @cairnfs/zfs — the zfs storage driver: every layer a ZFS dataset, children are clones of
 * a snapshot of their parent. Runs on OpenZFS and on zfs-fuse (the userspace ZFS daemon),
 * choosing the mount method the host has.
 * @packageDocumentation
 */
import { access } from 'node:fs/promises';
import { join } from 'node:path';
import { defineDriver, isCairnError } from '@cairnfs/core';
import { ZfsCommands } from './command.js';
import { ZfsDriver, KIND_PROPERTY, type ZfsSettings } from './driver.js';
import { checkOptions, checkParentDataset, probeZfs } from './probe.js';

export { ZfsDriver, KIND_PROPERTY, SEALED_PROPERTY } from './driver.js';
export type { LayerKind, ZfsSettings } from './driver.js';
export { ZfsCommands, ZfsCommandError, findTool, parsePropertyTable } from './command.js';
export type { PropertyTable, ZfsTool } from './command.js';
export { ZfsLayout } from './layout.js';
export { ZfsMounter, detectMountMethod, makeReadOnly, mountProperties } from './mount.js';
export type { MountMethod } from './mount.js';
export { FSNAME_OPTION, datasetHolding, probeZfs } from './probe.js';
export type { ZfsProbe } from './probe.js';

/**
 * The zfs driver as the registry sees it: priority 3 (after overlay2 and btrfs), picked
 * automatically only when the storage root is on ZFS. The probe runs one `zfs get` to
 * see that the parent dataset answers.
 */
export const zfsDriver = defineDriver<ZfsSettings>({
  name: 'zfs',
  priority: 3,
  requiresOwnFilesystem: true,
  parseOptions: (options) => ({ fsname: checkOptions(options) }),

  async probe(setup) {
    try {
      const commands = await ZfsCommands.locate();
      const { fsname } = await probeZfs(setup.home, setup.settings.fsname);
      await checkParentDataset(commands, fsname);
      return { usable: true, backingFs: 'zfs' };
    } catch (err) {
      if (!isCairnError(err)) throw err;
      return { usable: false, reason: err.message, code: err.code };
    }
  },

  open: (setup) => ZfsDriver.open(setup),

  /**
   * True when the home was used by this driver (its `graph` directory exists) and
   * fsname holds cairn layers. When ZFS does not answer, a used home still counts, so
   * auto-selection reports the zfs problem instead of silently picking another driver.
   */
  async hasLayers(ctx) {
    try {
      await access(join(ctx.home, 'graph'));
    } catch {
      return false;
    }
    try {
      const commands = await ZfsCommands.locate();
      const { fsname } = await probeZfs(ctx.home, checkOptions(ctx.options));
      const table = await commands.getProperties([fsname], [KIND_PROPERTY], { recursive: true, depth: 1 });
      return [...table].some(([name, row]) => name !== fsname && row.get(KIND_PROPERTY) !== '-');
    } catch {
      return true;
    }
  },
});
