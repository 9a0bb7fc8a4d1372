// Bulk tree reads for diff and export: a directory's entries (or a batch of paths) with
// their lstat fields as plain numbers, xattrs and symlink targets, in one native call.
import { native } from './native.js';

/** Index of each lstat field within an entry's slice of {@link StatBatch.stats}. */
export const STAT = {
  mode: 0, uid: 1, gid: 2, size: 3, nlink: 4,
  /** The inode number's high and low 32 bits (kept apart so 64-bit inodes stay exact). */
  inoHi: 5, inoLo: 6,
  dev: 7, rdevMajor: 8, rdevMinor: 9,
  mtimeSec: 10, mtimeNsec: 11, ctimeSec: 12, ctimeNsec: 13,
} as const;
/** Numbers per entry in {@link StatBatch.stats}. */
export const STAT_FIELDS = 14;

/** {@link statDirSync} / {@link statPathsSync} flags: read every xattr (names and raw values). */
export const WALK_XATTRS = 1;
/** Read symlink targets. */
export const WALK_LINKS = 2;
/**
 * statDirSync only: take the file type from the directory entry (d_type) and skip the
 * lstat; the entry's mode holds only the S_IFMT bits and every other field is 0. Entries
 * whose filesystem reports no type are lstat'ed as usual.
 */
export const WALK_TYPES_ONLY = 4;

/** What one bulk call returns. */
export interface StatBatch {
  /** STAT_FIELDS numbers per entry, fields at the offsets in {@link STAT}. */
  stats: Float64Array;
  /** Flat triples [entryIndex, name, value]: only entries that have xattrs appear, in entry order. */
  xattrs: Array<number | string | Buffer>;
  /** Flat pairs [entryIndex, target] for the symlinks (WALK_LINKS). */
  links: Array<number | string>;
}

/** A directory listing with stats; `names[i]` is entry i. */
export interface DirStats extends StatBatch {
  names: string[];
}

/**
 * Lists `dir` (without '.' and '..', in the filesystem's order) with every entry's lstat,
 * through getdents + fstatat(AT_SYMLINK_NOFOLLOW) on the open directory; xattrs and link
 * targets are read relative to that directory, names never followed. With `root`, `dir`
 * is relative to it and opened beneath it without following a symlink (openat2
 * RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS): what a running container swaps in cannot lead the
 * listing outside the layer. Throws a Node-style error (syscall 'scandir' for the
 * directory itself — ELOOP/EXDEV for a symlink on the way under `root` —, 'lstat' for an
 * entry); an entry removed between listing and lstat is left out.
 */
export function statDirSync(dir: string, flags = 0, root?: string): DirStats {
  return native.statDirSync(dir, flags, root);
}

/**
 * lstat (never following the last component) of `base/rel` for each of `rels`, in one
 * call; each rel's parent is resolved beneath `base` without following a symlink. A path
 * that is not there (ENOENT/ENOTDIR, or a symlink or '..' on the way) has mode 0 and no
 * extras; any other failure throws.
 */
export function statPathsSync(base: string, rels: readonly string[], flags = 0): StatBatch {
  return native.statPathsSync(base, rels, flags);
}

/**
 * Opens `path` (O_NOFOLLOW|O_NONBLOCK: a fifo never blocks), refuses anything but a regular
 * file (EINVAL, before reading), reads up to `length` bytes from its start into
 * `buf[offset…]`, closes it, and returns how many bytes were read (fewer only at EOF).
 */
export function readFileIntoSync(path: string, buf: Uint8Array, offset: number, length: number): number {
  return native.readFileIntoSync(path, buf, offset, length);
}
