import type { BigIntStats } from 'node:fs';
import { closeSync, constants as fsConstants, lstatSync, openSync, readdirSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { CairnError, errnoCode, listedExtras, lstatListed, readXattrs, sameXattrMaps, type ListedExtras } from '@cairnfs/core';
import { sortChanges, statDiffers } from '@cairnfs/archive';
import type { Change } from '@cairnfs/core';
import {
  STAT, STAT_FIELDS, WALK_LINKS, WALK_TYPES_ONLY, WALK_XATTRS, openDirBeneathSync, statDirSync, statPathsSync, type DirStats,
} from '@cairnfs/sys';
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
 *
 * The layer's own diff dir may be a running container's rw branch: it is read only beneath
 * its root, never through a symlink (statDirSync listings, lstat through O_PATH fds checked
 * against them: core's listing.ts). The ancestors' diff dirs are image layers nothing
 * writes into.
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

function changedBranch(upper: string, rel: string, cause?: unknown): CairnError {
  return new CairnError('ERR_BACKEND_FAILED',
    `Cannot compute the changes of ${upper}: ${rel || '/'} changed while it was read (the container is writing into it); nothing outside the layer was read. Retry once it is stopped.`,
    { subject: rel, cause });
}

/** A lookup beneath the branch root; a swap on the way (a symlink, a non-directory) is a change under the walk. */
function beneath<T>(upper: string, rel: string, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    const code = errnoCode(err);
    if (code === 'ELOOP' || code === 'EXDEV' || code === 'EINVAL' || code === 'ENOENT' || code === 'ENOTDIR') throw changedBranch(upper, rel, err);
    throw err;
  }
}

class BranchWalker {
  readonly changes: Change[] = [];

  constructor(private readonly upper: string, private readonly upperFd: number) {}

  /** Compares upper dir `rel` with the view merged from `oldBranches`; true when anything below changed. */
  compareDir(rel: string, oldBranches: readonly string[], opaqueAbove: boolean): boolean {
    const listing: DirStats = beneath(this.upper, rel, () => statDirSync(rel, WALK_XATTRS | WALK_LINKS, this.upper));
    const extras = listedExtras(listing);
    const dirFd = rel === '' ? this.upperFd : beneath(this.upper, rel, () => openDirBeneathSync(this.upperFd, rel.slice(1))); // rel is '/a/b'
    const nodes = new Map<string, { st: BigIntStats; extras: ListedExtras }>();
    try {
      for (let i = 0; i < listing.names.length; i++) {
        const name = listing.names[i]!;
        if (rel === '' && isAufsMeta(name)) continue;
        const st = lstatListed(dirFd, name, listing, i);
        if (st === null) continue; // removed since the listing
        if (st === 'changed') throw changedBranch(this.upper, `${rel}/${name}`);
        nodes.set(name, { st, extras: extras[i]! });
      }
    } finally {
      if (dirFd !== this.upperFd) closeSync(dirFd);
    }
    const names = [...nodes.keys()];
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
      const node = nodes.get(name)!;
      if (this.compareEntry(`${rel}/${name}`, old.get(name), node.st, node.extras)) changed = true;
    }
    return changed;
  }

  private compareEntry(rel: string, old: OldEntry | undefined, now: BigIntStats, extras: ListedExtras): boolean {
    if (old === undefined) {
      this.changes.push({ path: rel, kind: 'add' });
      if (now.isDirectory()) this.compareDir(rel, [], true);
      return true;
    }
    let modified = statDiffers(old.stat, now);
    if (!modified && now.isSymbolicLink()) modified = readlinkSync(old.path) !== extras.link;
    if (!modified) modified = !sameXattrMaps(readXattrs(old.path), extras.xattrs);
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
  const upperFd = openSync(upper, fsConstants.O_RDONLY | fsConstants.O_DIRECTORY);
  try {
    const walker = new BranchWalker(upper, upperFd);
    walker.compareDir('', ancestorDiffs, false);
    return sortChanges(walker.changes);
  } finally {
    closeSync(upperFd);
  }
}

/**
 * Every path of a diff dir as an `add`, aufs metadata left out: packed by core's
 * exportChanges this is the OCI changeset itself, since aufs' `.wh.` files and
 * `.wh..wh..opq` are exactly OCI's whiteout entries.
 */
export function diffDirEntries(diffDir: string): Change[] {
  const out: Change[] = [];
  // Beneath the diff dir, never through a symlink (it may be a running container's branch).
  const walk = (rel: string): void => {
    const listing = beneath(diffDir, rel, () => statDirSync(rel, WALK_TYPES_ONLY, diffDir));
    for (let i = 0; i < listing.names.length; i++) {
      const name = listing.names[i]!;
      if (isAufsMeta(name)) continue;
      const child = `${rel}/${name}`;
      out.push({ path: child, kind: 'add' });
      if ((listing.stats[i * STAT_FIELDS + STAT.mode]! & fsConstants.S_IFMT) === fsConstants.S_IFDIR) walk(child);
    }
  };
  walk('');
  return sortChanges(out);
}

/** Bytes of regular-file content in a diff dir (aufs metadata excluded), a hardlinked inode once. */
export function diffDirBytes(diffDir: string): number {
  const seen = new Set<string>();
  let total = 0;
  const paths = diffDirEntries(diffDir).map((c) => c.path);
  // lstat'ed beneath the diff dir (a path through a symlink is not there: mode 0).
  const { stats } = statPathsSync(diffDir, paths);
  for (let k = 0; k < paths.length; k++) {
    const f = k * STAT_FIELDS;
    if ((stats[f + STAT.mode]! & fsConstants.S_IFMT) !== fsConstants.S_IFREG) continue;
    if (stats[f + STAT.nlink]! > 1) {
      const key = `${stats[f + STAT.inoHi]}:${stats[f + STAT.inoLo]}`;
      if (seen.has(key)) continue;
      seen.add(key);
    }
    total += stats[f + STAT.size]!;
  }
  return total;
}
