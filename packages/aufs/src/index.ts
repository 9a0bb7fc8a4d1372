import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { CairnError, detectBackingFs, errnoCode, nearestExistingPath } from '@cairnfs/core';
import type { DriverContext, DriverFactory, ProbeResult, StorageDriver } from '@cairnfs/core';
import { AufsDriver } from './driver.js';
import { aufsMissingReason } from './mount.js';

export { AufsDriver, MAX_DEPTH } from './driver.js';
export { AufsLayout, parseAncestors, formatAncestors } from './layout.js';
export { branchChanges, diffDirEntries, diffDirBytes, isAufsMeta } from './changes.js';
export { aufsMissingReason, mountUnion, planAufsMount, type AufsMountPlan } from './mount.js';

function checkOptions(options: Record<string, string>): void {
  for (const key of Object.keys(options)) {
    if (key.startsWith('aufs.')) {
      throw new CairnError('ERR_INVALID_OPTION', `unknown aufs driver option ${JSON.stringify(key)}: the aufs driver takes no options`, { subject: key });
    }
  }
}

/**
 * The aufs driver as the registry sees it: priority 5, as in moby. Usable only on a
 * kernel with aufs; elsewhere the probe says so, `hasLayers` still finds an existing
 * Docker aufs store, and `open` still works (everything but get/put), so that store can
 * be read, exported and migrated.
 */
export const aufsDriver: DriverFactory = {
  name: 'aufs',
  priority: 5,

  async probe(ctx: DriverContext): Promise<ProbeResult> {
    const backingFs = (await detectBackingFs(await nearestExistingPath(ctx.home))).name;
    const missing = await aufsMissingReason();
    if (missing !== null) return { name: 'aufs', priority: 5, usable: false, reason: missing, code: 'ERR_NOT_SUPPORTED', backingFs };
    return { name: 'aufs', priority: 5, usable: true, backingFs };
  },

  async open(ctx: DriverContext): Promise<StorageDriver> {
    checkOptions(ctx.options);
    return AufsDriver.open(ctx.home, {
      kernelMissing: await aufsMissingReason(),
      lockTimeoutMs: ctx.lockTimeoutMs,
    });
  },

  async hasLayers(ctx: DriverContext): Promise<boolean> {
    try {
      return (await readdir(join(ctx.home, 'layers'))).length > 0;
    } catch (err) {
      if (errnoCode(err) === 'ENOENT' || errnoCode(err) === 'ENOTDIR') return false;
      throw err;
    }
  },
};
