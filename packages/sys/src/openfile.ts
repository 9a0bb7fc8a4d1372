// Opening untrusted content for reading: beneath a root, never through a link, regular
// files only. See native/openfile.cc for the three steps.
import { native } from './native.js';

/** {@link openBeneathSync} flag: follow symlinks, but resolve them inside the root as if it
 *  were "/" (openat2 RESOLVE_IN_ROOT), so none can lead out. Without it any symlink on the
 *  way is refused (ELOOP). Either way magic links (/proc/…/fd) are refused. */
export const BENEATH_IN_ROOT = 1;
/** {@link openBeneathSync} flag, tests only: reopen by name and fstat-check, as a process
 *  without CAP_DAC_READ_SEARCH (or on a filesystem without file handles) does. */
export const BENEATH_NO_HANDLES = 2;

/** What {@link openBeneathSync} found. */
export interface BeneathFile {
  /** An fd open for reading (O_RDONLY|O_NONBLOCK|O_CLOEXEC); -1 when the name is not a regular file. The caller closes it. */
  fd: number;
  /** st_mode of what the name resolved to (type bits included). */
  mode: number;
  size: number;
  dev: bigint;
  ino: bigint;
  nlink: number;
  /** With fd -1: the name held a regular file when checked and no longer did when reopened (`mode` is what was found then). */
  changed: boolean;
}

/**
 * Opens `rel` below `root` (a path, or an fd of the directory) for reading, as every
 * host-side read of layer or image content must: resolved beneath the root without
 * following links (openat2 RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS, or
 * RESOLVE_IN_ROOT with {@link BENEATH_IN_ROOT}), first as an O_PATH fd that is fstat'ed.
 * Anything but a regular file (device, fifo, socket, directory) is never opened for
 * reading: the result has `fd` -1 and its `mode`. A regular file is reopened from a file
 * handle of that O_PATH fd where the process may, else by name and fstat-checked, so the
 * returned fd is the inode that was checked (`changed` when the name was swapped between).
 *
 * Throws a Node-style error: ELOOP (a symlink on the way), EXDEV (the name leads out of the
 * root: '..', an absolute name), ENOENT/ENOTDIR, … with `syscall` 'openat2' and `path` rel.
 */
export function openBeneathSync(root: number | string, rel: string, flags = 0): BeneathFile {
  return native.openBeneathSync(root, rel, flags);
}

/** A file type in words, for messages: "a block device", "a fifo", … */
export function fileTypeName(mode: number): string {
  switch (mode & 0o170000) {
    case 0o100000: return 'a regular file';
    case 0o040000: return 'a directory';
    case 0o120000: return 'a symlink';
    case 0o060000: return 'a block device';
    case 0o020000: return 'a character device';
    case 0o010000: return 'a fifo';
    case 0o140000: return 'a socket';
    default: return `an unknown file type (mode ${mode.toString(8)})`;
  }
}
