// Reading a directory of layer content something else may be writing into (a running
// container's): @cairnfs/sys's statDirSync lists it beneath the layer root (names, lstat
// numbers, xattrs, symlink targets, never following a link), and each entry's full lstat
// comes from an O_PATH|O_NOFOLLOW fd relative to the directory's fd, required to be the
// inode the listing named, so the listing's xattrs and link target belong to it. Shared by
// copyTree and the drivers' upper-dir change walks.
import { closeSync, constants as fsConstants, fstatSync, type BigIntStats } from 'node:fs';
import { O_PATH, STAT, STAT_FIELDS, openatSync, type DirStats } from '@cairnfs/sys';
import { errnoCode } from './errors.js';

const O_NODE_PATH = O_PATH | fsConstants.O_NOFOLLOW;

/** An entry's xattrs (name → raw value) and, for a symlink, its target. */
export interface ListedExtras { xattrs: Map<string, Buffer>; link: string | undefined }

/** Every entry's xattrs and symlink target from a listing (flat arrays, in entry order), indexed once per directory. */
export function listedExtras(listing: DirStats): ListedExtras[] {
  const out = listing.names.map((): ListedExtras => ({ xattrs: new Map<string, Buffer>(), link: undefined }));
  for (let k = 0; k < listing.xattrs.length; k += 3) {
    out[listing.xattrs[k] as number]!.xattrs.set(listing.xattrs[k + 1] as string, listing.xattrs[k + 2] as Buffer);
  }
  for (let k = 0; k < listing.links.length; k += 2) out[listing.links[k] as number]!.link = listing.links[k + 1] as string;
  return out;
}

/**
 * The full lstat (atime included) of `name` in the directory behind `dirFd`, through an
 * O_PATH|O_NOFOLLOW fd (never followed, never opened): null when it is gone, 'changed' when
 * it is no longer the inode entry `i` of `listing` named.
 */
export function lstatListed(dirFd: number, name: string, listing: DirStats, i: number): BigIntStats | null | 'changed' {
  let fd: number;
  try {
    fd = openatSync(dirFd, name, O_NODE_PATH);
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return null;
    throw err;
  }
  let st: BigIntStats;
  try {
    st = fstatSync(fd, { bigint: true });
  } finally {
    closeSync(fd);
  }
  const f = i * STAT_FIELDS;
  const ino = (BigInt(listing.stats[f + STAT.inoHi]!) << 32n) | BigInt(listing.stats[f + STAT.inoLo]!);
  return st.ino === ino && st.dev === BigInt(listing.stats[f + STAT.dev]!) ? st : 'changed';
}
