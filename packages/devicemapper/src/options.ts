import { CairnError } from '@cairnfs/core';

/** The filesystems a thin device can be formatted with. */
export type DmFs = 'ext4' | 'xfs';

/** devicemapper options, named and defaulted as moby's `dm.*` storage options. */
export interface DmOptions {
  /** loop-lvm sparse data file size (`dm.loopdatasize`, default 100G). */
  loopDataSize: number;
  /** Whether `dm.loopdatasize` was given (only an explicit size may refuse an existing bigger file). */
  loopDataSizeSet: boolean;
  /** loop-lvm sparse metadata file size (`dm.loopmetadatasize`, default 2G). */
  loopMetadataSize: number;
  loopMetadataSizeSet: boolean;
  /** Size of the base thin device every layer starts from (`dm.basesize`, default 10G). */
  baseSize: number;
  baseSizeSet: boolean;
  /** Filesystem of the base device (`dm.fs`, default ext4). */
  fs: DmFs;
  fsSet: boolean;
  /** Thin pool block size in bytes (`dm.blocksize`, default 64K; 64K..1G, a multiple of 64K). */
  blockSize: number;
  /** An existing thin pool, `/dev/mapper/NAME` or NAME (`dm.thinpooldev`). */
  thinPoolDev: string | null;
  /** A block device to turn into an LVM thin pool (`dm.directlvm_device`). */
  directLvmDevice: string | null;
  /** direct-lvm: percent of the VG for data (`dm.thinp_percent`, 95) and metadata (`dm.thinp_metapercent`, 1). */
  thinpPercent: number;
  thinpMetaPercent: number;
  /** direct-lvm autoextend profile (`dm.thinp_autoextend_threshold` 80, `dm.thinp_autoextend_percent` 20). */
  autoextendThreshold: number;
  autoextendPercent: number;
  /** Extra mkfs arguments (`dm.mkfsarg`, repeatable as `dm.mkfsarg`, `dm.mkfsarg.1`, … or space-separated). */
  mkfsArgs: string[];
  /** Extra mount options (`dm.mountopt`). */
  mountOpt: string;
  /** Percent of pool data and metadata space that must stay free for a create (`dm.min_free_space`, 10%). */
  minFreeSpacePercent: number;
  /** `dmsetup remove --deferred` on put (`dm.use_deferred_removal`). */
  deferredRemoval: boolean;
  /** A delete that finds the device busy is recorded and retried later (`dm.use_deferred_deletion`). */
  deferredDeletion: boolean;
  /** Proceed without udev sync (`dm.override_udev_sync_check`); cairn never relies on udev, so informational. */
  overrideUdevSyncCheck: boolean;
}

const KiB = 1024;
const GiB = 1024 ** 3;

/**
 * Parses a size as moby's go-units RAMInBytes does: binary multiples, optional `b`/`ib`
 * suffix, case-insensitive: `64K`, `10G`, `512mb`, `1.5GiB`, or plain bytes.
 */
export function parseSize(value: string, option: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b)?\s*$/i.exec(value);
  if (!m) {
    throw new CairnError('ERR_INVALID_OPTION', `${option}=${value} is not a size; use bytes or a number with K, M, G or T (e.g. 10G)`, { subject: option });
  }
  const power = ' kmgtp'.indexOf((m[2] || ' ').toLowerCase());
  return Math.floor(Number(m[1]) * 1024 ** power);
}

function parseBool(value: string, option: string): boolean {
  const v = value.trim().toLowerCase();
  if (['1', 'true', 't', 'yes'].includes(v)) return true;
  if (['0', 'false', 'f', 'no'].includes(v)) return false;
  throw new CairnError('ERR_INVALID_OPTION', `${option}=${value} is not a boolean; use true or false`, { subject: option });
}

function parsePercent(value: string, option: string, max = 100): number {
  const n = Number(value.trim().replace(/%$/, ''));
  if (!Number.isInteger(n) || n < 0 || n > max) {
    throw new CairnError('ERR_INVALID_OPTION', `${option}=${value} must be a whole percentage between 0 and ${max}`, { subject: option });
  }
  return n;
}

/** Reads `dm.*` options (the `dm.` prefix is optional) into {@link DmOptions}; unknown names are ERR_INVALID_OPTION. */
export function parseOptions(raw: Readonly<Record<string, string>>): DmOptions {
  const o: DmOptions = {
    loopDataSize: 100 * GiB, loopDataSizeSet: false,
    loopMetadataSize: 2 * GiB, loopMetadataSizeSet: false,
    baseSize: 10 * GiB, baseSizeSet: false,
    fs: 'ext4', fsSet: false, blockSize: 64 * KiB,
    thinPoolDev: null, directLvmDevice: null,
    thinpPercent: 95, thinpMetaPercent: 1, autoextendThreshold: 80, autoextendPercent: 20,
    mkfsArgs: [], mountOpt: '', minFreeSpacePercent: 10,
    deferredRemoval: false, deferredDeletion: false, overrideUdevSyncCheck: false,
  };
  for (const [name, value] of Object.entries(raw)) {
    const key = name.toLowerCase().replace(/^dm\./, '');
    const option = `dm.${key}`;
    switch (key.replace(/\.\d+$/, '')) {
      case 'loopdatasize': o.loopDataSize = parseSize(value, option); o.loopDataSizeSet = true; break;
      case 'loopmetadatasize': o.loopMetadataSize = parseSize(value, option); o.loopMetadataSizeSet = true; break;
      case 'basesize': o.baseSize = parseSize(value, option); o.baseSizeSet = true; break;
      case 'fs': {
        const fs = value.trim().toLowerCase();
        if (fs !== 'ext4' && fs !== 'xfs') {
          throw new CairnError('ERR_INVALID_OPTION', `dm.fs=${value} is not supported; use ext4 or xfs`, { subject: option });
        }
        o.fs = fs;
        o.fsSet = true;
        break;
      }
      case 'blocksize': {
        const b = parseSize(value, option);
        if (b < 64 * KiB || b > GiB || b % (64 * KiB) !== 0) {
          throw new CairnError('ERR_INVALID_OPTION', `dm.blocksize=${value} must be a multiple of 64K between 64K and 1G`, { subject: option });
        }
        o.blockSize = b;
        break;
      }
      case 'thinpooldev': o.thinPoolDev = value.trim() || null; break;
      case 'directlvm_device': o.directLvmDevice = value.trim() || null; break;
      case 'thinp_percent': o.thinpPercent = parsePercent(value, option); break;
      case 'thinp_metapercent': o.thinpMetaPercent = parsePercent(value, option); break;
      case 'thinp_autoextend_threshold': o.autoextendThreshold = parsePercent(value, option); break;
      case 'thinp_autoextend_percent': o.autoextendPercent = parsePercent(value, option, 1000); break;
      case 'mkfsarg': o.mkfsArgs.push(...value.split(/\s+/).filter(Boolean)); break;
      case 'mountopt': o.mountOpt = o.mountOpt ? `${o.mountOpt},${value.trim()}` : value.trim(); break;
      case 'min_free_space': o.minFreeSpacePercent = parsePercent(value, option, 99); break;
      case 'use_deferred_removal': o.deferredRemoval = parseBool(value, option); break;
      case 'use_deferred_deletion': o.deferredDeletion = parseBool(value, option); break;
      case 'override_udev_sync_check': o.overrideUdevSyncCheck = parseBool(value, option); break;
      default:
        throw new CairnError('ERR_INVALID_OPTION', `unknown devicemapper option ${name}`, { subject: name });
    }
  }
  if (o.thinPoolDev && o.directLvmDevice) {
    throw new CairnError('ERR_INVALID_OPTION', 'dm.thinpooldev and dm.directlvm_device cannot be used together: give an existing pool or a device to build one on', { subject: 'dm.thinpooldev' });
  }
  if (o.thinpPercent + o.thinpMetaPercent > 100) {
    throw new CairnError('ERR_INVALID_OPTION', `dm.thinp_percent + dm.thinp_metapercent is ${o.thinpPercent + o.thinpMetaPercent}%, more than the volume group`, { subject: 'dm.thinp_percent' });
  }
  return o;
}

/** moby's go-units HumanSize: decimal units, 4 significant digits (`"1.074 GB"`). */
export function humanSize(bytes: number): string {
  const units = ['B', 'kB', 'MB', 'GB', 'TB', 'PB', 'EB'];
  let v = bytes;
  let i = 0;
  while (v >= 1000 && i < units.length - 1) { v /= 1000; i++; }
  return `${Number(v.toPrecision(4))} ${units[i]}`;
}
