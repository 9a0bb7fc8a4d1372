import { defineDriver, dirHasEntries } from '@cairnfs/core';
import { DeviceMapperDriver } from './driver.js';
import { Layout } from './layout.js';
import { parseOptions, type DmOptions } from './options.js';
import { NAME, PRIORITY, probeDevicemapper } from './probe.js';

export { DeviceMapperDriver } from './driver.js';
export { parseOptions, parseSize, humanSize } from './options.js';
export type { DmOptions, DmFs } from './options.js';
export { parsePoolStatus } from './dmsetup.js';
export type { PoolStatus } from './dmsetup.js';
export { Layout, devicePrefixFor } from './layout.js';
export type { LayerMeta, DeviceSetMeta, Transaction } from './meta.js';
export { kernelMissing, probeDevicemapper } from './probe.js';

/** The devicemapper driver as the registry knows it (moby's priority 4, `dm.*` options). */
export const devicemapperDriver = defineDriver<DmOptions>({
  name: NAME,
  priority: PRIORITY,
  optionPrefixes: ['dm'],
  parseOptions,
  probe: (setup) => probeDevicemapper(setup),
  open: (setup) => DeviceMapperDriver.open(setup),
  // Layer records are named by id; the pool's own records start with '.', which no id may.
  hasLayers: (ctx) => dirHasEntries(new Layout(ctx.home, '').metaDir, (name) => !name.startsWith('.')),
});
