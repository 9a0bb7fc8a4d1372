import { mkdir, mkdtemp, readdir, rename, rm } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { copyTree, errnoCode, isProcessAlive, makeStagingDir, ownerOfToken, ownerToken, withUserNamespace } from '@cairnfs/core';
import type { IdMappings } from '@cairnfs/core';
import * as sys from '@cairnfs/sys';
import { PAGE_SIZE, UNSAFE_PATH_CHARS, detachMount, mountData, performMount, type MountSpec } from './mount.js';

/**
 * Id-mapped `get` for overlay2: the lowers stored in container ids are shown to overlayfs
 * through ONE id-mapped mount (open_tree + mount_setattr with a user namespace made from the
 * maps) of the driver's home, attached under a scratch dir while overlay mounts and
 * detached again at once (overlayfs keeps private clones of its layers, so the mount stays
 * correct). Every lower of a layer lives in the home (`<id>/diff`, named by the `l/` short
 * links, whose relative targets `../<id>/diff` resolve inside the clone), so one clone
 * serves any depth: one attach and one detach per get, where containerd makes one per layer
 * (each costs a mount and a detach that waits out an RCU grace period).
 *
 * What the clone exposes: the whole home, read-only and with owners shifted (every layer,
 * other containers' upper and work dirs, the driver's records), for the moment between
 * attach and detach. It is non-recursive, so no mount inside the home (another container's
 * merged view, another get's clone) is in it; it sits in this process's scratch dir (0700,
 * in the home, 0710, both root's), so only root can walk into it — and root can read the
 * home itself anyway. A process killed in that moment leaves it attached under a scratch dir
 * named with its pid and start time; the next open of the home (any process) detaches it.
 *
 * The upper dir cannot be id-mapped (the kernel answers EOVERFLOW and overlay goes
 * read-only), so it is kept in host ids: its root is chowned to the mapped owner before the
 * first mapped mount and the layer records the map (the driver's idmap xattr), so diff maps
 * its files back to container ids.
 *
 * Where the filesystem or kernel cannot id-map, the fallback is a chown copy of the
 * lower view (see {@link buildChownCopy}), kept per image layer and map, and shared by
 * every container on that layer with that map.
 */

/** Scratch dirs (in the home) where the id-mapped clone is attached while overlay mounts; swept at open. */
export const IDMAP_SCRATCH_PREFIX = '.cairn-idmap-';

/**
 * The mkdtemp prefix of this process's scratch dirs, `.cairn-idmap-<pid>.<start>@`: several
 * processes share a home, and a sweep must leave a live process's scratch (its id-mapped
 * clone is attached there while its overlay mounts) alone.
 */
export function idmapScratchPrefix(): string {
  return `${IDMAP_SCRATCH_PREFIX}${ownerToken()}@`;
}
/** Directory (in the home) of chown copies, `<layer id>-<map hash>`; removed with their layer. */
export const CHOWN_COPIES_DIR = '.cairn-idmapped';
/** Where in a scratch dir the home's id-mapped clone is attached (short: 128 lowers go through it). */
export const CLONE_SLOT = '0';

export interface IdmappedLower {
  /** The lower dir, relative to the home (`l/<short>`, `<id>/diff`, a chown copy's dir). */
  rel: string;
  /** Show it id-mapped (stored in container ids); false = already in host ids of this map. */
  mapped: boolean;
}

export interface IdmappedOverlayRequest {
  /** The driver's home (absolute): every lower is in it. */
  home: string;
  /** A scratch directory (absolute, in the home) under which the home's id-mapped clone is attached. */
  scratch: string;
  /** Lower dirs, topmost first. */
  lowers: readonly IdmappedLower[];
  /** Upper and work dirs relative to the home; null for a read-only mount. */
  upper: { upper: string; work: string } | null;
  /** Absolute mount point. */
  target: string;
  head: Array<[string, string | null]>;
  tail: Array<[string, string | null]>;
  newMountApi: boolean;
  pageSize?: number;
}

export interface IdmappedOverlayPlan {
  /** The one id-mapped mount to make first (the home, at `<scratch>/0`); null when no lower is mapped. */
  clone: { source: string; target: string } | null;
  spec: MountSpec;
}

/**
 * Pure: the id-mapped clone to make and the overlay mount on top of it. Like
 * planOverlayMount, in order: mount(2) with absolute paths when they fit in a page; mount(2)
 * with paths relative to the clone (`l/<short>` for a mapped lower, `../../…` back into the
 * home for the rest), which fits 128 lowers as moby's relative paths do; the new mount API
 * with one `lowerdir+` per layer.
 */
export function planIdmappedOverlay(req: IdmappedOverlayRequest): IdmappedOverlayPlan {
  const anyMapped = req.lowers.some((l) => l.mapped);
  const clone = anyMapped ? { source: req.home, target: join(req.scratch, CLONE_SLOT) } : null;
  const cloneDir = clone?.target ?? req.scratch;
  const limit = (req.pageSize ?? PAGE_SIZE) - 1;
  const base = { type: 'overlay', source: 'overlay', target: req.target, readOnly: req.upper === null } as const;
  const options = (at: (rel: string, mapped: boolean) => string, joined: boolean): Array<[string, string | null]> => {
    const lowerdirs = req.lowers.map((l) => at(l.rel, l.mapped));
    const lower: Array<[string, string]> = joined ? [['lowerdir', lowerdirs.join(':')]] : lowerdirs.map((l) => ['lowerdir+', l]);
    const tailOpts: Array<[string, string]> = req.upper ? [['upperdir', at(req.upper.upper, false)], ['workdir', at(req.upper.work, false)]] : [];
    return [...req.head, ...lower, ...tailOpts, ...req.tail];
  };
  const absolute = (rel: string, mapped: boolean) => join(mapped ? cloneDir : req.home, rel);
  if (!UNSAFE_PATH_CHARS.test(req.home)) {
    const abs = options(absolute, true);
    if (mountData(abs).length <= limit) return { clone, spec: { ...base, cwd: null, method: 'mount', options: abs } };
  }
  const rel = options((r, mapped) => (mapped ? r : relative(cloneDir, join(req.home, r))), true);
  if (mountData(rel).length <= limit || !req.newMountApi) {
    // cwd is the clone's mount point, made before the overlay mounts; without a clone the
    // scratch dir itself (it exists), the paths then all lead back into the home.
    return { clone, spec: { ...base, cwd: cloneDir, method: 'mount', options: rel } };
  }
  // Each fsconfig value is one path, never split on ':' or ',', so absolute paths are safe here.
  return { clone, spec: { ...base, cwd: null, method: 'fsmount', options: options(absolute, false) } };
}

/**
 * A scratch dir of this process, whether its clone slot (`0`) is made, and whether a mount
 * under it failed to come off (then it is left to the open-time sweep).
 */
export interface Scratch { dir: string; slots: number; dirty?: boolean }

/**
 * This process's scratch dirs, kept between id-mapped gets: removing one (its slot a mount
 * point a moment ago) cost more than the mount itself. A dir whose mount did not come off
 * is never reused or removed here (a recursive removal must not reach into a mount); the
 * open-time sweep deals with it after this process.
 */
export class ScratchPool {
  private readonly idle: Scratch[] = [];

  constructor(private readonly home: string, private readonly keep = 4) {}

  async take(): Promise<Scratch> {
    return this.idle.pop() ?? { dir: await mkdtemp(join(this.home, idmapScratchPrefix())), slots: 0 };
  }

  async give(scratch: Scratch): Promise<void> {
    if (scratch.dirty) return;
    if (this.idle.length < this.keep) this.idle.push(scratch);
    else await rm(scratch.dir, { recursive: true, force: true }).catch(() => undefined);
  }

  /** Removes the idle dirs (the driver's cleanup). */
  async drain(): Promise<void> {
    for (const s of this.idle.splice(0)) await rm(s.dir, { recursive: true, force: true }).catch(() => undefined);
  }
}

/**
 * Attaches the home's id-mapped clone of `plan` (in `scratch`, whose slot it makes when
 * needed), mounts the overlay on it, and detaches the clone again (also when the overlay
 * mount fails). A clone that does not come off marks the scratch dir dirty (never reused).
 */
export async function performIdmappedOverlay(plan: IdmappedOverlayPlan, maps: IdMappings, scratch: Scratch): Promise<void> {
  const clone = plan.clone;
  let attached = false;
  try {
    if (clone) {
      if (scratch.slots === 0) {
        await mkdir(clone.target);
        scratch.slots = 1;
      }
      // Not recursive: mounts inside the home (merged views, other clones) stay out of it.
      await withUserNamespace(maps, (fd) => sys.idmappedMount(clone.source, clone.target, fd, { readOnly: true }));
      attached = true;
    }
    await performMount(plan.spec);
  } finally {
    if (attached) await detachMount(clone!.target).catch(() => { scratch.dirty = true; });
  }
}

/** An id-mapped bind of `source` at `target` (a base layer has nothing to overlay). */
export async function idmappedBind(source: string, target: string, maps: IdMappings, readOnly: boolean): Promise<void> {
  await withUserNamespace(maps, (fd) => sys.idmappedMount(source, target, fd, { readOnly }));
}

/**
 * The chown-copy fallback: `view` (a directory showing a layer's whole lower view, e.g.
 * a plain read-only overlay mount of it) copied to `dest` with every owner shifted
 * container → host. Staged in the home and renamed into place only when complete, so a
 * crash never leaves a half copy under its final name.
 */
export async function buildChownCopy(home: string, view: string, dest: string, maps: IdMappings): Promise<void> {
  await mkdir(join(home, CHOWN_COPIES_DIR), { recursive: true, mode: 0o700 });
  const staged = await makeStagingDir(home, 'idmap-copy');
  try {
    await copyTree(view, staged);
    await sys.shiftOwnership(staged, maps, true);
    await rename(staged, dest);
  } catch (err) {
    await sys.removeTree(staged).catch(() => undefined);
    if (errnoCode(err) === 'ENOTEMPTY' || errnoCode(err) === 'EEXIST') return; // another get built it meanwhile
    throw err;
  }
}

/** Removes the chown copies made from layer `id` (its removal). */
export async function removeChownCopies(home: string, id: string): Promise<void> {
  const dir = join(home, CHOWN_COPIES_DIR);
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    if (name.startsWith(`${id}-`) && /^[0-9a-f]{16}$/.test(name.slice(id.length + 1))) await sys.removeTree(join(dir, name));
  }
}

/**
 * Sweeps scratch dirs a dead process left mid-mount: detaches what is mounted under them,
 * then removes them. A live process's (its pid and start time are in the name) stay.
 */
export async function sweepIdmapScratch(home: string, mountPoints: Iterable<string>): Promise<void> {
  for (const name of await readdir(home).catch(() => [] as string[])) {
    if (!name.startsWith(IDMAP_SCRATCH_PREFIX)) continue;
    const owner = ownerOfToken(name.slice(IDMAP_SCRATCH_PREFIX.length).split('@')[0] ?? '');
    if (owner !== null && isProcessAlive(owner)) continue;
    const dir = join(home, name);
    for (const point of mountPoints) if (point.startsWith(`${dir}/`)) await detachMount(point).catch(() => undefined);
    await rm(dir, { recursive: true, force: true }).catch(() => undefined);
  }
}
