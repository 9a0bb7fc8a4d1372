import type { BigIntStats } from 'node:fs';
import { lstat, readdir, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { errnoCode, readXattrs, sameXattrMaps } from '@cairnfs/core';
import { sortChanges, statDiffers } from '@cairnfs/archive';
import type { Change } from '@cairnfs/core';
import { lgetxattrSync } from '@cairnfs/sys';

/**
 * `changes` straight from the upper dir, without mounting anything and without walking
 * the parent's whole tree (moby is always naive here). Only what the layer holds is
 * visited; each entry is compared with what the parent's merged view shows at that path,
 * resolved through the lower dirs exactly as overlayfs resolves it (topmost entry wins,
 * whiteouts hide, opaque directories stop the merge). The comparisons are core's
 * (statDiffers, xattrs, symlink targets), so the result equals what the naive walk over
 * the two mounted trees reports.
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

function sameXattrs(a: string, b: string): boolean {
  const x = readXattrs(a);
  const y = readXattrs(b);
  for (const k of [...x.keys()]) if (isOverlayXattr(k)) x.delete(k);
  for (const k of [...y.keys()]) if (isOverlayXattr(k)) y.delete(k);
  return sameXattrMaps(x, y);
}

class UpperWalker {
  readonly changes: Change[] = [];

  constructor(private readonly upper: string, private readonly userXattr: boolean) {}

  /** Compares upper dir `rel` with the old view merged from `oldLayers`; true when anything below changed. */
  async compareDir(rel: string, oldLayers: readonly string[], opaque: boolean): Promise<boolean> {
    const old = oldLayers.length > 0 ? await oldChildren(oldLayers, this.userXattr) : new Map<string, OldEntry>();
    const upperNames = await namesOf(join(this.upper, rel));
    let changed = false;
    const present = new Set<string>();
    const pending: Array<{ name: string; st: BigIntStats }> = [];
    for (const name of upperNames) {
      const st = await lstat(join(this.upper, rel, name), { bigint: true });
      if (isWhiteout(st)) {
        if (!opaque && old.has(name)) {
          this.changes.push({ path: `${rel}/${name}`, kind: 'delete' });
          changed = true;
        }
        continue;
      }
      present.add(name);
      pending.push({ name, st });
    }
    if (opaque) {
      for (const name of old.keys()) {
        if (!present.has(name)) {
          this.changes.push({ path: `${rel}/${name}`, kind: 'delete' });
          changed = true;
        }
      }
    }
    for (const { name, st } of pending) {
      if (await this.compareEntry(`${rel}/${name}`, st, old.get(name))) changed = true;
    }
    return changed;
  }

  private async compareEntry(rel: string, now: BigIntStats, old: OldEntry | undefined): Promise<boolean> {
    const path = join(this.upper, rel);
    if (old === undefined) {
      this.changes.push({ path: rel, kind: 'add' });
      if (now.isDirectory()) await this.compareDir(rel, [], true);
      return true;
    }
    let modified = statDiffers(old.stat, now);
    if (!modified && now.isSymbolicLink()) modified = (await readlink(old.path)) !== (await readlink(path));
    if (!modified) modified = !sameXattrs(old.path, path);
    if (modified) this.changes.push({ path: rel, kind: 'modify' });
    if (!now.isDirectory()) return modified;
    // Not a directory below, or an opaque upper dir: the old contents do not show through.
    const opaque = !old.stat.isDirectory() || isOpaqueDir(path, this.userXattr);
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
  const walker = new UpperWalker(upperDir, userXattr);
  await walker.compareDir('', lowerDirs, false);
  return sortChanges(walker.changes);
}
