import type { BigIntStats } from 'node:fs';
import { lstatSync, readdirSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { errnoCode, readXattrs, sameXattrMaps } from '@cairnfs/core';
import { sortChanges, statDiffers } from '@cairnfs/archive';
import type { Change } from '@cairnfs/core';
import { WH_META_PREFIX, WH_OPAQUE, WH_PREFIX } from './layout.js';

/**
 * Changes and native export straight from aufs branch directories, no mount needed.
 *
 * A layer's `diff/<id>` holds its changes against its direct parent with aufs'
 * whiteouts as plain files. The parent's view of a path is resolved through the
 * ancestors' diff dirs as aufs resolves it: the topmost branch holding a name shows it;
 * a `.wh.<name>` file hides that name in every branch below; a directory merges with
 * the directories below it until a branch whose directory holds `.wh..wh..opq`, or a
 * non-directory, ends the merge. Comparisons are core's (statDiffers, xattrs, symlink
 * targets), so the result equals a naive walk of the two mounted trees.
 */

function namesOf(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch (err) {
    if (errnoCode(err) === 'ENOENT' || errnoCode(err) === 'ENOTDIR') return [];
    throw err;
  }
}

/** True for aufs' own entries (`.wh..wh.plnk`, `.wh..wh.aufs`, …) that are never layer content. */
export function isAufsMeta(name: string): boolean {
  return name.startsWith(WH_META_PREFIX) && name !== WH_OPAQUE;
}

interface OldEntry {
  path: string;
  stat: BigIntStats;
  /** For directories: the branch directories merged into it, topmost first. */
  branches: string[];
}

interface Lookup {
  entry: OldEntry | null;
  done: boolean;
}

/** The merged view of one directory over `branches` (topmost first). */
function oldChildren(branches: readonly string[]): Map<string, OldEntry> {
  const found = new Map<string, Lookup>();
  for (const dir of branches) {
    const names = namesOf(dir);
    const hidden: string[] = [];
    for (const name of names) {
      if (name.startsWith(WH_PREFIX)) {
        if (!name.startsWith(WH_META_PREFIX)) hidden.push(name.slice(WH_PREFIX.length));
        continue;
      }
      const seen = found.get(name);
      if (seen?.done) continue;
      const path = join(dir, name);
      const st = lstatSync(path, { bigint: true });
      const isDir = st.isDirectory();
      if (!seen) {
        found.set(name, { entry: { path, stat: st, branches: isDir ? [path] : [] }, done: !isDir || namesOf(path).includes(WH_OPAQUE) });
      } else if (isDir) {
        seen.entry!.branches.push(path);
        if (namesOf(path).includes(WH_OPAQUE)) seen.done = true;
      } else {
        seen.done = true;
      }
    }
    // A whiteout hides the name in the branches below this one, not in this one.
    for (const name of hidden) {
      const seen = found.get(name);
      if (!seen) found.set(name, { entry: null, done: true });
      else if (!names.includes(name)) seen.done = true;
    }
    if (names.includes(WH_OPAQUE)) break;
  }
  const out = new Map<string, OldEntry>();
  for (const [name, lookup] of found) if (lookup.entry) out.set(name, lookup.entry);
  return out;
}

function sameXattrs(a: string, b: string): boolean {
  return sameXattrMaps(readXattrs(a), readXattrs(b));
}

class BranchWalker {
  readonly changes: Change[] = [];

  constructor(private readonly upper: string) {}

  /** Compares upper dir `rel` with the view merged from `oldBranches`; true when anything below changed. */
  compareDir(rel: string, oldBranches: readonly string[], opaqueAbove: boolean): boolean {
    const names = namesOf(join(this.upper, rel)).filter((n) => !(rel === '' && isAufsMeta(n)));
    const opaque = opaqueAbove || names.includes(WH_OPAQUE);
    const old = oldBranches.length > 0 ? oldChildren(oldBranches) : new Map<string, OldEntry>();
    let changed = false;
    const present = new Set<string>();
    for (const name of names) {
      if (!name.startsWith(WH_PREFIX)) present.add(name);
      else if (!opaque && !name.startsWith(WH_META_PREFIX)) {
        const target = name.slice(WH_PREFIX.length);
        if (old.has(target) && !names.includes(target)) {
          this.changes.push({ path: `${rel}/${target}`, kind: 'delete' });
          changed = true;
        }
      }
    }
    if (opaque) {
      for (const name of old.keys()) {
        if (!present.has(name)) {
          this.changes.push({ path: `${rel}/${name}`, kind: 'delete' });
          changed = true;
        }
      }
    }
    for (const name of present) {
      if (this.compareEntry(`${rel}/${name}`, old.get(name))) changed = true;
    }
    return changed;
  }

  private compareEntry(rel: string, old: OldEntry | undefined): boolean {
    const path = join(this.upper, rel);
    const now = lstatSync(path, { bigint: true });
    if (old === undefined) {
      this.changes.push({ path: rel, kind: 'add' });
      if (now.isDirectory()) this.compareDir(rel, [], true);
      return true;
    }
    let modified = statDiffers(old.stat, now);
    if (!modified && now.isSymbolicLink()) modified = readlinkSync(old.path) !== readlinkSync(path);
    if (!modified) modified = !sameXattrs(old.path, path);
    if (modified) this.changes.push({ path: rel, kind: 'modify' });
    if (!now.isDirectory()) return modified;
    const oldIsDir = old.stat.isDirectory();
    const below = this.compareDir(rel, oldIsDir ? old.branches : [], !oldIsDir);
    if (below && !modified) this.changes.push({ path: rel, kind: 'modify' });
    return modified || below;
  }
}

/**
 * Changes of the layer whose diff dir is `upper` against the merged view of
 * `ancestorDiffs` (absolute diff dirs, nearest ancestor first).
 */
export function branchChanges(upper: string, ancestorDiffs: readonly string[]): Change[] {
  const walker = new BranchWalker(upper);
  walker.compareDir('', ancestorDiffs, false);
  return sortChanges(walker.changes);
}

/**
 * Every path of a diff dir as an `add`, aufs metadata left out: packed by core's
 * exportChanges this is the OCI changeset itself, since aufs' `.wh.` files and
 * `.wh..wh..opq` are exactly OCI's whiteout entries.
 */
export function diffDirEntries(diffDir: string): Change[] {
  const out: Change[] = [];
  const walk = (rel: string): void => {
    for (const name of namesOf(join(diffDir, rel))) {
      if (isAufsMeta(name)) continue;
      const child = `${rel}/${name}`;
      out.push({ path: child, kind: 'add' });
      if (lstatSync(join(diffDir, child)).isDirectory()) walk(child);
    }
  };
  walk('');
  return sortChanges(out);
}

/** Bytes of regular-file content in a diff dir (aufs metadata excluded), a hardlinked inode once. */
export function diffDirBytes(diffDir: string): number {
  const seen = new Set<bigint>();
  let total = 0;
  for (const change of diffDirEntries(diffDir)) {
    const st = lstatSync(join(diffDir, change.path), { bigint: true });
    if (!st.isFile()) continue;
    if (st.nlink > 1n) {
      if (seen.has(st.ino)) continue;
      seen.add(st.ino);
    }
    total += Number(st.size);
  }
  return total;
}
