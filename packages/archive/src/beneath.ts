// Reading layer content beneath a root, for the JS code paths (the pure-JS export and change
// walk, sameContent): the engine's invariant (README) in a few calls. Every name is resolved
// beneath the layer root without following a symlink (@cairnfs/sys statPathsSync /
// statDirSync / openBeneathSync: openat2 RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS), its last
// component is never followed, and content is only ever read from a regular file whose
// identity (device, inode) is the one the caller checked. What a running container swaps
// into the layer (a symlink to a host directory, a device, a fifo) is "not there" or
// "changed", never followed, opened or read.
import { closeSync } from 'node:fs';
import { CairnError, errnoCode } from '@cairnfs/core';
import {
  STAT, STAT_FIELDS, WALK_LINKS, WALK_TYPES_ONLY, WALK_XATTRS, openBeneathSync, statDirSync, statPathsSync,
} from '@cairnfs/sys';

/** lstat fields of a node beneath the root, in the forms the JS paths compare. */
export interface NodeStat {
  /** st_mode, type bits included. */
  mode: number;
  uid: number;
  gid: number;
  size: number;
  nlink: number;
  dev: bigint;
  ino: bigint;
  rdevMajor: number;
  rdevMinor: number;
  mtimeNs: bigint;
  ctimeSec: number;
}

/** A node with its xattrs (names → raw values) and, for a symlink, its target. */
export interface BeneathNode {
  st: NodeStat;
  xattrs: Map<string, Buffer>;
  link: string | undefined;
}

/** Normalised relative form of '/a/b', 'a/b', 'a//b/'. */
function relOf(path: string): string {
  return path.split('/').filter((p) => p !== '' && p !== '.').join('/');
}

/**
 * lstat (the last component not followed) of `root/rel`, its parents resolved beneath
 * `root` without following a symlink; with its xattrs and symlink target. null when it
 * is not there — including when a parent is a symlink or not a directory: whatever is
 * behind such a parent is not part of the layer.
 */
export function lstatBeneath(root: string, rel: string): BeneathNode | null {
  const r = relOf(rel);
  if (r === '') throw new Error('lstatBeneath: the root itself has no parent to resolve from');
  let batch: ReturnType<typeof statPathsSync>;
  try {
    batch = statPathsSync(root, [r], WALK_XATTRS | WALK_LINKS);
  } catch (err) {
    // lstat said symlink, readlink found something else: the name changed in between.
    if (errnoCode(err) !== 'EINVAL') throw err;
    throw changedWhileRead(`Cannot read /${r} in ${root}`, r, err);
  }
  const s = batch.stats;
  if (s[STAT.mode] === 0) return null;
  const xattrs = new Map<string, Buffer>();
  for (let k = 0; k < batch.xattrs.length; k += 3) xattrs.set(batch.xattrs[k + 1] as string, batch.xattrs[k + 2] as Buffer);
  const link = batch.links.length > 0 ? (batch.links[1] as string) : undefined;
  return { st: toNodeStat(s, 0), xattrs, link };
}

/**
 * A layer path that changed kind while it was being read (a directory swapped for a
 * symlink, a symlink for a directory, a name gone): most likely a running container
 * writing to the layer. `doing` says what failed ("Cannot …").
 */
export function changedWhileRead(doing: string, path: string, err: unknown): CairnError {
  return new CairnError('ERR_BACKEND_FAILED',
    `${doing}: ${path} changed while it was read (${errnoCode(err) ?? 'changed'}; was the layer being modified, by a running container?). Nothing outside the layer was read; retry once it is quiet.`,
    { subject: path, cause: err });
}

/** The NodeStat of entry `i` of a stats array from @cairnfs/sys's bulk reader. */
export function toNodeStat(s: Float64Array, i: number): NodeStat {
  const f = i * STAT_FIELDS;
  return {
    mode: s[f + STAT.mode]!, uid: s[f + STAT.uid]!, gid: s[f + STAT.gid]!, size: s[f + STAT.size]!, nlink: s[f + STAT.nlink]!,
    dev: BigInt(s[f + STAT.dev]!), ino: (BigInt(s[f + STAT.inoHi]!) << 32n) | BigInt(s[f + STAT.inoLo]!),
    rdevMajor: s[f + STAT.rdevMajor]!, rdevMinor: s[f + STAT.rdevMinor]!,
    mtimeNs: BigInt(s[f + STAT.mtimeSec]!) * 1_000_000_000n + BigInt(s[f + STAT.mtimeNsec]!),
    ctimeSec: s[f + STAT.ctimeSec]!,
  };
}

/** The names in directory `root/rel` ('' is the root), opened beneath `root` without following a symlink. */
export function listBeneath(root: string, rel: string): string[] {
  return statDirSync(relOf(rel), WALK_TYPES_ONLY, root).names;
}

/**
 * An fd open for reading on `root/rel` when that is still the regular file with the
 * given identity; null when it is anything else now (another inode, a device, a fifo, a
 * symlink, gone) — nothing else was opened for reading (openBeneathSync). The caller
 * closes the fd.
 */
export function openRegularBeneath(root: string, rel: string, expect: { dev: bigint; ino: bigint }): number | null {
  let f;
  try {
    f = openBeneathSync(root, relOf(rel));
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'ELOOP' || code === 'EXDEV') return null;
    throw err;
  }
  if (f.fd < 0) return null;
  if (f.dev !== expect.dev || f.ino !== expect.ino) {
    closeSync(f.fd);
    return null;
  }
  return f.fd;
}
