import { closeSync, constants as fsConstants, openSync, type BigIntStats } from 'node:fs';
import { lstat, readdir, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { CairnError, errnoCode, listedExtras, lstatListed, readXattrs, sameXattrMaps, type ListedExtras } from '@cairnfs/core';
import { sortChanges, statDiffers } from '@cairnfs/archive';
import type { Change } from '@cairnfs/core';
import { WALK_LINKS, WALK_XATTRS, lgetxattrSync, openDirBeneathSync, statDirSync, type DirStats } from '@cairnfs/sys';

/**
 * `changes` straight from the upper dir, without mounting anything and without walking
 * the parent's whole tree (moby is always naive here). Only what the layer holds is
 * visited; each entry is compared with what the parent's merged view shows at that path,
 * resolved through the lower dirs exactly as overlayfs resolves it (topmost entry wins,
 * whiteouts hide, opaque directories stop the merge). The comparisons are core's
 * (statDiffers, xattrs, symlink targets), so the result equals what the naive walk over
 * the two mounted trees reports.
 *
 * The upper dir is what a running container writes into: it is read only beneath its root,
 * never through a symlink (listings by statDirSync, each entry's lstat through an O_PATH fd
 * relative to its directory's fd: core's listing.ts), so a directory swapped for a symlink
 * to a host directory cannot put host names in the change list. The lower dirs are image
 * layers nothing writes into.
 */

/** Names of overlayfs' private xattrs, which the merged view hides and comparisons must ignore. */
export function isOverlayXattr(name: string): boolean {
  return name.startsWith('trusted.overlay.') || name.startsWith('user.overlay.');
}

export function isWhiteout(st: BigIntStats): boolean {
  return st.isCharacterDevice() && st.rdev === 0n;
}

export function isOpaqueDir(path: string, userXattr = false): boolean {
  const value = lgetxattrSync(path, userXattr ? 'user.overlay.opaque' : 'trusted.overlay.opaque');
  return value !== null && value.toString() === 'y';
}

interface OldEntry {
  /** Absolute path of the entry in the lower dir that shows it. */
  path: string;
  stat: BigIntStats;
  /** For directories: the lower dirs merged into it, topmost first. */
  layers: string[];
}

interface Lookup {
  entry: OldEntry | null;
  /** No lower layer further down contributes (whiteout, non-directory, opaque directory). */
  done: boolean;
}

async function namesOf(dir: string): Promise<string[]> {
  try {
    return await readdir(dir);
  } catch (err) {
    if (errnoCode(err) === 'ENOENT' || errnoCode(err) === 'ENOTDIR') return [];
    throw err;
  }
}

/**
 * The parent's merged view of one directory, built from the lower dirs that contribute
 * to it (topmost first), the way ovl_lookup resolves each name: the topmost entry
 * shows; a whiteout hides everything below; a directory merges with directories below
 * until an opaque one or a non-directory ends the merge.
 */
async function oldChildren(layers: readonly string[], userXattr: boolean): Promise<Map<string, OldEntry>> {
  const found = new Map<string, Lookup>();
  for (const dir of layers) {
    for (const name of await namesOf(dir)) {
      const seen = found.get(name);
      if (seen?.done) continue;
      const path = join(dir, name);
      const st = await lstat(path, { bigint: true });
      if (!seen) {
        if (isWhiteout(st)) {
          found.set(name, { entry: null, done: true });
        } else {
          const isDir = st.isDirectory();
          found.set(name, { entry: { path, stat: st, layers: isDir ? [path] : [] }, done: !isDir || isOpaqueDir(path, userXattr) });
        }
        continue;
      }
      // Below a directory that is still merging.
      if (st.isDirectory()) {
        seen.entry!.layers.push(path);
        if (isOpaqueDir(path, userXattr)) seen.done = true;
      } else {
        seen.done = true;
      }
    }
  }
  const out = new Map<string, OldEntry>();
  for (const [name, lookup] of found) if (lookup.entry) out.set(name, lookup.entry);
  return out;
}

function sameXattrs(a: string, upper: ReadonlyMap<string, Buffer>): boolean {
  const x = readXattrs(a);
  const y = new Map(upper);
  for (const k of [...x.keys()]) if (isOverlayXattr(k)) x.delete(k);
  for (const k of [...y.keys()]) if (isOverlayXattr(k)) y.delete(k);
  return sameXattrMaps(x, y);
}

/** A directory of the upper dir, listed beneath its root with xattrs and link targets. */
function upperListing(upper: string, rel: string): DirStats {
  try {
    return statDirSync(rel, WALK_XATTRS | WALK_LINKS, upper);
  } catch (err) {
    const code = errnoCode(err);
    if (code === 'ELOOP' || code === 'EXDEV' || code === 'EINVAL' || code === 'ENOENT' || code === 'ENOTDIR') throw changedUpper(upper, rel, err);
    throw err;
  }
}

function changedUpper(upper: string, rel: string, cause?: unknown): CairnError {
  return new CairnError('ERR_BACKEND_FAILED',
    `Cannot compute the changes of ${upper}: ${rel || '/'} changed while it was read (the container is writing into it); nothing outside the layer was read. Retry once it is stopped.`,
    { subject: rel, cause });
}

class UpperWalker {
  readonly changes: Change[] = [];

  constructor(private readonly upper: string, private readonly upperFd: number, private readonly userXattr: boolean) {}

  /** Compares upper dir `rel` with the old view merged from `oldLayers`; true when anything below changed. */
  async compareDir(rel: string, oldLayers: readonly string[], opaque: boolean): Promise<boolean> {
    const old = oldLayers.length > 0 ? await oldChildren(oldLayers, this.userXattr) : new Map<string, OldEntry>();
    const listing = upperListing(this.upper, rel);
    const extras = listedExtras(listing);
    let changed = false;
    const present = new Set<string>();
    const pending: Array<{ name: string; st: BigIntStats; extras: ListedExtras }> = [];
    let dirFd = this.upperFd;
    try {
      if (rel !== '') dirFd = openDirBeneathSync(this.upperFd, rel.slice(1)); // rel is '/a/b'
    } catch (err) {
      const code = errnoCode(err);
      if (code === 'ELOOP' || code === 'EXDEV' || code === 'ENOENT' || code === 'ENOTDIR') throw changedUpper(this.upper, rel, err);
      throw err;
    }
    try {
      for (let i = 0; i < listing.names.length; i++) {
        const name = listing.names[i]!;
        const st = lstatListed(dirFd, name, listing, i);
        if (st === null) continue; // removed since the listing
        if (st === 'changed') throw changedUpper(this.upper, `${rel}/${name}`);
        if (isWhiteout(st)) {
          if (!opaque && old.has(name)) {
            this.changes.push({ path: `${rel}/${name}`, kind: 'delete' });
            changed = true;
          }
          continue;
        }
        present.add(name);
        pending.push({ name, st, extras: extras[i]! });
      }
    } finally {
      if (dirFd !== this.upperFd) closeSync(dirFd);
    }
    if (opaque) {
      for (const name of old.keys()) {
        if (!present.has(name)) {
          this.changes.push({ path: `${rel}/${name}`, kind: 'delete' });
          changed = true;
        }
      }
    }
    for (const { name, st, extras: x } of pending) {
      if (await this.compareEntry(`${rel}/${name}`, st, old.get(name), x)) changed = true;
    }
    return changed;
  }

  private async compareEntry(rel: string, now: BigIntStats, old: OldEntry | undefined, extras: ListedExtras): Promise<boolean> {
    if (old === undefined) {
      this.changes.push({ path: rel, kind: 'add' });
      if (now.isDirectory()) await this.compareDir(rel, [], true);
      return true;
    }
    let modified = statDiffers(old.stat, now);
    if (!modified && now.isSymbolicLink()) modified = (await readlink(old.path)) !== extras.link;
    if (!modified) modified = !sameXattrs(old.path, extras.xattrs);
    if (modified) this.changes.push({ path: rel, kind: 'modify' });
    if (!now.isDirectory()) return modified;
    // Not a directory below, or an opaque upper dir: the old contents do not show through.
    const opaqueValue = extras.xattrs.get(this.userXattr ? 'user.overlay.opaque' : 'trusted.overlay.opaque');
    const opaque = !old.stat.isDirectory() || (opaqueValue !== undefined && opaqueValue.toString() === 'y');
    const below = await this.compareDir(rel, old.stat.isDirectory() ? old.layers : [], opaque);
    if (below && !modified) this.changes.push({ path: rel, kind: 'modify' });
    return modified || below;
  }
}

/**
 * Changes of a layer against its direct parent, from its upper dir and the parent's
 * lower dirs (`lowerDirs`: absolute, nearest parent first).
 */
export async function upperChanges(upperDir: string, lowerDirs: readonly string[], userXattr = false): Promise<Change[]> {
  const upperFd = openSync(upperDir, fsConstants.O_RDONLY | fsConstants.O_DIRECTORY);
  try {
    const walker = new UpperWalker(upperDir, upperFd, userXattr);
    await walker.compareDir('', lowerDirs, false);
    return sortChanges(walker.changes);
  } finally {
    closeSync(upperFd);
  }
}
