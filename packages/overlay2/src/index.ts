/**
 * @cairnfs/overlay2 — the overlay2 storage driver on the kernel's overlayfs, with Docker's
 * exact on-disk layout (`l/` short links, `link`, `lower`, `diff/`, `work/`, `merged/`).
 * @packageDocumentation
 */
import { CairnError, defineDriver, nearestExistingPath, probeIdmappedMounts } from '@cairnfs/core';
import { Overlay2Driver, parseOptions, type Overlay2Options } from './driver.js';
import { listLayerIds } from './links.js';
import { HOME_MODE, Layout } from './layout.js';
import { probeOverlay } from './probe.js';

export { Overlay2Driver, IMAGE_LAYER_XATTR, parseOptions } from './driver.js';
export type { Overlay2Options } from './driver.js';
export * from './layout.js';
export { planOverlayMount, performMount, detachMount, mountData, PAGE_SIZE } from './mount.js';
export type { MountSpec, OverlayMountRequest } from './mount.js';
export { planIdmappedOverlay } from './idmap.js';
export type { IdmappedLower, IdmappedOverlayPlan, IdmappedOverlayRequest } from './idmap.js';
export { probeOverlay, inUserNamespace } from './probe.js';
export type { OverlayFeatures, OverlayProbe } from './probe.js';
export { upperChanges } from './changes.js';
export { repairLinks } from './links.js';
export type { LinkRepairReport } from './links.js';

/** overlay2 as the registry knows it: priority 1, the first choice wherever overlayfs works. */
export const overlay2Driver = defineDriver<Overlay2Options>({
  name: 'overlay2',
  priority: 1,
  homeMode: HOME_MODE,
  parseOptions,
  async probe(setup) {
    try {
      const p = await probeOverlay(setup.home, setup.settings.mountProgram ? { mountProgram: setup.settings.mountProgram } : {});
      if (p.usable) {
        const why = setup.settings.mountProgram ? 'overlay2.mount_program is set'
          : !setup.settings.idmappedMounts ? 'overlay2.idmapped_mounts=false'
            : await probeIdmappedMounts(await nearestExistingPath(setup.home)).catch((err: unknown) => `the probe failed: ${(err as Error).message}`);
        const notes = why === null ? [] : [`get with idMappings makes chown copies of the image's lower view (no id-mapped mounts: ${why})`];
        return { usable: true, backingFs: p.features.backingFs, ...(notes.length > 0 ? { notes } : {}) };
      }
      return { usable: false, reason: p.reason, code: p.code, ...(p.backingFs ? { backingFs: p.backingFs } : {}) };
    } catch (err) {
      const reason = err instanceof CairnError ? err.message : `probe failed: ${(err as Error).message}`;
      return { usable: false, reason };
    }
  },
  open: (setup) => Overlay2Driver.open(setup),
  async hasLayers(ctx) {
    return (await listLayerIds(new Layout(ctx.home))).length > 0;
  },
});
