import { CairnError, defineDriver, detectBackingFs, dirHasEntries, nearestExistingPath } from '@cairnfs/core';
import { AufsDriver } from './driver.js';
import { AufsLayout } from './layout.js';
import { aufsMissingReason } from './mount.js';

export { AufsDriver, MAX_DEPTH } from './driver.js';
export { AufsLayout, parseAncestors, formatAncestors } from './layout.js';
export { branchChanges, diffDirEntries, diffDirBytes, isAufsMeta } from './changes.js';
export { aufsMissingReason, mountUnion, planAufsMount, type AufsMountPlan } from './mount.js';

/** The aufs driver takes no options: any `aufs.*` key is a mistake worth saying. */
function parseOptions(options: Readonly<Record<string, string>>): Record<string, never> {
  for (const key of Object.keys(options)) {
    throw new CairnError('ERR_INVALID_OPTION', `unknown aufs driver option ${JSON.stringify(key)}: the aufs driver takes no options`, { subject: key });
  }
  return {};
}

/**
 * The aufs driver as the registry sees it: priority 5, as in moby. Usable only on a
 * kernel with aufs; elsewhere the probe says so, `hasLayers` still finds an existing
 * Docker aufs store, and `open` still works (everything but get/put), so that store can
 * be read, exported and migrated.
 */
export const aufsDriver = defineDriver<Record<string, never>>({
  name: 'aufs',
  priority: 5,
  opensWhenUnusable: true,
  parseOptions,

  async probe(setup) {
    const backingFs = (await detectBackingFs(await nearestExistingPath(setup.home))).name;
    const missing = await aufsMissingReason();
    if (missing !== null) return { usable: false, reason: missing, code: 'ERR_NOT_SUPPORTED', backingFs };
    return { usable: true, backingFs };
  },

  async open(setup) {
    return AufsDriver.open(setup, await aufsMissingReason());
  },

  hasLayers: (ctx) => dirHasEntries(new AufsLayout(ctx.home).layersRoot),
});
