// What the tar parser refuses to hold or do, and the PAX keys it keeps: the caps that keep
// it linear in its input and bounded in memory (docs/reliability.md lists them).

/**
 * Caps on what an archive can make the parser hold or do, each refused with
 * ERR_INVALID_ARCHIVE naming the limit. The addon's reader (packages/sys/native/tar_reader.h,
 * TarLimits) has the same numbers, so both paths end a hostile archive the same way; the
 * caps are listed in docs/reliability.md.
 */
export const TAR_LIMITS = {
  /** One 'x', 'g', 'L' or 'K' body, in bytes. Go's archive/tar, which moby reads layers with, refuses larger ones too. */
  extendedHeader: 1 << 20,
  /** The 'x' bodies before one entry, together (each may be fine, a run of them is not). */
  localPax: 1 << 20,
  /**
   * The global ('g') records in force: bytes of the keys and values kept. Only keys an entry
   * can use are kept (the others have no effect), and every later entry applies them, so
   * this bounds the work per entry too.
   */
  globalPax: 64 << 10,
  /** Segments of one sparse file's map (any GNU sparse format). */
  sparseSegments: 1 << 18,
  /** Logical size of all sparse files of one archive together, in bytes (holes cost no input). */
  sparseTotal: 2 ** 40,
} as const;

/** The global PAX keys buildEntry uses; other global records are dropped when read. */
const GLOBAL_KEYS = new Set(['path', 'linkpath', 'size', 'uid', 'gid', 'uname', 'gname', 'mtime', 'atime',
  'SCHILY.devmajor', 'SCHILY.devminor', 'GNU.sparse.major', 'GNU.sparse.minor', 'GNU.sparse.name',
  'GNU.sparse.realsize', 'GNU.sparse.size', 'GNU.sparse.map']);

export function globalKeyMatters(k: string): boolean {
  return GLOBAL_KEYS.has(k) || k.startsWith('SCHILY.xattr.') || k.startsWith('LIBARCHIVE.xattr.');
}

/** The GNU.sparse.* records that mean something (the others are ignored). */
export const SPARSE_KEYS = new Set(['major', 'minor', 'name', 'realsize', 'size', 'map']);
