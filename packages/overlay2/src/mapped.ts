// get with idMappings on overlay2: which layers are shown through id-mapped mounts (or a
// chown copy of the lower view where the kernel cannot id-map), which are used as stored
// (already shifted by the same map), and the container's upper kept in host ids with its
// map recorded. What to mount is decided here; idmap.ts has the mounts themselves.
import { createHash } from 'node:crypto';
import { lchown, mkdir, mkdtemp, readdir, rm, rmdir, stat } from 'node:fs/promises';
import { join, relative } from 'node:path';
import {
  CairnError, errnoCode, fsyncDir, idMappingsKey, mapId, parseIdMappingsKey, sameIdMappings, type IdMappings, type StoreLocks,
} from '@cairnfs/core';
import * as sys from '@cairnfs/sys';
import { DIFF_DIR, WORK_DIR, layerDirName, type Layout } from './layout.js';
import { repairLinks } from './links.js';
import { detachMount, performMount, planReadOnlyBind } from './mount.js';
import type { OverlayFeatures } from './probe.js';
import {
  CHOWN_COPIES_DIR, ScratchPool, buildChownCopy, idmapScratchPrefix, idmappedBind, performIdmappedOverlay, planIdmappedOverlay,
  type IdmappedLower,
} from './idmap.js';

/** What an id-mapped get needs of the driver. */
export interface MappedLayers {
  readonly home: string;
  readonly layout: Layout;
  readonly locks: StoreLocks;
  readonly features: OverlayFeatures;
  /** The layer xattr holding the map a layer's files are stored shifted by. */
  readonly idmapXattr: string;
  isReadOnly(id: string): Promise<boolean>;
  /** The layer's `lower` entries (`l/<short>`), nearest parent first. */
  readLowers(id: string): Promise<string[]>;
  idOfLowerSync(entry: string): string;
  unmountLayer(id: string, path: string | null): Promise<void>;
  /** null when id-mapped mounts work here, else why (chown copies are made instead). */
  idmapUnsupported(): Promise<string | null>;
}

export class MappedViews {
  /** Scratch dirs where the home's id-mapped clone is attached while an overlay mounts, reused. */
  private readonly scratch: ScratchPool;

  constructor(private readonly host: MappedLayers) {
    this.scratch = new ScratchPool(host.home);
  }

  /** Removes the idle scratch dirs (the driver's cleanup). */
  drain(): Promise<void> {
    return this.scratch.drain();
  }

  /** The id map layer `id`'s files are stored shifted by, or null (stored in container ids). */
  async storedIdMap(id: string): Promise<IdMappings | null> {
    return this.storedIdMapSync(id);
  }

  /**
   * The same without the pool round trip: one lgetxattr of a local directory costs
   * microseconds, a round trip ~45 µs of CPU, and an apply or a get asks it of every lower.
   */
  storedIdMapSync(id: string): IdMappings | null {
    let raw: Buffer | null;
    try {
      raw = sys.lgetxattrSync(this.host.layout.layerDir(id), this.host.idmapXattr);
    } catch {
      raw = null; // as storedIdMap: no such layer or no xattr support reads as unmapped
    }
    return raw === null ? null : parseIdMappingsKey(raw.toString(), `layer ${id}`);
  }

  async recordIdMap(id: string, maps: IdMappings): Promise<void> {
    await sys.lsetxattr(this.host.layout.layerDir(id), this.host.idmapXattr, Buffer.from(idMappingsKey(maps)));
    await fsyncDir(this.host.layout.layerDir(id));
  }

  /**
   * get with idMappings. Lowers stored in container ids are shown through id-mapped mounts
   * (or, where those do not work, a chown copy of the lower view); lowers stored shifted by
   * the same map are used as they are; another map is refused. The upper, when there is
   * one, is kept in host ids: chowned at its root and recorded before its first mapped use.
   */
  async mount(id: string, maps: IdMappings, mountLabel: string | undefined): Promise<string> {
    const readOnly = await this.host.isReadOnly(id);
    const entries = await this.host.readLowers(id); // `l/<short>`, nearest parent first
    // Each lower's id (its l/ link) and stored map, read synchronously: two local syscalls
    // of microseconds each, where going through the pool cost a round trip per call (about
    // 8 ms at 128 lowers, more than the mounts); isImageLayer reads its xattr the same way.
    const resolve = () => entries.map((l) => {
      const layer = this.host.idOfLowerSync(l);
      return { layer, stored: this.storedIdMapSync(layer) };
    });
    let lowerInfo: Array<{ layer: string; stored: IdMappings | null }>;
    try {
      lowerInfo = resolve();
    } catch (err) {
      // A lost l/ link: repaired and tried once more, as mountLayer does on the mount's ENOENT.
      if (errnoCode(err) !== 'ENOENT') throw err;
      await this.host.locks.write(`repair the links of layer ${id}`, () => repairLinks(this.host.layout));
      lowerInfo = resolve();
    }
    // The dirs shown read-only, topmost first, as the home names them: through the short
    // links, so 128 of them fit in a page of mount data relative to the home's clone.
    const stack = readOnly ? [{ layer: id, stored: await this.storedIdMap(id) }, ...lowerInfo] : lowerInfo;
    const rels = readOnly ? [join(layerDirName(id), DIFF_DIR), ...entries] : entries;
    const lowers: IdmappedLower[] = [];
    for (const [i, { layer, stored }] of stack.entries()) {
      if (stored && !sameIdMappings(stored, maps)) {
        throw new CairnError('ERR_INVALID_OPTION',
          `layer ${layer} is stored shifted by the id map ${idMappingsKey(stored)}; ${id} cannot be shown with ${idMappingsKey(maps)} (use the same idMappings, or apply the image again without them)`,
          { subject: id });
      }
      lowers.push({ rel: rels[i]!, mapped: stored === null });
    }
    const merged = this.host.layout.mergedDir(id);
    if (!readOnly && stack.length === 0) {
      // A container layer without parents: its own dir, id-mapped writable (no overlay, so
      // no EOVERFLOW): files are stored back in container ids, nothing to record.
      if (await this.storedIdMap(id)) return this.host.layout.diffDir(id);
      await this.ensureMappable(id);
      await this.mountPoint(merged, () => idmappedBind(this.host.layout.diffDir(id), merged, maps, false), id);
      return merged;
    }
    const prepared = readOnly ? null : await this.prepareUpper(id, maps, join(this.host.home, lowers[0]!.rel), lowers[0]!.mapped);
    const synced = prepared ? prepared.durable.then(() => null, (err: unknown) => err) : Promise.resolve(null);
    let root: string;
    try {
      root = await this.mountStack(id, maps, mountLabel, readOnly, stack, lowers);
    } catch (err) {
      await synced;
      throw err;
    }
    const syncError = await synced;
    if (syncError !== null) {
      await this.host.unmountLayer(id, root).catch(() => undefined); // not handed out with its record not durable
      throw syncError;
    }
    return root;
  }

  /** mount's second half: mounts the resolved stack (id-mapped, or a chown copy where that cannot work). */
  private async mountStack(id: string, maps: IdMappings, mountLabel: string | undefined, readOnly: boolean,
    stack: ReadonlyArray<{ layer: string }>, lowers: IdmappedLower[]): Promise<string> {
    const merged = this.host.layout.mergedDir(id);
    const why = await this.host.idmapUnsupported();
    const shown = why === null ? lowers : [{ rel: relative(this.host.home, await this.chownCopy(stack[0]!.layer, stack.slice(1).map((s) => s.layer), lowers, maps)), mapped: false }];
    if (shown.length === 1 && readOnly) {
      const only = join(this.host.home, shown[0]!.rel);
      await this.mountPoint(merged, () => (shown[0]!.mapped ? idmappedBind(only, merged, maps, true) : performMount(planReadOnlyBind(only, merged))), id);
      return merged;
    }
    const scratch = await this.scratch.take();
    const dir = layerDirName(id);
    const plan = planIdmappedOverlay({
      home: this.host.home, scratch: scratch.dir, lowers: shown, target: merged, newMountApi: this.host.features.newMountApi,
      upper: readOnly ? null : { upper: join(dir, DIFF_DIR), work: join(dir, WORK_DIR) },
      head: [...(this.host.features.indexOff ? [['index', 'off'] as [string, string]] : []), ...(this.host.features.userXattr ? [['userxattr', null] as [string, null]] : [])],
      tail: mountLabel ? [['context', `"${mountLabel}"`]] : [],
    });
    if (this.host.features.mountProgram) plan.spec.program = this.host.features.mountProgram;
    try {
      await this.mountPoint(merged, () => performIdmappedOverlay(plan, maps, scratch), id);
    } finally {
      await this.scratch.give(scratch);
    }
    return merged;
  }

  /** Makes the mount point, runs `mount`, and turns a failure into a CairnError (mount point removed). */
  private async mountPoint(merged: string, mount: () => Promise<void>, id: string): Promise<void> {
    await mkdir(merged, { mode: 0o700 }).catch((err) => { if (errnoCode(err) !== 'EEXIST') throw err; });
    try {
      await mount();
    } catch (err) {
      await rmdir(merged).catch(() => undefined);
      if (err instanceof CairnError) throw err;
      throw new CairnError(errnoCode(err) === 'EPERM' ? 'ERR_PREREQUISITES' : 'ERR_NOT_SUPPORTED',
        `cannot mount layer ${id} with an id map: ${(err as Error).message}`, { subject: id, cause: err });
    }
  }

  /** A layer whose files are in container ids must be empty to start being written in host ids. */
  private async ensureMappable(id: string): Promise<void> {
    if ((await readdir(this.host.layout.diffDir(id))).length > 0) {
      throw new CairnError('ERR_INVALID_OPTION',
        `layer ${id} already holds files written without an id map (in container ids); it can be mounted with idMappings only while empty — create a new container layer for the mapped container`,
        { subject: id });
    }
  }

  /**
   * Before the first mapped mount of a container layer: its upper root owned as the mapped
   * lower root, the map recorded. Returns the fsync that makes the record durable, started
   * but not awaited: it runs while the overlay mounts, and get awaits it before returning
   * (nothing is written through the container before that).
   */
  private async prepareUpper(id: string, maps: IdMappings, topPath: string, topMapped: boolean): Promise<{ durable: Promise<void> } | null> {
    const stored = await this.storedIdMap(id);
    if (stored) {
      if (sameIdMappings(stored, maps)) return null;
      throw new CairnError('ERR_INVALID_OPTION',
        `layer ${id} was written through the id map ${idMappingsKey(stored)}; it cannot be mounted with ${idMappingsKey(maps)} — get it with the same idMappings`,
        { subject: id });
    }
    await this.ensureMappable(id);
    const st = await stat(topPath);
    const uid = topMapped ? mapId(maps.uidMap, st.uid, true) : st.uid;
    const gid = topMapped ? mapId(maps.gidMap, st.gid, true) : st.gid;
    if (uid === undefined || gid === undefined) {
      throw new CairnError('ERR_INVALID_OPTION', `the id map does not cover the owner ${st.uid}:${st.gid} of the image's root directory`, { subject: id });
    }
    await lchown(this.host.layout.diffDir(id), uid, gid); // the upper's root: never through a link
    await sys.lsetxattr(this.host.layout.layerDir(id), this.host.idmapXattr, Buffer.from(idMappingsKey(maps)));
    return { durable: fsyncDir(this.host.layout.layerDir(id)) }; // wrapped: an async function would await a promise it returns
  }

  /**
   * The chown-copy fallback: the whole lower view of `top` (its dir over `below`) copied
   * with owners shifted, kept in the home per layer and map and reused. When every lower is
   * already stored shifted, the plain view is used.
   */
  private async chownCopy(top: string, below: readonly string[], lowers: readonly IdmappedLower[], maps: IdMappings): Promise<string> {
    if (lowers.length === 1 && !lowers[0]!.mapped) return join(this.host.home, lowers[0]!.rel);
    const hash = createHash('sha256').update(idMappingsKey(maps)).digest('hex').slice(0, 16);
    const dest = join(this.host.home, CHOWN_COPIES_DIR, `${top}-${hash}`);
    if (await stat(dest).then(() => true, () => false)) return dest;
    if (lowers.some((l) => !l.mapped)) {
      throw new CairnError('ERR_NOT_SUPPORTED', `a chown copy of layer ${top} cannot mix layers stored shifted and unshifted`, { subject: top });
    }
    if (below.length === 0) {
      await buildChownCopy(this.host.home, this.host.layout.diffDir(top), dest, maps);
      return dest;
    }
    // The plain read-only view of the stack, mounted in a scratch dir just for the copy.
    const scratch = await mkdtemp(join(this.host.home, idmapScratchPrefix()));
    const view = join(scratch, 'view');
    await mkdir(view);
    try {
      const plan = planIdmappedOverlay({ home: this.host.home, scratch, lowers: lowers.map((l) => ({ ...l, mapped: false })), upper: null, target: view, head: this.host.features.indexOff ? [['index', 'off']] : [], tail: [], newMountApi: this.host.features.newMountApi });
      await performMount(this.host.features.mountProgram ? { ...plan.spec, program: this.host.features.mountProgram } : plan.spec);
      await buildChownCopy(this.host.home, view, dest, maps);
    } finally {
      await detachMount(view).catch(() => undefined);
      await rm(scratch, { recursive: true, force: true });
    }
    return dest;
  }
}
