// Layer export in the addon: the tar of a layer directory (or of changed paths in it)
// written straight into caller-supplied buffers, with no JS work per entry.
import { native, type IdRanges } from './native.js';

/** {@link openTarPacker} flag: overlayfs whiteouts (0/0 char device → `.wh.<name>`, opaque dir → `.wh..wh..opq`). */
export const PACK_OVERLAY = 1;
/**
 * {@link openTarPacker} walk-mode flag: entries in the order of their full paths as
 * strings, as exportChanges sorts a change list ('a', 'a-b', 'a/x'), instead of
 * directory by directory ('a', 'a/x', 'a-b').
 */
export const PACK_PATH_ORDER = 2;
/**
 * {@link openTarPacker} flag, tests only: take the paths an older kernel or an unprivileged
 * caller takes (xattrs read on a helper thread instead of with listxattrat/getxattrat,
 * files opened by name instead of through a file handle).
 */
export const PACK_LEGACY_KERNEL = 4;
/**
 * {@link openTarPacker} flag: pack entries whose name starts with `.wh.` as they are.
 * Without it such an entry fails the pack with `cairnCode` 'ERR_UNSAFE_ARCHIVE' (`detail`
 * 'whiteout-name'): in a layer tar the name means a deletion, so a file a container made
 * must not be packed under it. For aufs branches, whose `.wh.` files are their whiteouts.
 */
export const PACK_KEEP_WHITEOUT_NAMES = 8;
/**
 * {@link openTarPacker} flag, tests only: files reopened through handles, as where this
 * process may not clone mounts (no nodev view of the root: see native/nodevview.h).
 */
export const PACK_NO_NODEV_VIEW = 16;

/**
 * A tar packer on a layer directory. Entries are exactly those of `@cairnfs/core`'s
 * exportChanges/exportOverlayUpper (ustar headers, PAX records for long names and links,
 * big ids and sizes, nanosecond mtimes, `SCHILY.xattr.*` for xattrs other than
 * overlayfs' and SELinux's; the 2nd and later paths of an inode as hardlinks; sockets
 * skipped). Paths are resolved beneath the root with openat, one directory component
 * at a time and never through a symlink; a regular file's content (and xattrs) are read
 * from an fd checked to be the very file its header was built from (same type, device
 * and inode), opened through a file handle where the process may (so nothing else is
 * ever opened) and otherwise by name with O_NOFOLLOW|O_NONBLOCK; the xattrs of other
 * nodes are read by name relative to their directory fd, never followed.
 *
 * Errors are thrown by `fill` and close the packer: Node-style errno errors (`code`,
 * `syscall`, `path`), or an Error with `cairnCode` 'ERR_LAYER_NOT_FOUND' (a pushed path is
 * not there), or 'ERR_INVALID_ARCHIVE' (`detail` 'short:<size>': a file is shorter than
 * its lstat size; 'changed': a path no longer holds what its lstat saw — a file replaced
 * by a device, a fifo or another file while packing; 'xattr:<name>': an xattr name with
 * '=' that PAX cannot carry), with `subject` the entry's path; or 'ERR_UNSAFE_ARCHIVE'
 * (`detail` 'whiteout-name', see {@link PACK_KEEP_WHITEOUT_NAMES}).
 */
export interface TarPacker {
  /** Queues relative, normalised paths (never the root) in archive order; `deletes[i]` ≠ 0 packs rels[i] as `.wh.` whiteout. */
  push(rels: readonly string[], deletes: Uint8Array): void;
  /** No more paths: the next fills finish the queue and write the end-of-archive blocks. */
  end(): void;
  /**
   * Writes the archive into `buf` from `offset` and returns the new offset: `buf.length`
   * when full; less when the queued paths are used up (push more, or end) or the
   * archive is complete (after end, or in walk mode).
   */
  fill(buf: Uint8Array, offset: number): number;
  /** Releases every fd; idempotent. */
  close(): void;
}

/**
 * Opens a packer on `root`. `walk`: pack the whole tree (every entry below the root,
 * depth-first, each directory's names in JS sort() order, as exportOverlayUpper; or
 * with PACK_PATH_ORDER in full-path order);
 * otherwise pack the paths given to push (as exportChanges). `idMappings`: the tree is
 * stored shifted by these maps; owners are packed host → container (an owner outside them
 * fails with EOVERFLOW). Placeholders of devices an unprivileged apply could not make
 * (RECORDED_DEVICE_XATTR) are packed as those devices.
 */
export function openTarPacker(root: string, flags = 0, walk = false, idMappings: IdRanges | null = null): TarPacker {
  return new native.TarPacker(root, flags, walk, idMappings);
}
