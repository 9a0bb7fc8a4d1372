import { access, constants as fsConstants, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { CairnError, detectBackingFs, errnoCode, nearestExistingPath, parseByteSize } from '@cairnfs/core';
import type { DriverContext, DriverFactory, ProbeResult, StorageDriver } from '@cairnfs/core';
import { VfsDriver } from './driver.js';

export { VfsDriver } from './driver.js';
export { VfsLayout } from './layout.js';
export type { LayerMeta } from './meta.js';

/** The `vfs.*` driver options (other drivers' options are ignored): `vfs.size`, the default quota of container layers. */
function parseOptions(options: Record<string, string>): { defaultSize: number } {
  let defaultSize = 0;
  for (const [key, value] of Object.entries(options)) {
    if (!key.startsWith('vfs.')) continue;
    if (key !== 'vfs.size') {
      throw new CairnError('ERR_INVALID_OPTION', `unknown vfs driver option ${JSON.stringify(key)} (known: vfs.size)`, { subject: key });
    }
    defaultSize = parseByteSize(value, key);
  }
  return { defaultSize };
}

/**
 * The vfs driver as the registry sees it: last in moby's priority order (6), usable
 * wherever the home can be written, since it needs nothing from the kernel but a
 * filesystem.
 */
export const vfsDriver: DriverFactory = {
  name: 'vfs',
  priority: 6,

  async probe(ctx: DriverContext): Promise<ProbeResult> {
    const existing = await nearestExistingPath(ctx.home);
    const backingFs = (await detectBackingFs(existing)).name;
    try {
      await access(existing, fsConstants.W_OK);
    } catch (err) {
      return { name: 'vfs', priority: 6, usable: false, backingFs, reason: `${existing} is not writable (${errnoCode(err) ?? String(err)}); run as root or choose another root` };
    }
    return { name: 'vfs', priority: 6, usable: true, backingFs };
  },

  async open(ctx: DriverContext): Promise<StorageDriver> {
    const { defaultSize } = parseOptions(ctx.options);
    return VfsDriver.open(ctx.home, {
      lockTimeoutMs: ctx.lockTimeoutMs,
      defaultSize,
    });
  },

  async hasLayers(ctx: DriverContext): Promise<boolean> {
    try {
      return (await readdir(join(ctx.home, 'dir'))).length > 0;
    } catch (err) {
      if (errnoCode(err) === 'ENOENT' || errnoCode(err) === 'ENOTDIR') return false;
      throw err;
    }
  },
};
