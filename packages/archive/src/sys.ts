// The few @cairnfs/sys calls the archive code needs, gathered here so this module states
// exactly what it depends on. None follows its last component, and the *at calls work
// relative to directory fds resolved beneath the layer root: applying a layer must never
// act through a symlink.
import { constants as fsConstants } from 'node:fs';
export {
  O_PATH, openDirBeneathSync, openatSync, mkdiratSync, mknodatSync, symlinkatSync, linkatSync, unlinkatSync,
  fchownFdSync, chmodFdSync, haveChmodFd, utimensFdSync, setxattratSync, readdirFdSync,
} from '@cairnfs/sys';

export const S_IFCHR = fsConstants.S_IFCHR;
export const S_IFBLK = fsConstants.S_IFBLK;
export const S_IFIFO = fsConstants.S_IFIFO;

/** glibc's dev_t split (gnu_dev_major/minor), in JS so stat results need no native call. */
export function devMajor(dev: bigint): number {
  return Number(((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn));
}
export function devMinor(dev: bigint): number {
  return Number((dev & 0xffn) | ((dev >> 12n) & ~0xffn));
}
