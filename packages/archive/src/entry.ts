/** The kinds of tar entry cairn understands. Sockets have no tar type; other tar types are skipped. */
export type TarEntryType = 'file' | 'dir' | 'symlink' | 'hardlink' | 'char' | 'block' | 'fifo';

/** One data segment of a sparse file: `length` bytes of stored data land at `offset`. */
export interface SparseSegment {
  offset: number;
  length: number;
}

/**
 * A sparse file's layout. The entry's body carries only the segments' bytes, in map
 * order; everything else in `[0, realSize)` is a hole.
 */
export interface SparseMap {
  realSize: number;
  segments: SparseSegment[];
}

/**
 * One archive entry with every dialect (ustar, GNU, PAX, v7) resolved: long names,
 * PAX overrides, base-256 numbers and sparse maps are already applied.
 */
export interface TarEntry {
  /** Path as written in the archive (GNU long name / PAX `path` applied), not normalised. */
  name: string;
  type: TarEntryType;
  /** Permission bits plus setuid/setgid/sticky (0o7777); never file-type bits. */
  mode: number;
  uid: number;
  gid: number;
  /** Owner and group names; informational only (cairn applies numeric ids, as moby does). */
  uname: string;
  gname: string;
  /**
   * Bytes of content for files: the logical size (for sparse files the real size, of
   * which only the `sparse.segments` are stored). 0 for every other type.
   */
  size: number;
  /** Modification time in nanoseconds since the epoch (PAX fractions kept exactly). */
  mtimeNs: bigint;
  /** Access time when the archive carries one (PAX `atime` or a GNU header field). */
  atimeNs?: bigint;
  /** Target of a symlink (any text) or of a hardlink (a path inside the archive). */
  linkname?: string;
  devmajor: number;
  devminor: number;
  /** Extended attributes from `SCHILY.xattr.*` / `LIBARCHIVE.xattr.*`, values as raw bytes. */
  xattrs: Map<string, Buffer>;
  /** Present for GNU sparse files (old GNU 'S', PAX 0.0, 0.1 and 1.0). */
  sparse?: SparseMap;
}
