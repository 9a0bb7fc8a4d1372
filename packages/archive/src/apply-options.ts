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
