import { mkdir, mkdtemp, readdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { copyTree, errnoCode, isProcessAlive, makeStagingDir, ownerOfToken, ownerToken, withUserNamespace } from '@cairnfs/core';
import type { IdMappings } from '@cairnfs/core';
import * as sys from '@cairnfs/sys';
import { detachMount, mountData, performMount, type MountSpec } from './mount.js';

/**
 * Id-mapped `get` for overlay2, containerd's way: every lower layer that is stored in
 * container ids is attached through an id-mapped mount (open_tree + mount_setattr with a
 * user namespace made from the maps), overlay is mounted on those, and the id-mapped
 * mounts are detached again at once (overlayfs keeps private clones of its layers, so the
 * mount stays correct). The upper dir cannot be id-mapped (the kernel answers EOVERFLOW
 * and overlay goes read-only), so it is kept in host ids: its root is chowned to the
 * mapped owner before the first mapped mount and the layer records the map (the driver's
 * idmap xattr), so diff maps its files back to container ids.
 *
 * Where the filesystem or kernel cannot id-map, the fallback is a chown copy of the
 * lower view (see {@link buildChownCopy}), kept per image layer and map, and shared by
 * every container on that layer with that map.
 */

/** Scratch dirs (in the home) where id-mapped lowers are attached while overlay mounts; swept at open. */
export const IDMAP_SCRATCH_PREFIX = '.cairn-idmap-';

/**
 * The mkdtemp prefix of this process's scratch dirs, `.cairn-idmap-<pid>.<start>@`: several
 * processes share a home, and a sweep must leave a live process's scratch (its id-mapped
 * lowers are attached there while its overlay mounts) alone.
 */
export function idmapScratchPrefix(): string {
  return `${IDMAP_SCRATCH_PREFIX}${ownerToken()}@`;
}
/** Directory (in the home) of chown copies, `<layer id>-<map hash>`; removed with their layer. */
export const CHOWN_COPIES_DIR = '.cairn-idmapped';

export interface IdmappedLower {
  /** Absolute path of the lower dir. */
  path: string;
  /** Attach it id-mapped (stored in container ids); false = already in host ids of this map. */
  mapped: boolean;
}

export interface IdmappedOverlayRequest {
  /** An empty scratch directory (absolute) under which the id-mapped lowers are attached. */
  scratch: string;
  /** Lower dirs, topmost first. */
  lowers: readonly IdmappedLower[];
  /** Upper and work dirs (absolute); null for a read-only mount. */
  upper: { upper: string; work: string } | null;
  target: string;
  head: Array<[string, string | null]>;
  tail: Array<[string, string | null]>;
  newMountApi: boolean;
  pageSize?: number;
}

export interface IdmappedOverlayPlan {
  /** Id-mapped mounts to make first: source → target (in the scratch dir). */
  binds: Array<{ source: string; target: string }>;
  spec: MountSpec;
}

/** Pure: which id-mapped mounts to make and the overlay mount on top of them. */
export function planIdmappedOverlay(req: IdmappedOverlayRequest): IdmappedOverlayPlan {
  const binds: Array<{ source: string; target: string }> = [];
  const lowerdirs = req.lowers.map((l) => {
    if (!l.mapped) return l.path;
    const target = join(req.scratch, String(binds.length));
    binds.push({ source: l.path, target });
    return target;
  });
  const tailOpts = req.upper ? [['upperdir', req.upper.upper], ['workdir', req.upper.work]] as Array<[string, string]> : [];
  const classic: Array<[string, string | null]> = [...req.head, ['lowerdir', lowerdirs.join(':')], ...tailOpts, ...req.tail];
  const base = { type: 'overlay', source: 'overlay', target: req.target, cwd: null, readOnly: req.upper === null } as const;
  if (mountData(classic).length < (req.pageSize ?? 4096) || !req.newMountApi) {
    return { binds, spec: { ...base, method: 'mount', options: classic } };
  }
  const options: Array<[string, string | null]> = [...req.head, ...lowerdirs.map((l) => ['lowerdir+', l] as [string, string]), ...tailOpts, ...req.tail];
  return { binds, spec: { ...base, method: 'fsmount', options } };
}

/**
 * A scratch dir of this process, how many numbered subdirs (0, 1, …) it already has, and
 * whether a mount under it failed to come off (then it is left to the open-time sweep).
 */
export interface Scratch { dir: string; slots: number; dirty?: boolean }

/**
 * This process's scratch dirs, kept between id-mapped gets: removing one (its numbered
 * subdirs, each a mount point a moment ago) cost more than the mounts themselves. A dir
 * whose mounts did not all come off is never reused or removed here (a recursive removal
 * must not reach into a mount); the open-time sweep deals with it after this process.
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
 * Makes the id-mapped mounts of `plan` (under `scratch`, whose subdirs it makes as needed),
 * mounts the overlay on them, and detaches them again (also when the overlay mount fails).
 * A mount that does not come off marks the scratch dir dirty (never reused).
 */
export async function performIdmappedOverlay(plan: IdmappedOverlayPlan, maps: IdMappings, scratch: Scratch): Promise<void> {
  const attached: string[] = [];
  try {
    await withUserNamespace(maps, async (fd) => {
      for (const [i, b] of plan.binds.entries()) {
        if (i >= scratch.slots) {
          await mkdir(b.target);
          scratch.slots = i + 1;
        }
        await sys.idmappedMount(b.source, b.target, fd, { readOnly: true });
        attached.push(b.target);
      }
    });
    await performMount(plan.spec);
  } finally {
    // At once: each detach waits out an RCU grace period in the kernel, on its own pool thread.
    const results = await Promise.allSettled(attached.map((t) => detachMount(t)));
    if (results.some((r) => r.status === 'rejected')) scratch.dirty = true;
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
