import { mkdir, writeFile } from 'node:fs/promises';
import { CairnError } from '@cairnfs/core';
import { CommandFailure, classify, run, udevRunning } from './exec.js';
import { RecordFile } from '@cairnfs/core';
import type { DmOptions } from './options.js';

const PKG = 'lvm2';
/** Volume group and thin pool names, as moby's `docker/thinpool`. */
export const VG = 'cairn';
export const THINPOOL_LV = 'thinpool';
/** The device-mapper name LVM gives VG/LV. */
export const LVM_POOL_NAME = `${VG}-${THINPOOL_LV}`;
const PROFILE = 'cairn-thinpool';

interface LvmSetup { device: string; vg: string; pool: string }

/** `setup-config.json`: what direct-lvm built on dm.directlvm_device. */
const lvmSetupRecord = new RecordFile<LvmSetup>('devicemapper direct-lvm setup', (raw) => {
  const m = (raw ?? {}) as Partial<LvmSetup>;
  const names = [m.device, m.vg, m.pool];
  return names.every((v) => typeof v === 'string' && v !== '') ? m as LvmSetup : 'device, vg and pool must be non-empty strings';
}, 'restore it, or remove it to set the device up again (only if the device holds nothing you need)');

/**
 * LVM settings when udev is absent: LVM must not wait for udev to create nodes, and the
 * monitoring daemon (dmeventd) that autoextends pools may not be running.
 */
function lvmConfigArgs(): string[] {
  if (udevRunning()) return [];
  return ['--config', 'activation { udev_sync = 0 udev_rules = 0 monitoring = 0 } devices { obtain_device_list_from_udev = 0 }'];
}

async function lvm(cmd: string, args: string[], what: string): Promise<string> {
  try {
    const { stdout } = await run(cmd, [...args, ...lvmConfigArgs()], PKG);
    return stdout;
  } catch (err) {
    throw classify(err, what, args[args.length - 1]);
  }
}

/** Whether blkid finds a filesystem, partition table, PV or other signature on the device. */
async function signatureOf(device: string): Promise<string | null> {
  try {
    const { stdout } = await run('blkid', ['-p', '-o', 'export', device], 'util-linux (blkid)');
    return stdout.trim().replace(/\n/g, ' ') || 'unknown signature';
  } catch (err) {
    if (err instanceof CommandFailure && err.exitCode === 2) return null; // nothing found
    throw classify(err, `inspecting ${device}`, device);
  }
}

/**
 * direct-lvm set-up as moby's `dm.directlvm_device`: PV, VG `cairn`, a thin pool of
 * `dm.thinp_percent` of the VG with `dm.thinp_metapercent` for metadata, and an
 * autoextend profile. Refuses a device that already holds data. Done once per home,
 * recorded in `setupFile`; a reopen with the same device just activates the pool.
 * Returns the pool's device-mapper name.
 */
export async function setupDirectLvm(opts: DmOptions, setupFile: string): Promise<string> {
  const device = opts.directLvmDevice!;
  const prior = await lvmSetupRecord.read(setupFile);
  if (prior) {
    if (prior.device !== device) {
      throw new CairnError('ERR_INVALID_OPTION',
        `dm.directlvm_device=${device}, but this home was set up on ${prior.device}; changing the device of an existing home is not supported`,
        { subject: 'dm.directlvm_device' });
    }
    await lvm('lvchange', ['-ay', `${prior.vg}/${prior.pool}`], `activating thin pool ${prior.vg}/${prior.pool}`);
    return `${prior.vg}-${prior.pool}`;
  }
  const found = await signatureOf(device);
  if (found) {
    throw new CairnError('ERR_INVALID_OPTION',
      `dm.directlvm_device=${device} already holds data (${found}); refusing to overwrite it. Wipe it yourself (wipefs -a) if it is really free.`,
      { subject: 'dm.directlvm_device' });
  }
  await lvm('pvcreate', ['-y', device], `creating a physical volume on ${device}`);
  await lvm('vgcreate', [VG, device], `creating volume group ${VG}`);
  await lvm('lvcreate', ['-y', '--wipesignatures', 'y', '-n', THINPOOL_LV, VG, '-l', `${opts.thinpPercent}%VG`], 'creating the thin pool data volume');
  await lvm('lvcreate', ['-y', '--wipesignatures', 'y', '-n', `${THINPOOL_LV}meta`, VG, '-l', `${opts.thinpMetaPercent}%VG`], 'creating the thin pool metadata volume');
  await lvm('lvconvert', ['-y', '--zero', 'n', '-c', `${opts.blockSize / 1024}K`, '--thinpool', `${VG}/${THINPOOL_LV}`, '--poolmetadata', `${VG}/${THINPOOL_LV}meta`],
    'converting the volumes into a thin pool');
  await mkdir('/etc/lvm/profile', { recursive: true });
  await writeFile(`/etc/lvm/profile/${PROFILE}.profile`,
    `activation {\n  thin_pool_autoextend_threshold=${opts.autoextendThreshold}\n  thin_pool_autoextend_percent=${opts.autoextendPercent}\n}\n`);
  await lvm('lvchange', ['--metadataprofile', PROFILE, `${VG}/${THINPOOL_LV}`], 'applying the autoextend profile');
  await lvmSetupRecord.write(setupFile, { device, vg: VG, pool: THINPOOL_LV });
  return LVM_POOL_NAME;
}
