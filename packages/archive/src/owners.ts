// What an apply does about owners and devices when the process is not real root: the
// pure-JS twin of @cairnfs/sys's OwnerPolicy (native/owners.h), and the one report both
// paths give of what they left undone.
import { errnoCode, mapId } from '@cairnfs/core';
import type { IdMappings } from '@cairnfs/core';
import type { ApplierDropped } from '@cairnfs/sys';

export { RECORDED_DEVICE_XATTR } from '@cairnfs/sys';

/** The RECORDED_DEVICE_XATTR value for a device (`uid:gid:0666:char-1-3`). */
export function recordedDeviceValue(uid: number, gid: number, mode: number, block: boolean, major: number, minor: number): string {
  return `${uid}:${gid}:${(mode & 0o7777).toString(8).padStart(4, '0')}:${block ? 'block' : 'char'}-${major}-${minor}`;
}

export interface RecordedDevice { uid: number; gid: number; mode: number; block: boolean; major: number; minor: number }

/** Parses a RECORDED_DEVICE_XATTR value; null when it is not a device record. */
export function parseRecordedDevice(value: string): RecordedDevice | null {
  const m = /^(\d+):(\d+):([0-7]+):(char|block)-(\d+)-(\d+)$/.exec(value);
  if (!m) return null;
  return { uid: Number(m[1]), gid: Number(m[2]), mode: parseInt(m[3]!, 8) & 0o7777, block: m[4] === 'block', major: Number(m[5]), minor: Number(m[6]) };
}

export class OwnerShift {
  readonly dropped: ApplierDropped = { chowns: 0, firstChown: '', devices: 0, firstDevice: '' };

  constructor(private readonly maps: IdMappings | undefined, private readonly ignoreChownErrors: boolean) {}

  /** The owner to store: shifted container → host; null when the maps do not cover it. */
  map(uid: number, gid: number): [number, number] | null {
    if (!this.maps) return [uid, gid];
    const u = mapId(this.maps.uidMap, uid, true);
    const g = mapId(this.maps.gidMap, gid, true);
    return u === undefined || g === undefined ? null : [u, g];
  }

  /** After a failed chown: true when it is dropped (ignoreChownErrors and EPERM/EINVAL/EOVERFLOW). */
  drop(err: unknown, rel: string, uid: number, gid: number): boolean {
    const code = typeof err === 'string' ? err : errnoCode(err);
    if (!this.ignoreChownErrors || (code !== 'EPERM' && code !== 'EINVAL' && code !== 'EOVERFLOW')) return false;
    if (this.dropped.chowns++ === 0) this.dropped.firstChown = `${rel} ${uid}:${gid}`;
    return true;
  }

  recorded(rel: string): void {
    if (this.dropped.devices++ === 0) this.dropped.firstDevice = rel;
  }
}

/** Says, once per apply, what it could not do as asked (process warnings a caller can watch for). */
export function reportDropped(root: string, d: ApplierDropped): void {
  if (d.chowns > 0) {
    process.emitWarning(
      `applying a layer into ${root}: ${d.chowns} ownership change(s) the kernel refused were dropped (ignoreChownErrors), those files are owned by the caller; first: ${d.firstChown}`,
      { code: 'CAIRN_CHOWN_DROPPED' });
  }
  if (d.devices > 0) {
    process.emitWarning(
      `applying a layer into ${root}: ${d.devices} device node(s) cannot be made without real root; each is recorded as an empty placeholder file that diff and export turn back into the device; first: ${d.firstDevice}`,
      { code: 'CAIRN_DEVICES_RECORDED' });
  }
}
