import { access, constants as fsConstants } from 'node:fs/promises';
import {
  CairnError, defineDriver, detectBackingFs, dirHasEntries, errnoCode, nearestExistingPath, parseByteSize,
} from '@cairnfs/core';
import { VfsDriver, type VfsSettings } from './driver.js';
import { VfsLayout } from './layout.js';

export { VfsDriver, type VfsSettings } from './driver.js';
export { VfsLayout } from './layout.js';
export type { LayerMeta } from './meta.js';

/** The `vfs.*` driver options: `vfs.size`, the default quota of container layers. */
function parseOptions(options: Readonly<Record<string, string>>): VfsSettings {
  let defaultSize = 0;
  for (const [key, value] of Object.entries(options)) {
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
export const vfsDriver = defineDriver<VfsSettings>({
  name: 'vfs',
  priority: 6,
  parseOptions,

  async probe(setup) {
    const existing = await nearestExistingPath(setup.home);
    const backingFs = (await detectBackingFs(existing)).name;
    try {
      await access(existing, fsConstants.W_OK);
    } catch (err) {
      return { usable: false, backingFs, reason: `${existing} is not writable (${errnoCode(err) ?? String(err)}); run as root or choose another root` };
    }
    return { usable: true, backingFs };
  },

  open: (setup) => VfsDriver.open(setup),
  hasLayers: (ctx) => dirHasEntries(new VfsLayout(ctx.home).layersDir),
});
