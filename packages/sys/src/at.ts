// The *at calls node:fs lacks, for JS code that must work on layer content through
// directory fds (the pure-JS layer applier in @cairnfs/archive): each name is relative to a
// directory fd resolved beneath the layer root, and no call follows its last component.
// One syscall each (native/atcalls.cc); never /proc/self/fd. Errors are Node-style
// (`code`, `syscall`, `path` the name given).
import { native } from './native.js';

/** open(2) flag O_PATH (not in node:fs.constants): an fd naming a node without opening it. */
export const O_PATH = 0o10000000;

/**
 * An O_PATH fd of directory `rel` beneath the directory fd `rootFd`, never through a
 * symlink, a magic link or '..' (openat2 RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|
 * RESOLVE_NO_MAGICLINKS; an O_NOFOLLOW walk where openat2 is missing). ELOOP/EXDEV for a
 * symlink or '..' on the way. The caller closes it.
 */
export function openDirBeneathSync(rootFd: number, rel: string): number {
  return native.openDirBeneathSync(rootFd, rel);
}

/** openat(2) with O_CLOEXEC added; pass O_NOFOLLOW (and {@link O_PATH} for a node that must not be opened). */
export function openatSync(dirfd: number, name: string, flags: number, mode = 0): number {
  return native.openatSync(dirfd, name, flags, mode);
}

/** mkdirat(2). */
export function mkdiratSync(dirfd: number, name: string, mode: number): void {
  native.mkdiratSync(dirfd, name, mode);
}

/** mknodat(2); `exact`: the permission bits as given, the umask not applied (for kernels without {@link haveChmodFd}). */
export function mknodatSync(dirfd: number, name: string, mode: number, major: number, minor: number, exact = false): void {
  native.mknodatSync(dirfd, name, mode, major, minor, exact);
}

/** symlinkat(2). */
export function symlinkatSync(target: string, dirfd: number, name: string): void {
  native.symlinkatSync(target, dirfd, name);
}

/** linkat(2) with flags 0: a symlink is linked as itself, never followed. */
export function linkatSync(olddirfd: number, oldname: string, newdirfd: number, newname: string): void {
  native.linkatSync(olddirfd, oldname, newdirfd, newname);
}

/** unlinkat(2); `removeDir`: AT_REMOVEDIR. */
export function unlinkatSync(dirfd: number, name: string, removeDir = false): void {
  native.unlinkatSync(dirfd, name, removeDir);
}

/** fchownat(fd, "", uid, gid, AT_EMPTY_PATH): the node behind an O_PATH fd (a symlink itself) or any fd. */
export function fchownFdSync(fd: number, uid: number, gid: number): void {
  native.fchownFdSync(fd, uid, gid);
}

/**
 * The mode of the node behind an O_PATH fd: fchmodat2(fd, "", mode, AT_EMPTY_PATH) (Linux
 * 6.6). Without it, a directory (`isDir`) is chmodded as "." of its fd; anything else
 * fails with ENOSYS (give the mode at mknod time instead: {@link mknodatSync} `exact`).
 */
export function chmodFdSync(fd: number, mode: number, isDir = false): void {
  native.chmodFdSync(fd, mode, isDir);
}

/** Whether {@link chmodFdSync} works on any node on this kernel (fchmodat2). */
export function haveChmodFd(): boolean {
  return native.haveChmodFdSync();
}

/** utimensat(fd, "", AT_EMPTY_PATH) with nanoseconds; where the kernel refuses that, dirfd/name with AT_SYMLINK_NOFOLLOW. */
export function utimensFdSync(fd: number, dirfd: number, name: string, atimeNs: bigint, mtimeNs: bigint): void {
  native.utimensFdSync(fd, dirfd, name, atimeNs, mtimeNs);
}

/** setxattr on dirfd/name, name never followed ("." is the directory itself). */
export function setxattratSync(dirfd: number, name: string, key: string, value: Uint8Array): void {
  native.setxattratSync(dirfd, name, key, value);
}

/** The names in the directory behind `dirfd` (an O_PATH fd is fine), without '.' and '..'. */
export function readdirFdSync(dirfd: number): string[] {
  return native.readdirFdSync(dirfd);
}

/** ioctl(dstFd, FICLONE, srcFd): dst shares src's extents (btrfs, xfs with reflink=1). EOPNOTSUPP/EXDEV/EINVAL where it cannot. */
export function cloneFdSync(srcFd: number, dstFd: number): void {
  native.cloneFdSync(srcFd, dstFd);
}

/** Copies srcFd (from its offset) to dstFd until EOF: copy_file_range, read/write where refused. Returns the bytes copied. */
export function copyFdSync(srcFd: number, dstFd: number): number {
  return native.copyFdSync(srcFd, dstFd);
}

/** {@link copyFdSync} on the thread pool, for large files. */
export function copyFd(srcFd: number, dstFd: number): Promise<void> {
  return native.copyFd(srcFd, dstFd);
}
