import type { BigIntStats } from 'node:fs';
import { lstat, readdir, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import pLimit from 'p-limit';
import { lgetxattrSync, llistxattrSync } from '@cairn/sys';
import type { Change } from './driver.js';
import { errnoCode } from './errors.js';

/**
 * The naive diff: walks a layer's full tree next to its parent's and says which paths
 * differ, as moby's archive.ChangesDirs does, with three corrections:
 *
 * - mtimes are compared to the nanosecond (moby's sameFsTime truncates when either side
 *   has whole seconds, so a same-size edit within one second can slip through);
 * - every xattr is compared, not only `security.capability`;
 * - symlink targets are compared (moby relies on size+mtime catching a retarget).
 *
 * What is deliberately *not* compared, as in moby: inode numbers and ctime (both change
 * when a tree is copied, so every file of a vfs child would look modified), and the
 * size and mtime of directories (a directory's mtime moves whenever a child is added or
 * removed; see moby/moby#9874). A regular file rewritten with identical size, mode,
 * owner and nanosecond mtime is reported unchanged: only a content comparison could
 * catch that, which would make every diff read every file.
 *
 * A directory that holds a changed entry is itself reported `modify` (moby does the
 * same so the exported tar carries the directory's owner and mode along). The root is
 * never reported. Deleting a subtree reports only its top. The result is sorted by
 * path, component by component, so a directory always precedes its contents.
 *
 * File names that are not valid UTF-8 are not supported: Node decodes them lossily.
 */
export async function changesBetween(layerDir: string, parentDir: string | null): Promise<Change[]> {
  const walker = new TreeComparer(layerDir, parentDir);
  await walker.compareDir('', parentDir !== null);
  return sortChanges(walker.changes);
}

/**
 * The bytes a changeset would carry: the sizes of the regular files it adds or modifies,
 * a file with several hardlinks counted once (moby's archive.ChangesSize).
 */
export async function diffSizeOf(layerDir: string, changes: readonly Change[]): Promise<number> {
  const limit = pLimit(32);
  const seen = new Set<string>();
  const sizes = await Promise.all(changes.map((change) => limit(async () => {
    if (change.kind === 'delete') return 0;
    let st: BigIntStats;
    try {
      st = await lstat(join(layerDir, change.path), { bigint: true });
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return 0; // gone since the changes were computed
      throw err;
    }
    if (!st.isFile()) return 0;
    if (st.nlink > 1n) {
      const key = `${st.dev}:${st.ino}`;
      if (seen.has(key)) return 0;
      seen.add(key);
    }
    return Number(st.size);
  })));
  return sizes.reduce((a, b) => a + b, 0);
}

/** Every xattr of `path` itself (never a symlink's target), by name; empty where xattrs are unsupported. */
export function readXattrs(path: string): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  let names: string[];
  try {
    names = llistxattrSync(path);
  } catch (err) {
    if (errnoCode(err) === 'ENOTSUP' || errnoCode(err) === 'EOPNOTSUPP') return out;
    throw err;
  }
  for (const name of names) {
    const value = lgetxattrSync(path, name);
    if (value !== null) out.set(name, value);
  }
  return out;
}

function sameXattrs(a: Map<string, Buffer>, b: Map<string, Buffer>): boolean {
  if (a.size !== b.size) return false;
  for (const [name, value] of a) {
    const other = b.get(name);
    if (!other || !other.equals(value)) return false;
  }
  return true;
}

/** Compares the stat fields moby compares, plus nanosecond mtimes; see changesBetween. */
export function statDiffers(old: BigIntStats, now: BigIntStats): boolean {
  if (old.mode !== now.mode || old.uid !== now.uid || old.gid !== now.gid || old.rdev !== now.rdev) return true;
  if (now.isDirectory()) return false;
  return old.size !== now.size || old.mtimeNs !== now.mtimeNs;
}

/** Lists a directory's names, or none when it is not there. */
async function namesIn(dir: string): Promise<string[]> {
  try {
    return await readdir(dir);
  } catch (err) {
    if (errnoCode(err) === 'ENOENT' || errnoCode(err) === 'ENOTDIR') return [];
    throw err;
  }
}

class TreeComparer {
  readonly changes: Change[] = [];
  // Bounds the fs calls in flight, not the recursion: only leaf calls take a slot, so a
  // directory waiting for its children never holds one (no deadlock on deep trees).
  private readonly limit = pLimit(32);

  constructor(private readonly layer: string, private readonly parent: string | null) {}

  /**
   * Compares directory `rel` ('' for the root) of the layer with the parent's. When
   * `parentHasDir` is false every entry below is an addition. Returns true when
   * anything below changed.
   */
  async compareDir(rel: string, parentHasDir: boolean): Promise<boolean> {
    const [names, parentNames] = await Promise.all([
      this.limit(() => readdir(join(this.layer, rel))),
      parentHasDir && this.parent !== null ? this.limit(() => namesIn(join(this.parent!, rel))) : Promise.resolve([]),
    ]);
    const inParent = new Set(parentNames);
    const inLayer = new Set(names);
    let changed = false;
    for (const name of parentNames) {
      if (!inLayer.has(name)) {
        this.changes.push({ path: `${rel}/${name}`, kind: 'delete' });
        changed = true;
      }
    }
    const results = await Promise.all(names.map((name) => this.compareEntry(`${rel}/${name}`, inParent.has(name))));
    return changed || results.some(Boolean);
  }

  private async compareEntry(rel: string, inParent: boolean): Promise<boolean> {
    const now = await this.limit(() => lstat(join(this.layer, rel), { bigint: true }));
    if (!inParent) {
      this.changes.push({ path: rel, kind: 'add' });
      if (now.isDirectory()) await this.compareDir(rel, false);
      return true;
    }
    const old = await this.limit(() => lstat(join(this.parent!, rel), { bigint: true }));
    const modified = await this.limit(() => this.entryDiffers(rel, old, now));
    if (modified) this.changes.push({ path: rel, kind: 'modify' });
    if (!now.isDirectory()) return modified;
    const below = await this.compareDir(rel, old.isDirectory());
    // A directory holding a change is reported too, so its metadata travels with it.
    if (below && !modified) this.changes.push({ path: rel, kind: 'modify' });
    return modified || below;
  }

  private async entryDiffers(rel: string, old: BigIntStats, now: BigIntStats): Promise<boolean> {
    if (statDiffers(old, now)) return true;
    if (now.isSymbolicLink()) {
      const [a, b] = await Promise.all([readlink(join(this.parent!, rel)), readlink(join(this.layer, rel))]);
      if (a !== b) return true;
    }
    return !sameXattrs(readXattrs(join(this.parent!, rel)), readXattrs(join(this.layer, rel)));
  }
}

/** Sorts by path component by component: '/a', '/a/b', '/a-b' (a directory before its contents). */
export function sortChanges(changes: Change[]): Change[] {
  const keyed = changes.map((c) => ({ c, parts: c.path.split('/') }));
  keyed.sort((x, y) => {
    const n = Math.min(x.parts.length, y.parts.length);
    for (let i = 0; i < n; i++) {
      const a = x.parts[i]!;
      const b = y.parts[i]!;
      if (a !== b) return a < b ? -1 : 1;
    }
    return x.parts.length - y.parts.length;
  });
  return keyed.map((k) => k.c);
}
