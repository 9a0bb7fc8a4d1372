import { existsSync, readFileSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { release } from 'node:os';
import { CairnError, detectBackingFs } from '@cairnfs/core';
import type { DriverSetup, ProbeVerdict } from '@cairnfs/core';
import type { DmOptions } from './options.js';
import { targetVersions } from './dmsetup.js';
import { run } from './exec.js';

export const NAME = 'devicemapper';
export const PRIORITY = 4;

function onPath(cmd: string): boolean {
  return (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(delimiter)
    .some((d) => d !== '' && existsSync(join(d, cmd)));
}

/** Whether the running kernel has `module` built in or installed as a loadable module. */
function kernelHasModule(module: string): boolean {
  if (existsSync(`/sys/module/${module.replace(/-/g, '_')}`)) return true;
  const dir = `/lib/modules/${release()}`;
  for (const file of ['modules.builtin', 'modules.dep']) {
    try {
      const text = readFileSync(join(dir, file), 'utf8');
      if (new RegExp(`/${module.replace(/[-_]/g, '[-_]')}\\.ko`).test(text)) return true;
    } catch { /* no such list: the kernel has no module tree here */ }
  }
  return false;
}

/** Why the kernel cannot run thin pools, or null when it can. */
export function kernelMissing(): string | null {
  const dm = existsSync('/dev/mapper/control') || existsSync('/sys/class/misc/device-mapper') || kernelHasModule('dm-mod');
  if (!dm) {
    return `the running kernel (${release()}) has no device-mapper: no /dev/mapper/control and no dm-mod module. ` +
      'Load dm-mod (modprobe dm_mod) or use a kernel built with CONFIG_BLK_DEV_DM and CONFIG_DM_THIN_PROVISIONING';
  }
  if (!kernelHasModule('dm-thin-pool')) {
    return `the running kernel (${release()}) has device-mapper but no thin-pool target (dm-thin-pool); build it with CONFIG_DM_THIN_PROVISIONING`;
  }
  return null;
}

/** Says whether devicemapper can run here; touches nothing (no module loads, no devices). */
export async function probeDevicemapper(setup: DriverSetup<DmOptions>): Promise<ProbeVerdict> {
  const base: ProbeVerdict = { usable: false };
  try {
    base.backingFs = (await detectBackingFs(setup.root)).name;
  } catch { /* leave unknown */ }
  const opts = setup.settings;
  const kernel = kernelMissing();
  if (kernel) return { ...base, code: 'ERR_NOT_SUPPORTED', reason: kernel };
  if (process.getuid?.() !== 0) {
    return { ...base, code: 'ERR_PREREQUISITES', reason: 'devicemapper needs root (it creates device-mapper devices and mounts them)' };
  }
  const tools: Array<[string, string]> = [['dmsetup', 'lvm2'], [opts.fs === 'xfs' ? 'mkfs.xfs' : 'mkfs.ext4', opts.fs === 'xfs' ? 'xfsprogs' : 'e2fsprogs']];
  if (!opts.thinPoolDev && !opts.directLvmDevice) tools.push(['losetup', 'util-linux']);
  if (opts.directLvmDevice) tools.push(['lvcreate', 'lvm2'], ['blkid', 'util-linux']);
  const missing = tools.filter(([cmd]) => !onPath(cmd));
  if (missing.length > 0) {
    return {
      ...base, code: 'ERR_PREREQUISITES',
      reason: `missing ${missing.map(([c]) => c).join(', ')}; install ${[...new Set(missing.map(([, p]) => p))].join(' ')}`,
    };
  }
  return { ...base, usable: true };
}

/** Loads the thin-pool target when the kernel has it as a module, and checks it is there. */
export async function ensureKernel(): Promise<void> {
  const missing = kernelMissing();
  if (missing) throw new CairnError('ERR_NOT_SUPPORTED', missing);
  // Loaded already (the common case after the first open): skip the dmsetup round trip.
  if (existsSync('/sys/module/dm_thin_pool')) return;
  let targets = await targetVersions().catch(() => new Map<string, string>());
  if (!targets.has('thin-pool')) {
    await run('modprobe', ['dm_thin_pool'], 'kmod').catch(() => undefined);
    targets = await targetVersions();
  }
  if (!targets.has('thin-pool')) {
    throw new CairnError('ERR_NOT_SUPPORTED', 'device-mapper has no thin-pool target (modprobe dm_thin_pool failed); devicemapper needs CONFIG_DM_THIN_PROVISIONING');
  }
}
