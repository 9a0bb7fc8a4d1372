import type { IdMappings } from '@cairnfs/core';
import type { ApplierDropped } from '@cairnfs/sys';

// The options of applyLayer, in a module of their own so that apply.ts (the pure-JS path and
// the entry point) and apply-native.ts (the default path) both depend on them and not on each other.

/** How whiteouts in the layer are applied; see {@link ApplyOptions.whiteouts}. */
export type WhiteoutMode = 'delete' | 'overlay' | 'aufs';

export interface ApplyOptions {
  /**
   * - `delete` (default): `.wh.<name>` removes `<name>`; `.wh..wh..opq` empties its
   *   directory of whatever was there before this apply (entries this same tar added
   *   stay). For drivers whose layer directory already holds the parent's tree (vfs,
   *   btrfs, zfs, devicemapper).
   * - `overlay`: `dir` is an overlayfs upper directory. `.wh.<name>` becomes a 0/0
   *   character device `<name>` with mode 0000, `.wh..wh..opq` sets
   *   `trusted.overlay.opaque=y` on its directory. Nothing is deleted.
   * - `aufs`: whiteouts are written as the plain `.wh.` files they are (aufs layout).
   */
  whiteouts?: WhiteoutMode;
  /** Refuse character and block devices with ERR_UNSAFE_ARCHIVE (fifos are still made). */
  noDevices?: boolean;
  /** Apply the entries' uid/gid (lchown). Default: true when running as root. */
  ownership?: boolean;
  /**
   * Store every owner shifted container → host by these maps (containers/storage's way of
   * keeping a layer for a user-namespaced container); an owner they do not cover is
   * ERR_INVALID_OPTION. diff/export given the same maps shift back.
   */
  idMappings?: IdMappings;
  /**
   * Rootless with a single id: a chown the kernel refuses (EPERM/EINVAL), or an owner
   * outside idMappings, leaves the file owned by the caller instead of failing. What was
   * dropped is reported once per apply as a process warning (code CAIRN_CHOWN_DROPPED).
   */
  ignoreChownErrors?: boolean;
  /**
   * Told, once the apply is done, what it left undone because the process could not
   * (chowns dropped under ignoreChownErrors, devices recorded as placeholders). Default:
   * a process warning for each kind (codes CAIRN_CHOWN_DROPPED, CAIRN_DEVICES_RECORDED).
   */
  report?: (dropped: ApplierDropped) => void;
  /** overlay whiteouts for a mount with `userxattr` (in a user namespace): opaque dirs get `user.overlay.opaque`. */
  userXattr?: boolean;
  /**
   * Parse and write in JavaScript (tar-parser.ts and node:fs calls, on the calling thread)
   * instead of @cairnfs/sys's native LayerApplier. Default: false, unless the environment
   * sets `CAIRN_PURE_JS=1`. Both paths apply the same rules and pass the same tests; the
   * native one is faster (see docs/benchmarks.md).
   */
  pureJs?: boolean;
  /**
   * Native path: do the parse and the file work on libuv's thread pool, so the caller's
   * thread stays free to read and decompress and several applies use several cores.
   * Default: true on the main thread, unless `CAIRN_APPLY_THREAD=0`; false runs it on
   * the calling thread.
   */
  offThread?: boolean;
}
