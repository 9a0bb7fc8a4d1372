import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { CairnError } from '@cairnfs/core';
import type { DriverContext, DriverFactory, ProbeResult, StorageDriver } from '@cairnfs/core';
import { DeviceMapperDriver } from './driver.js';
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
export const devicemapperDriver: DriverFactory = {
  name: NAME,
  priority: PRIORITY,
  optionPrefixes: ['dm'],
  probe: (ctx: DriverContext): Promise<ProbeResult> => probeDevicemapper(ctx),
  async open(ctx: DriverContext): Promise<StorageDriver> {
    const probe = await probeDevicemapper(ctx);
    if (!probe.usable) {
      throw new CairnError(probe.code ?? 'ERR_NOT_SUPPORTED', `devicemapper cannot run here: ${probe.reason}`, { subject: ctx.home });
    }
    return DeviceMapperDriver.open(ctx);
  },
  async hasLayers(ctx: DriverContext): Promise<boolean> {
    try {
      return (await readdir(join(ctx.home, 'metadata'))).some((e) => !e.startsWith('.'));
    } catch {
      return false;
    }
  },
};
