import { createHash } from 'node:crypto';
import { join } from 'node:path';

/** Device-mapper names are at most 127 bytes (DM_NAME_LEN 128 with the NUL). */
const DM_NAME_MAX = 127;

/**
 * Paths and device names of one devicemapper home, laid out as moby's:
 * `${home}/devicemapper/{data,metadata}` (loop-lvm files), `${home}/metadata/<id>` (one
 * JSON per layer), `${home}/mnt/<id>` (mount points). Names that are not layers start
 * with '.', which no layer id may, so the two never collide. Pure: no I/O.
 */
export class Layout {
  constructor(readonly home: string, readonly devicePrefix: string) {}

  get loopDir(): string { return join(this.home, 'devicemapper'); }
  get dataFile(): string { return join(this.loopDir, 'data'); }
  get metadataFile(): string { return join(this.loopDir, 'metadata'); }
  get metaDir(): string { return join(this.home, 'metadata'); }
  get mntDir(): string { return join(this.home, 'mnt'); }
  /** The open transaction, if any (moby's `transaction-metadata`). */
  get transactionFile(): string { return join(this.metaDir, '.transaction'); }
  /** Pool-wide state: next device id, base device facts (moby's `deviceset-metadata` + `base`). */
  get deviceSetFile(): string { return join(this.metaDir, '.deviceset'); }
  /** direct-lvm: what was built on dm.directlvm_device, so a reopen does not build it again. */
  get lvmSetupFile(): string { return join(this.home, 'setup-config.json'); }

  layerMeta(id: string): string { return join(this.metaDir, id); }
  mountPoint(id: string): string { return join(this.mntDir, id); }
  /** What get() hands out: a directory inside the filesystem, so lost+found stays hidden (as moby). */
  rootfs(id: string): string { return join(this.mntDir, id, 'rootfs'); }

  /** The loop-lvm pool's device-mapper name. */
  get poolName(): string { return `${this.devicePrefix}-pool`; }
  get baseName(): string { return `${this.devicePrefix}-base`; }
  /** A layer's thin device name: readable when it fits, a hash of the id when it does not. */
  deviceName(id: string): string {
    const plain = `${this.devicePrefix}-L-${id}`;
    if (plain.length <= DM_NAME_MAX) return plain;
    return `${this.devicePrefix}-H-${createHash('sha256').update(id).digest('hex')}`;
  }
}

/**
 * The device name prefix for a home, unique per host like moby's `docker-MAJ:MIN-INO`:
 * the device and inode of the home directory.
 */
export function devicePrefixFor(major: number, minor: number, ino: number): string {
  return `cairn-${major}:${minor}-${ino}`;
}

export const SECTOR = 512;

export function toSectors(bytes: number): number {
  return Math.floor(bytes / SECTOR);
}
