// btrfs ioctls (native/btrfs.cc), used by @cairnfs/btrfs. Every call is async on the libuv
// pool; failures are the same Node-style errors as the rest of this package, with
// `syscall` naming the ioctl ('BTRFS_IOC_SNAP_CREATE_V2', …).
import { native } from './native.js';

/** A subvolume nested directly inside another one. */
export interface BtrfsChildSubvolume {
  /** Subvolume (tree) id; also its level-0 qgroup id. */
  id: number;
  /** Path relative to the root of the subvolume that holds it, e.g. `var/lib/inner`. */
  path: string;
}

/** What BTRFS_IOC_FS_INFO reports. */
export interface BtrfsFsInfo {
  /** Filesystem UUID as `/sys/fs/btrfs/<fsid>` and blkid spell it. */
  fsid: string;
  numDevices: number;
  nodesize: number;
  sectorsize: number;
  /** Current transaction generation (0 on kernels that do not report it). */
  generation: number;
}

const btrfs = native;

/** BTRFS_SUBVOL_RDONLY, the one flag of BTRFS_IOC_SUBVOL_GETFLAGS/SETFLAGS. */
export const BTRFS_SUBVOL_RDONLY = 2;

/** BTRFS_IOC_SUBVOL_CREATE: a new, empty subvolume `dir/name` (name: one path component). */
export function btrfsSubvolCreate(dir: string, name: string): Promise<void> {
  return btrfs.btrfsSubvolCreate(dir, name);
}

/** BTRFS_IOC_SNAP_CREATE_V2: snapshot of the subvolume at `source` as `dir/name`. */
export function btrfsSnapshot(source: string, dir: string, name: string, opts: { readOnly?: boolean } = {}): Promise<void> {
  return btrfs.btrfsSnapshot(source, dir, name, opts.readOnly ?? false);
}

/**
 * BTRFS_IOC_SNAP_DESTROY of the subvolume `dir/name`. Works on read-only subvolumes (as
 * root); fails with ENOTEMPTY while other subvolumes are nested in it.
 */
export function btrfsSubvolDestroy(dir: string, name: string): Promise<void> {
  return btrfs.btrfsSubvolDestroy(dir, name);
}

/** BTRFS_IOC_SUBVOL_GETFLAGS on the subvolume root at `path`. */
export function btrfsGetFlags(path: string): Promise<number> {
  return btrfs.btrfsGetFlags(path);
}

/** BTRFS_IOC_SUBVOL_SETFLAGS on the subvolume root at `path`. */
export function btrfsSetFlags(path: string, flags: number): Promise<void> {
  return btrfs.btrfsSetFlags(path, flags);
}

/** Sets or clears the read-only flag of the subvolume root at `path`. */
export async function btrfsSetReadOnly(path: string, readOnly: boolean): Promise<void> {
  const flags = await btrfs.btrfsGetFlags(path);
  const want = readOnly ? flags | BTRFS_SUBVOL_RDONLY : flags & ~BTRFS_SUBVOL_RDONLY;
  if (want !== flags) await btrfs.btrfsSetFlags(path, want);
}

/** The id of the subvolume that holds `path` (BTRFS_IOC_INO_LOOKUP). */
export function btrfsSubvolId(path: string): Promise<number> {
  return btrfs.btrfsSubvolId(path);
}

/**
 * The subvolumes nested directly in the subvolume rooted at `path`
 * (BTRFS_IOC_GET_SUBVOL_ROOTREF + BTRFS_IOC_INO_LOOKUP_USER; costs one ioctl per nested
 * subvolume, independent of how many files the subvolume holds).
 */
export function btrfsSubvolChildren(path: string): Promise<BtrfsChildSubvolume[]> {
  return btrfs.btrfsSubvolChildren(path);
}

/** BTRFS_IOC_FS_INFO of the filesystem holding `path`. */
export function btrfsFsInfo(path: string): Promise<BtrfsFsInfo> {
  return btrfs.btrfsFsInfo(path);
}

/**
 * BTRFS_IOC_QGROUP_LIMIT: caps the referenced bytes of `qgroupid` (a subvolume id for
 * its level-0 qgroup); 0 removes the cap. ENOTCONN when quotas are disabled.
 */
export function btrfsQgroupLimit(path: string, qgroupid: number, maxReferenced: number): Promise<void> {
  return btrfs.btrfsQgroupLimit(path, qgroupid, maxReferenced);
}

/** Destroys qgroup `qgroupid` (BTRFS_IOC_QGROUP_CREATE with create = 0). */
export function btrfsQgroupDestroy(path: string, qgroupid: number): Promise<void> {
  return btrfs.btrfsQgroupDestroy(path, qgroupid);
}
