import { access, constants as fsConstants } from 'node:fs/promises';
import {
  CairnError, defineDriver, detectBackingFs, dirHasEntries, errnoCode, nearestExistingPath, parseByteSize, probeIdmappedMounts,
} from '@cairnfs/core';
import { VfsDriver, type VfsSettings } from './driver.js';
import { VfsLayout } from './layout.js';

export { VfsDriver, type VfsSettings } from './driver.js';
export { VfsLayout } from './layout.js';
export type { LayerMeta } from './meta.js';

/** The `vfs.*` driver options: `vfs.size`, the default quota of container layers. */
function parseOptions(options: Readonly<Record<string, string>>): VfsSettings {
  let defaultSize = 0;
  let idmappedMounts = true;
  for (const [key, value] of Object.entries(options)) {
    if (key === 'vfs.size') {
      defaultSize = parseByteSize(value, key);
    } else if (key === 'vfs.idmapped_mounts' && (value === 'true' || value === 'false')) {
      idmappedMounts = value === 'true';
    } else if (key === 'vfs.idmapped_mounts') {
      throw new CairnError('ERR_INVALID_OPTION', `vfs.idmapped_mounts must be true or false, got ${JSON.stringify(value)}`, { subject: key });
    } else {
      throw new CairnError('ERR_INVALID_OPTION', `unknown vfs driver option ${JSON.stringify(key)} (known: vfs.size, vfs.idmapped_mounts)`, { subject: key });
    }
  }
  return { defaultSize, idmappedMounts };
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
    const why = setup.settings.idmappedMounts ? await probeIdmappedMounts(existing).catch((err: unknown) => String((err as Error).message)) : 'vfs.idmapped_mounts=false';
    return { usable: true, backingFs, ...(why === null ? {} : { notes: [`get with idMappings shifts a container's own copy in place, and makes chown copies of image layers (no id-mapped mounts: ${why})`] }) };
  },

  open: (setup) => VfsDriver.open(setup),
  hasLayers: (ctx) => dirHasEntries(new VfsLayout(ctx.home).layersDir),
});
