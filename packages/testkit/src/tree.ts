import { createHash } from 'node:crypto';
import type { BigIntStats } from 'node:fs';
import { lstat, readdir, readFile, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { lgetxattrSync, llistxattrSync } from '@cairnfs/sys';

export type EntryType = 'dir' | 'file' | 'symlink' | 'char' | 'block' | 'fifo' | 'socket';

/** Everything about one entry of a tree that a layer must reproduce exactly. */
export interface TreeEntry {
  type: EntryType;
  /** Permission bits incl. setuid/setgid/sticky, octal string, e.g. '4755'. */
  mode: string;
  uid: number;
  gid: number;
  /** Bytes of content for regular files; 0 for everything else (directory sizes are filesystem noise). */
  size: number;
  /** sha256 of a regular file's content. */
  sha256?: string;
  mtimeNs: string;
  /** Device number of char/block devices. */
  rdev?: string;
  /** Symlink target. */
  target?: string;
  /** xattr name → hex value. */
  xattrs: Record<string, string>;
  /**
   * For entries with several hardlinks inside the tree: the first path (sorted) of the
   * inode, the same for every name of it. Inode numbers differ between trees; groups do not.
   */
  linkGroup?: string;
}

/** A tree as path ('/' for the root, '/a/b' below) → entry. */
export type TreeSnapshot = Map<string, TreeEntry>;

function typeOf(st: BigIntStats): EntryType {
  if (st.isDirectory()) return 'dir';
  if (st.isFile()) return 'file';
  if (st.isSymbolicLink()) return 'symlink';
  if (st.isCharacterDevice()) return 'char';
  if (st.isBlockDevice()) return 'block';
  if (st.isFIFO()) return 'fifo';
  return 'socket';
}

function xattrsOf(path: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of llistxattrSync(path).sort()) {
    const value = lgetxattrSync(path, name);
    if (value !== null) out[name] = value.toString('hex');
  }
  return out;
}

/** Records every entry of the tree at `dir` (no symlink is followed). */
export async function snapshotTree(dir: string): Promise<TreeSnapshot> {
  const raw: Array<[string, TreeEntry, string | null]> = [];
  async function visit(rel: string): Promise<void> {
    const abs = rel === '/' ? dir : join(dir, rel);
    const st = await lstat(abs, { bigint: true });
    const type = typeOf(st);
    const entry: TreeEntry = {
      type,
      mode: (st.mode & 0o7777n).toString(8).padStart(4, '0'),
      uid: Number(st.uid),
      gid: Number(st.gid),
      size: type === 'file' ? Number(st.size) : 0,
      mtimeNs: st.mtimeNs.toString(),
      xattrs: xattrsOf(abs),
    };
    if (type === 'file') entry.sha256 = createHash('sha256').update(await readFile(abs)).digest('hex');
    if (type === 'char' || type === 'block') entry.rdev = st.rdev.toString();
    if (type === 'symlink') entry.target = await readlink(abs);
    raw.push([rel, entry, type !== 'dir' && st.nlink > 1n ? `${st.dev}:${st.ino}` : null]);
    if (type === 'dir') {
      for (const name of (await readdir(abs)).sort()) await visit(rel === '/' ? `/${name}` : `${rel}/${name}`);
    }
  }
  await visit('/');
  raw.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  const firstOfInode = new Map<string, string>();
  const byInodeCount = new Map<string, number>();
  for (const [, , ino] of raw) if (ino) byInodeCount.set(ino, (byInodeCount.get(ino) ?? 0) + 1);
  const snapshot: TreeSnapshot = new Map();
  for (const [path, entry, ino] of raw) {
    // A group only when two names of the inode are inside this tree.
    if (ino && byInodeCount.get(ino)! > 1) {
      if (!firstOfInode.has(ino)) firstOfInode.set(ino, path);
      entry.linkGroup = firstOfInode.get(ino)!;
    }
    snapshot.set(path, entry);
  }
  return snapshot;
}

export interface CompareOptions {
  /** Ignore the root directory's mtime (a changeset never carries the root). Default true. */
  ignoreRootMtime?: boolean;
  /** Ignore every directory's mtime. Default false. */
  ignoreDirMtimes?: boolean;
  /** Paths (as in the snapshot, '/a/b') left out of the comparison. */
  ignorePaths?: string[];
}

/** The snapshot as a plain object with ignored fields dropped: what expectSameTree compares. */
export function comparable(tree: TreeSnapshot, opts: CompareOptions = {}): Record<string, TreeEntry> {
  const ignoreRoot = opts.ignoreRootMtime ?? true;
  const out: Record<string, TreeEntry> = {};
  for (const [path, entry] of tree) {
    if (opts.ignorePaths?.includes(path)) continue;
    const copy: TreeEntry = { ...entry };
    if ((path === '/' && ignoreRoot) || (entry.type === 'dir' && opts.ignoreDirMtimes)) copy.mtimeNs = '(ignored)';
    out[path] = copy;
  }
  return out;
}

/** Asserts (with jest's expect, so a failure shows a per-path diff) that two trees are identical. */
export function expectSameTree(actual: TreeSnapshot, expected: TreeSnapshot, opts: CompareOptions = {}): void {
  expect(comparable(actual, opts)).toEqual(comparable(expected, opts));
}
