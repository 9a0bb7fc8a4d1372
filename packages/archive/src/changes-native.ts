// The naive diff and diffSize over @cairnfs/sys's bulk reader: one native call per directory
// returns every entry's lstat fields as plain numbers (plus xattrs and symlink targets
// when there is a parent to compare with), so the JS side compares numbers and allocates
// no BigIntStats. Semantics are changes.ts's (see changesBetween there); this module is
// only the faster way to get the same answer.
import { closeSync, constants as fsConstants, readSync } from 'node:fs';
import {
  STAT, STAT_FIELDS, WALK_LINKS, WALK_TYPES_ONLY, WALK_XATTRS, statDirSync, statPathsSync,
  type DirStats, type StatBatch,
} from '@cairnfs/sys';
import { errnoCode, type Change } from '@cairnfs/core';
import { openRegularBeneath, toNodeStat } from './beneath.js';

const S_IFMT = fsConstants.S_IFMT;
const S_IFDIR = fsConstants.S_IFDIR;
const S_IFREG = fsConstants.S_IFREG;
const S_IFLNK = fsConstants.S_IFLNK;

// Entries compared between two yields to the event loop (as the JS walk).
const YIELD_EVERY = 512;
// Paths lstat'ed per native call in diffSize.
const SIZE_BATCH = 1024;

/** A listing's xattrs and symlink targets by entry index (built only when there are any). */
class Extras {
  private readonly xattrs = new Map<number, Array<[string, Buffer]>>();
  private readonly links = new Map<number, string>();

  constructor(batch: StatBatch) {
    const x = batch.xattrs;
    for (let k = 0; k < x.length; k += 3) {
      const i = x[k] as number;
      let list = this.xattrs.get(i);
      if (list === undefined) this.xattrs.set(i, (list = []));
      list.push([x[k + 1] as string, x[k + 2] as Buffer]);
    }
    const l = batch.links;
    for (let k = 0; k < l.length; k += 2) this.links.set(l[k] as number, l[k + 1] as string);
  }

  link(i: number): string | undefined {
    return this.links.get(i);
  }

  xattrList(i: number): Array<[string, Buffer]> | undefined {
    return this.xattrs.get(i);
  }
}

/** Same names with the same bytes, in any order. */
function sameXattrLists(a: Array<[string, Buffer]> | undefined, b: Array<[string, Buffer]> | undefined): boolean {
  if (a === undefined || b === undefined) return a === b;
  if (a.length !== b.length) return false;
  for (const [name, value] of a) {
    const other = b.find((e) => e[0] === name);
    if (other === undefined || !other[1].equals(value)) return false;
  }
  return true;
}

/** Entry indices of a listing, in the order sortChanges gives names (UTF-16 code units). */
function sortedIndices(names: readonly string[]): number[] {
  const idx = Array.from(names.keys());
  idx.sort((a, b) => (names[a]! < names[b]! ? -1 : names[a]! > names[b]! ? 1 : 0));
  return idx;
}

/**
 * changesBetween's walk. Directories are visited with their names sorted and each
 * directory's own change is placed before its contents, so the result comes out in
 * sortChanges order without a final sort; a directory reported only because something
 * below it changed gets a reserved slot, filled (or dropped) after its subtree is done.
 */
export class NativeTreeComparer {
  private readonly changes: Array<Change | null> = [];
  private sinceYield = 0;

  constructor(private readonly layer: string, private readonly parent: string | null, private readonly contentSince: number | null) {}

  result(): Change[] {
    return this.changes.filter((c): c is Change => c !== null);
  }

  async compareDir(rel: string, parentHasDir: boolean): Promise<boolean> {
    const withParent = parentHasDir && this.parent !== null;
    // With nothing to compare against only the entry types matter: d_type, no lstat.
    const flags = withParent ? WALK_XATTRS | WALK_LINKS : WALK_TYPES_ONLY;
    // Beneath the layer root, never through a symlink: a running container may swap a
    // directory for a symlink to a host directory while this walks.
    const now = statDirSync(rel, flags, this.layer);
    const old = withParent ? listingOrEmpty(this.parent!, rel, flags) : null;
    const nowOrder = sortedIndices(now.names);
    let changed = false;
    if (old === null || old.names.length === 0) {
      for (const i of nowOrder) {
        await this.tick();
        this.changes.push({ path: `${rel}/${now.names[i]}`, kind: 'add' });
        if ((now.stats[i * STAT_FIELDS + STAT.mode]! & S_IFMT) === S_IFDIR) await this.compareDir(`${rel}/${now.names[i]}`, false);
        changed = true;
      }
      return changed;
    }
    const oldOrder = sortedIndices(old.names);
    const oldIndex = new Map<string, number>();
    for (let j = 0; j < old.names.length; j++) oldIndex.set(old.names[j]!, j);
    const nowNames = new Set(now.names);
    const nowExtras = new Extras(now);
    const oldExtras = new Extras(old);
    let o = 0;
    for (const i of nowOrder) {
      const name = now.names[i]!;
      // Deletions that sort before this name come first.
      for (; o < oldOrder.length && old.names[oldOrder[o]!]! < name; o++) {
        const gone = old.names[oldOrder[o]!]!;
        if (!nowNames.has(gone)) {
          this.changes.push({ path: `${rel}/${gone}`, kind: 'delete' });
          changed = true;
        }
      }
      await this.tick();
      const path = `${rel}/${name}`;
      const isDir = (now.stats[i * STAT_FIELDS + STAT.mode]! & S_IFMT) === S_IFDIR;
      const j = oldIndex.get(name);
      if (j === undefined) {
        this.changes.push({ path, kind: 'add' });
        if (isDir) await this.compareDir(path, false);
        changed = true;
        continue;
      }
      const modified = this.entryDiffers(path, now, i, nowExtras, old, j, oldExtras);
      const slot = this.changes.length;
      this.changes.push(modified ? { path, kind: 'modify' } : null);
      if (!isDir) {
        if (modified) changed = true;
        continue;
      }
      const oldIsDir = (old.stats[j * STAT_FIELDS + STAT.mode]! & S_IFMT) === S_IFDIR;
      const below = await this.compareDir(path, oldIsDir);
      // A directory holding a change is reported too, so its metadata travels with it.
      if (below && !modified) this.changes[slot] = { path, kind: 'modify' };
      if (modified || below) changed = true;
    }
    for (; o < oldOrder.length; o++) {
      const gone = old.names[oldOrder[o]!]!;
      if (!nowNames.has(gone)) {
        this.changes.push({ path: `${rel}/${gone}`, kind: 'delete' });
        changed = true;
      }
    }
    return changed;
  }

  private async tick(): Promise<void> {
    if (++this.sinceYield >= YIELD_EVERY) {
      this.sinceYield = 0;
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
  }

  /** statDiffers, symlink targets, xattrs and the optional content check, on plain numbers. */
  private entryDiffers(path: string, now: DirStats, i: number, nowX: Extras, old: DirStats, j: number, oldX: Extras): boolean {
    const a = now.stats;
    const b = old.stats;
    const ai = i * STAT_FIELDS;
    const bj = j * STAT_FIELDS;
    const mode = a[ai + STAT.mode]!;
    if (mode !== b[bj + STAT.mode] || a[ai + STAT.uid] !== b[bj + STAT.uid] || a[ai + STAT.gid] !== b[bj + STAT.gid]
      || a[ai + STAT.rdevMajor] !== b[bj + STAT.rdevMajor] || a[ai + STAT.rdevMinor] !== b[bj + STAT.rdevMinor]) return true;
    const type = mode & S_IFMT;
    if (type === S_IFDIR) return false;
    if (a[ai + STAT.size] !== b[bj + STAT.size] || a[ai + STAT.mtimeSec] !== b[bj + STAT.mtimeSec]
      || a[ai + STAT.mtimeNsec] !== b[bj + STAT.mtimeNsec]) return true;
    if (type === S_IFLNK && nowX.link(i) !== oldX.link(j)) return true;
    if (!sameXattrLists(nowX.xattrList(i), oldX.xattrList(j))) return true;
    return this.contentSince !== null && type === S_IFREG && a[ai + STAT.ctimeSec]! >= this.contentSince
      && !sameContent({ root: this.parent!, rel: path, ...toNodeStat(b, j) }, { root: this.layer, rel: path, ...toNodeStat(a, i) });
  }
}

/** A parent layer's listing of `rel`; one that is missing or not a directory has none. */
function listingOrEmpty(root: string, rel: string, flags: number): DirStats {
  try {
    return statDirSync(rel, flags, root);
  } catch (err) {
    if (errnoCode(err) === 'ENOENT' || errnoCode(err) === 'ENOTDIR') {
      return { names: [], stats: new Float64Array(0), xattrs: [], links: [] };
    }
    throw err;
  }
}

/** diffSizeOf: the changed paths lstat'ed SIZE_BATCH at a time, hardlinked inodes counted once. */
export async function nativeDiffSize(layerDir: string, changes: readonly Change[]): Promise<number> {
  const seen = new Set<string>();
  let total = 0;
  const batch: string[] = [];
  const flush = (): void => {
    const { stats } = statPathsSync(layerDir, batch);
    for (let k = 0; k < batch.length; k++) {
      const f = k * STAT_FIELDS;
      // mode 0: gone since the changes were computed.
      if ((stats[f + STAT.mode]! & S_IFMT) !== S_IFREG) continue;
      if (stats[f + STAT.nlink]! > 1) {
        const key = `${stats[f + STAT.dev]}:${stats[f + STAT.inoHi]}:${stats[f + STAT.inoLo]}`;
        if (seen.has(key)) continue;
        seen.add(key);
      }
      total += stats[f + STAT.size]!;
    }
    batch.length = 0;
  };
  for (const change of changes) {
    if (change.kind === 'delete') continue;
    batch.push(change.path);
    if (batch.length === SIZE_BATCH) {
      flush();
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
  }
  if (batch.length > 0) flush();
  return total;
}

/** A regular file to compare: `rel` below `root`, and the identity it was listed with. */
export interface ContentRef { root: string; rel: string; dev: bigint; ino: bigint }

/**
 * Byte comparison of two files of equal size, in 64 KiB reads. Each is opened beneath its
 * root without following a symlink and only while it is still the regular file it was
 * listed as (openRegularBeneath: a device or fifo a container swapped in is never opened
 * for reading, so a host disk is never read and a fifo never blocks); one that no longer
 * is counts as different (the diff then carries it, and export checks it again).
 */
export function sameContent(a: ContentRef, b: ContentRef): boolean {
  const fa = openRegularBeneath(a.root, a.rel, a);
  if (fa === null) return false;
  try {
    const fb = openRegularBeneath(b.root, b.rel, b);
    if (fb === null) return false;
    try {
      const ba = Buffer.allocUnsafe(65536);
      const bb = Buffer.allocUnsafe(65536);
      for (;;) {
        const na = readSync(fa, ba, 0, ba.length, null);
        const nb = readSync(fb, bb, 0, bb.length, null);
        if (na !== nb || !ba.subarray(0, na).equals(bb.subarray(0, nb))) return false;
        if (na === 0) return true;
      }
    } finally {
      closeSync(fb);
    }
  } finally {
    closeSync(fa);
  }
}
