/**
 * @cairnfs/sys — the Linux syscalls Node lacks, as a small Node-API addon: mount(2) and the new
 * mount API, umount2(2), mknod(2), l*xattr(2) (never following symlinks), utimensat(2) with
 * nanoseconds, flock(2) and dev_t packing.
 *
 * Async functions run on the libuv thread pool and return promises; `*Sync` variants exist
 * for hot loops (layer extraction) where a ~µs call beats a promise round-trip.
 *
 * Failures are Node-style `Error`s, like node:fs errors: `code` ('EPERM', 'ENOENT', …),
 * `errno` (negative, as in node:fs), `syscall` ('mount', 'fsconfig', …), `path`, and for
 * mounts `dest` (the target), with messages such as
 * "EPERM: operation not permitted, mount 'src' -> 'target'".
 * Arguments of the wrong type throw `TypeError` synchronously.
 * @packageDocumentation
 */
import { native, type IdRanges, type NativeConstants } from './native.js';
export type { IdRange, IdRanges, NativeConstants } from './native.js';

/** Gives an async failure the stack of the code that made the call: errors settled on the
 *  JS thread after pool work carry no JS frames at all, which makes "EBUSY, umount2" in a
 *  big driver hard to place. Only the mount calls use it: capturing a stack costs a few µs
 *  (measured 3-8 µs here), noise next to a ~150 µs mount but a real tax on the per-file
 *  mknod/xattr calls a layer applier makes by the thousand. */
function traced<T>(promise: Promise<T>, caller: (...args: never[]) => unknown): Promise<T> {
  const site: { stack?: string } = {};
  Error.captureStackTrace(site, caller);
  return promise.catch((err: unknown) => {
    // No instanceof: native errors belong to the main realm, not e.g. a jest vm context.
    if (typeof err === 'object' && err !== null && typeof (err as Error).message === 'string' && site.stack !== undefined) {
      const e = err as Error;
      e.stack = `${e.name}: ${e.message}${site.stack.slice(site.stack.indexOf('\n'))}`;
    }
    throw err;
  });
}

/** Node-style error thrown or rejected by every call in this package. */
export interface SysError extends Error {
  code: string;
  errno: number;
  syscall: string;
  path?: string;
  dest?: string;
  /** fsMount only: the fsconfig key the kernel refused. */
  param?: string;
}

/** Flag values from the C headers this addon was compiled against. */
export const constants: NativeConstants = native.constants;

/** mount(2). `fstype`/`data` null pass NULL (bind mounts, remounts, propagation changes). */
export function mount(source: string, target: string, fstype: string | null, flags: number, data?: string | null): Promise<void> {
  return traced(native.mount(source, target, fstype, flags, data ?? null), mount);
}

/** Like mount, but relative paths in `source`/`target`/`data` resolve against `cwd`: the call runs
 *  on a thread that did unshare(CLONE_FS) + chdir(cwd), so the process's cwd never changes.
 *  (overlay2 needs this when absolute lowerdir paths do not fit in one page of mount data.) */
export function mountAt(cwd: string, source: string, target: string, fstype: string | null, flags: number, data?: string | null): Promise<void> {
  return traced(native.mountAt(cwd, source, target, fstype, flags, data ?? null), mountAt);
}

/** umount2(2); `flags` are MNT_* / UMOUNT_NOFOLLOW (default 0). */
export function umount2(target: string, flags?: number): Promise<void> {
  return traced(native.umount2(target, flags ?? 0), umount2);
}

/** The new mount API: fsopen(fstype) → fsconfig for each param (value null = FSCONFIG_SET_FLAG,
 *  else FSCONFIG_SET_STRING; params applied in order, so `lowerdir+` may repeat, one layer per
 *  call, lifting the one-page limit) → FSCONFIG_CMD_CREATE → fsmount(attrFlags) → move_mount to
 *  target. `cwd` as in mountAt (relative paths in values). On failure the error message includes
 *  the kernel's log messages read from the fs context fd, when any; `syscall` names the failing
 *  step, `path` is the target and `param` the refused key. attr flags: readOnly →
 *  MOUNT_ATTR_RDONLY. */
export function fsMount(
  fstype: string,
  source: string | null,
  params: Array<[string, string | null]>,
  target: string,
  opts?: { readOnly?: boolean; cwd?: string },
): Promise<void> {
  return traced(native.fsMount(fstype, source, params, target, opts?.readOnly ?? false, opts?.cwd ?? null), fsMount);
}

/** true when this kernel has fsopen (the new mount API). Probed once per process. */
export function hasNewMountApi(): boolean {
  return native.hasNewMountApi();
}

/** mknod(2); `mode` includes the S_IF* type bits (e.g. `constants.S_IFCHR | 0o000` for a whiteout). */
export function mknodSync(path: string, mode: number, major: number, minor: number): void {
  native.mknodSync(path, mode, major, minor);
}

/** mknod(2) on the thread pool. */
export function mknod(path: string, mode: number, major: number, minor: number): Promise<void> {
  return native.mknod(path, mode, major, minor);
}

/** lsetxattr(2): sets an xattr on `path` itself (a symlink is not followed). Value is raw bytes. */
export function lsetxattrSync(path: string, name: string, value: Buffer | Uint8Array, flags?: number): void {
  native.lsetxattrSync(path, name, value, flags);
}

/** lgetxattr(2): the raw value, or null when the attribute does not exist (ENODATA). */
export function lgetxattrSync(path: string, name: string): Buffer | null {
  return native.lgetxattrSync(path, name);
}

/** llistxattr(2): attribute names visible to this process. */
export function llistxattrSync(path: string): string[] {
  return native.llistxattrSync(path);
}

/** lremovexattr(2); ENODATA when the attribute does not exist. */
export function lremovexattrSync(path: string, name: string): void {
  native.lremovexattrSync(path, name);
}

/** lsetxattr(2) on the thread pool. */
export function lsetxattr(path: string, name: string, value: Buffer | Uint8Array, flags?: number): Promise<void> {
  return native.lsetxattr(path, name, value, flags);
}

/** lgetxattr(2) on the thread pool; null on ENODATA. */
export function lgetxattr(path: string, name: string): Promise<Buffer | null> {
  return native.lgetxattr(path, name);
}

/** llistxattr(2) on the thread pool. */
export function llistxattr(path: string): Promise<string[]> {
  return native.llistxattr(path);
}

/** lremovexattr(2) on the thread pool. */
export function lremovexattr(path: string, name: string): Promise<void> {
  return native.lremovexattr(path, name);
}

/** utimensat(AT_FDCWD, path, [atime, mtime], AT_SYMLINK_NOFOLLOW) with nanosecond bigints
 *  (Node's utimes goes through a double and loses nanoseconds). */
export function lutimesNsSync(path: string, atimeNs: bigint, mtimeNs: bigint): void {
  native.lutimesNsSync(path, atimeNs, mtimeNs);
}

/** flock(2): returns false when LOCK_NB was given and the lock is held elsewhere (EWOULDBLOCK).
 *  Without LOCK_NB this blocks the calling thread (the event loop) until the lock is granted. */
export function flockSync(fd: number, operation: number): boolean {
  return native.flockSync(fd, operation);
}

/** The major number of a dev_t, as glibc's gnu_dev_major (Stats.rdev is a number). */
export function major(dev: number | bigint): number {
  return native.major(dev);
}

/** The minor number of a dev_t, as glibc's gnu_dev_minor. */
export function minor(dev: number | bigint): number {
  return native.minor(dev);
}

/**
 * `Buffer.allocUnsafe(size)` with its memory mapped up front (one MADV_POPULATE_WRITE):
 * for a fresh read buffer that a read() fills at once, this replaces one page fault per
 * 4 KiB with a single call (a quarter or more of a layer read's CPU on a VM where each
 * fault traps; docs/benchmarks.md). Still a new buffer each call, so consumers may keep it.
 */
export function allocPopulated(size: number): Buffer {
  const buf = Buffer.allocUnsafe(size);
  if (size >= 64 * 1024) native.populateSync(buf);
  return buf;
}

/** Packs a dev_t as glibc's gnu_dev_makedev. */
export function makedev(major: number, minor: number): number {
  return native.makedev(major, minor);
}
/**
 * A new user namespace whose uid and gid maps are `maps` (container id → host id), kept
 * alive by the returned fd (close it when done; the namespace goes with the last fd). A
 * child is cloned into the namespace, its /proc/<pid>/uid_map and gid_map are written,
 * /proc/<pid>/ns/user is opened and the child exits. Needs CAP_SETUID/CAP_SETGID over the
 * host ids (root, or root of a user namespace that maps them). About 0.3-2 ms.
 */
export function makeUserNamespace(maps: IdRanges): number {
  return native.makeUserNamespaceSync(maps);
}

/**
 * Mounts `source` at `target` (an existing directory) through an id-mapped mount: a clone
 * of the tree (open_tree OPEN_TREE_CLONE) gets MOUNT_ATTR_IDMAP with the user namespace
 * `usernsFd` (mount_setattr), then is attached (move_mount). Files owned by container id
 * N show as owned by the map's host id for N; files created through it are stored back
 * in container ids. EINVAL from mount_setattr: the filesystem cannot be id-mapped.
 */
export function idmappedMount(source: string, target: string, usernsFd: number, opts?: { readOnly?: boolean; recursive?: boolean }): Promise<void> {
  return traced(native.idmappedMount(source, target, usernsFd, opts?.readOnly ?? false, opts?.recursive ?? false), idmappedMount);
}

/**
 * Whether `source`'s filesystem can be id-mapped by this caller: the same open_tree +
 * mount_setattr(MOUNT_ATTR_IDMAP) as idmappedMount on a detached clone that is never
 * attached anywhere, so nothing can be left mounted (even by a process killed midway).
 * Rejects with the kernel's error (EINVAL: no FS_ALLOW_IDMAP; EPERM; ENOSYS).
 */
export function idmappedMountCheck(source: string, usernsFd: number): Promise<void> {
  return traced(native.idmappedMount(source, '', usernsFd, true, false), idmappedMountCheck);
}

/**
 * Re-owns every entry of the tree at `root` (root included) by the maps: container → host
 * when `toHost`, else back. Walks beneath `root` through O_PATH|O_NOFOLLOW fds (never a
 * symlink followed), each hardlinked inode once, setuid/setgid bits kept. An owner the map
 * does not cover fails with EOVERFLOW and the path. The fallback where a filesystem cannot
 * be id-mapped (a chown copy of a container's view).
 */
export function shiftOwnership(root: string, maps: IdRanges, toHost: boolean): Promise<void> {
  return traced(native.shiftOwnership(root, maps, toHost), shiftOwnership);
}

/**
 * Deletes the tree at `path` (a file, symlink or directory) on the thread pool without
 * following any symlink: each entry is removed relative to its parent's fd, directories
 * are entered with O_NOFOLLOW, and a mount point inside the tree is never descended into
 * (EBUSY naming it). A missing `path` is not an error. For layer trees, where a process
 * may swap a directory for a symlink while it is removed (Node's recursive rm works by
 * path and would then delete what the link points to).
 */
export function removeTree(path: string): Promise<void> {
  return traced(native.removeTree(path), removeTree);
}

export * from './btrfs.js';
export * from './quota.js';

export * from './applier.js';
export * from './splitreplay.js';
export * from './walk.js';
export * from './tarpack.js';
export * from './openfile.js';
export * from './at.js';
export * from './durable.js';
export * from './zstd.js';
