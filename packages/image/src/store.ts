import { availableParallelism } from 'node:os';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, readFile, rename, rm, unlink } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import { dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import pLimit from 'p-limit';
import {
  CairnError, DEFAULT_LOCK_TIMEOUT_MS, SharedTable, StoreLocks, assertValidId, fsyncDir, hasLayerFilesDir, isCairnError, secureDir,
  type StorageDriver,
} from '@cairnfs/core';
import { directStream } from '@cairnfs/archive';
import { writeFileAtomic } from './atomic.js';
import { applyBlob, mkdirDurable, writeRecordDir } from './layerfiles.js';
import { Pins, pinned, scratchName, writeIntent } from './claims.js';
import { chainIdOf, chainIds, hexOf, sha256Of } from './digest.js';
import { DEFAULT_MAX_UNCOMPRESSED_BYTES } from './decompress.js';
import { describeSource, type ImageDescription } from './describe.js';
import { normalizeTag, validTag } from './reference.js';
import { planPull, type PullOptions } from './registry/pull.js';
import { pushImage, type PushOptions, type PushResult } from './registry/push.js';
import { DistributionMeta } from './registry/distmeta.js';
import { StoreLayout } from './layout.js';
import { openSource, type BlobSource } from './source.js';
import { LayerReplay, REPLAY_CHUNK } from './tarsplit.js';
import { PackBuffers } from './packbuffers.js';
import { hasAbandonedWork, sweepAbandoned } from './repair.js';
import { loadState, resolveImage, saveRepositories, tagsOf, type StoreState } from './state.js';

export interface LayerInfo {
  chainId: string;
  diffId: string;
  parent: string | null;
  /** Bytes of file content applied (moby's layerdb `size`). */
  size: number;
  /** Bytes of the uncompressed layer tar (what exportLayer returns). */
  tarSize: number;
  /** The driver's id for this layer. */
  cacheId: string;
  /** False when exportLayer cannot rebuild the imported tar byte for byte (see docs/images.md). */
  exact: boolean;
}

export interface ImageInfo {
  /** `sha256:` of the config JSON. */
  id: string;
  tags: string[];
  diffIds: string[];
  /** Chain ids, bottom first; the last is the image's top layer. */
  layers: string[];
}

export interface ContainerInfo {
  name: string;
  /** The driver's id for the container's read-write layer. */
  mountId: string;
  /** Chain id of the image's top layer (null for an image without layers). */
  parent: string | null;
  image: string;
}

export interface ImportProgress {
  image: string;
  layersDone: number;
  layersTotal: number;
  /** Bytes of layer blobs read from the source (compressed, as stored there). */
  bytesDone: number;
  bytesTotal: number;
  /** Chain id of the layer that just finished, on layer events. */
  layer?: string;
}

export interface ImportOptions {
  /**
   * Apply an image's missing layers in parallel (default true). Only drivers whose layers
   * are independent directories (overlay2, aufs) can: on drivers that start a child as a
   * copy or snapshot of its parent (vfs, btrfs, zfs, devicemapper) layers are always
   * applied in order, whatever this says.
   */
  parallel?: boolean;
  /** Layers applied at once when parallel; default: the number of CPUs (each apply runs on its own thread). */
  concurrency?: number;
  /** Extra tag for the imported image(s) (`name:tag`). */
  tag?: string;
  /**
   * Most bytes one layer (or a compressed image archive) may decompress to, and most bytes
   * one layer's files may hold counted at their logical size (a sparse file at its full
   * size, however few bytes its tar stores); past either the import fails with
   * ERR_INVALID_ARCHIVE and leaves nothing behind. Default 64 GiB
   * ({@link DEFAULT_MAX_UNCOMPRESSED_BYTES}): a bound against gzip/zstd bombs and
   * terabyte sparse files that no real layer meets.
   */
  maxUncompressedBytes?: number;
  onProgress?: (p: ImportProgress) => void;
}

export interface CommitOptions {
  /** Tag for the new image (`name:tag`). */
  tag?: string;
  /** History comment. */
  comment?: string;
  /**
   * Most bytes the container's changes may take as a tar (sparse files count at their full
   * size, as the diff writes them); past it the commit fails with ERR_INVALID_ARCHIVE and
   * leaves nothing behind. Default {@link DEFAULT_MAX_UNCOMPRESSED_BYTES}, as for imports.
   */
  maxUncompressedBytes?: number;
}

export interface StoreOptions {
  /** Storage root; defaults to the parent of the driver's home. The store lives in `${root}/image/${driver.name}`. */
  root?: string;
  /** Milliseconds an operation waits for another process's lock on the store before ERR_LOCKED; default 30 000. */
  lockTimeoutMs?: number;
}

/** One layer an import (or a commit) makes if the store lacks it. */
interface LayerPlan {
  chainId: string;
  diffId: string;
  parent: string | null;
  blob: () => AsyncIterable<Uint8Array>;
  /** Tells the source this layer's blob is wanted soon (see BlobSource.prefetch). */
  prefetch: () => void;
  onBytes: (n: number) => void;
  onDone: () => void;
}

/** Writes a new file and fsyncs it (callers fsync its directory once all are written). */
const notFound = (what: string) => new CairnError('ERR_LAYER_NOT_FOUND', what, { subject: what });

/** Drivers whose layers are independent directories, so an image's layers can be applied at once. */
const PARALLEL_DRIVERS = new Set(['overlay2', 'aufs']);

/**
 * Images and their layers on top of any {@link StorageDriver}, as moby's layer store:
 * layers are named by chain id, shared between images, counted by their users (child
 * layers, images, containers) and removed with their last user. Metadata changes are
 * atomic: every file is written to a temp name and renamed, and driver layers being
 * created or removed are announced by an intent file first, so that the next open
 * removes whatever a crash left half done.
 *
 * ## Several processes
 * Any number of processes (and LayerStores) may use one store at once. Every change of
 * the tables (layers, images, containers, tags) runs under the store's write lock (core's
 * StoreLocks on the store directory) against tables read again whenever another process
 * wrote, so no tag or refcount is lost. Imports and commits do their driver work outside
 * it: each missing layer is made under its own chain lock (two processes importing the
 * same layer: the second waits and then uses the first's), and a *pin* names the layers
 * an import builds on until its image is recorded, so a `rmi` or `gc` elsewhere cannot
 * remove them meanwhile (see claims.ts). The synchronous getters (`layers()`, `image()`,
 * …) answer from the tables as of this store's last operation; `refresh()` reads them again.
 */
export class LayerStore {
  private readonly layout: StoreLayout;
  private readonly locks: StoreLocks;
  private readonly table: SharedTable<StoreState>;
  private readonly pins: Pins;
  /** The tables as of the last locked section: what the synchronous getters read. */
  private state: StoreState = { layers: new Map(), images: new Map(), containers: new Map(), tags: new Map(), pins: [] };

  private constructor(readonly driver: StorageDriver, readonly dir: string, lockTimeoutMs: number) {
    this.layout = new StoreLayout(dir);
    this.locks = new StoreLocks(dir, { timeoutMs: lockTimeoutMs, what: `image store ${dir}` });
    this.pins = new Pins(join(dir, 'layerdb', 'pins'));
    this.table = new SharedTable(this.locks, () => loadState(this.layout, this.pins));
  }

  static async open(driver: StorageDriver, opts: StoreOptions = {}): Promise<LayerStore> {
    const root = opts.root ?? dirname(driver.home);
    // image/ holds every layer's tar-split and every image's config: the caller's alone, as the driver homes.
    await secureDir(join(root, 'image'), 0o700, 'image store');
    await secureDir(join(root, 'image', driver.name), 0o700, 'image store');
    const store = new LayerStore(driver, join(root, 'image', driver.name), opts.lockTimeoutMs ?? DEFAULT_LOCK_TIMEOUT_MS);
    await mkdir(store.layout.tmp, { recursive: true });
    await store.recover();
    return store;
  }

  /** Reads the tables again (what another process changed shows in the getters after this). */
  async refresh(): Promise<void> {
    await this.read('read the image store', () => undefined);
  }

  /** Lets go of the store's lock file (the store needs no other closing; every lock is per operation). */
  async close(): Promise<void> {
    await this.locks.close();
  }

  private read<T>(op: string, fn: (s: StoreState) => Promise<T> | T): Promise<T> {
    return this.table.read(op, (t) => { this.state = t; return fn(t); });
  }

  private write<T>(op: string, fn: (s: StoreState) => Promise<T> | T): Promise<T> {
    return this.table.write(op, (t) => { this.state = t; return fn(t); });
  }

  // ---- reading ---------------------------------------------------------------------

  layers(): LayerInfo[] { return [...this.state.layers.values()]; }
  images(): ImageInfo[] { return [...this.state.images.values()]; }
  containers(): ContainerInfo[] { return [...this.state.containers.values()]; }

  layer(chainId: string): LayerInfo {
    const l = this.state.layers.get(chainId);
    if (!l) throw notFound(`no layer with chain id ${chainId}; \`cairn layers\` lists them`);
    return l;
  }

  container(name: string): ContainerInfo {
    const c = this.state.containers.get(name);
    if (!c) throw notFound(`no container named ${name}; \`cairn create IMAGE NAME\` makes one`);
    return c;
  }

  /** Users of a layer: child layers, images whose top it is, containers on it, imports in progress (any process) building on it. */
  refcount(chainId: string): number {
    const s = this.state;
    let n = pinned(s.pins, chainId);
    for (const l of s.layers.values()) if (l.parent === chainId) n++;
    for (const i of s.images.values()) if (i.layers[i.layers.length - 1] === chainId) n++;
    for (const c of s.containers.values()) if (c.parent === chainId) n++;
    return n;
  }

  /**
   * An image by `name:tag` (`:latest` implied), full id (`sha256:<hex>` or the 64 hex digits),
   * or a unique prefix of the id's hex (at least 4 digits). A full id is only ever an id.
   * A reference that is both a tag and an id prefix must agree on the image, else it is
   * refused as ambiguous (ERR_INVALID_OPTION): Docker prefers the tag there, which lets an
   * image tagged `<12 hex of another image>:latest` stand in for that image.
   */
  image(ref: string): ImageInfo {
    return resolveImage(this.state, ref);
  }

  /** Tags of an image. */
  tagsOf(imageId: string): string[] {
    return tagsOf(this.state, imageId);
  }

  // ---- import ----------------------------------------------------------------------

  /** Imports every image of a docker-save tarball, OCI archive or OCI layout directory. */
  async importImage(path: string, opts: ImportOptions = {}): Promise<ImageInfo[]> {
    if (opts.tag !== undefined) opts = { ...opts, tag: validTag(opts.tag, 'ERR_INVALID_OPTION', 'the tag option') };
    await mkdir(this.layout.tmp, { recursive: true });
    const src = await openSource(path, this.layout.tmp, { maxBytes: opts.maxUncompressedBytes, what: `image archive ${path}` });
    try {
      const descs = await describeSource(src);
      const out: ImageInfo[] = [];
      for (const d of descs) out.push(await this.importOne(src, d, opts));
      return out;
    } finally {
      await src.close();
    }
  }

  private async importOne(src: BlobSource, desc: ImageDescription, opts: ImportOptions): Promise<ImageInfo> {
    const chains = chainIds(desc.diffIds);
    // Pinned before anything is looked at: what exists now stays while we build on it.
    const pin = await this.write(`import image ${desc.id}`, () => this.pins.add(chains));
    const made: string[] = [];
    try {
      const missing = await this.read(`import image ${desc.id}`, (s) => chains.map((_, i) => i).filter((i) => !s.layers.has(chains[i]!)));
      const sizes = await Promise.all(missing.map(async (i) => (await src.size(desc.layerPaths[i]!)) ?? 0));
      const progress: ImportProgress = {
        image: desc.id, layersDone: chains.length - missing.length, layersTotal: chains.length,
        bytesDone: 0, bytesTotal: sizes.reduce((a, b) => a + b, 0),
      };
      const report = (layer?: string) => opts.onProgress?.({ ...progress, ...(layer ? { layer } : {}) });
      report();
      const plans: LayerPlan[] = missing.map((i) => ({
        chainId: chains[i]!, diffId: desc.diffIds[i]!, parent: i > 0 ? chains[i - 1]! : null,
        blob: () => src.stream(desc.layerPaths[i]!),
        prefetch: () => src.prefetch?.(desc.layerPaths[i]!),
        onBytes: (n) => { progress.bytesDone += n; report(); },
        onDone: () => { progress.layersDone++; report(chains[i]); },
      }));
      const parallel = (opts.parallel ?? true) && PARALLEL_DRIVERS.has(this.driver.name);
      await this.makeLayers(plans, parallel ? opts.concurrency ?? availableParallelism() : 1, made, opts.maxUncompressedBytes);
      return await this.write(`import image ${desc.id}`, async (s) => {
        const image: ImageInfo = { id: desc.id, tags: [], diffIds: desc.diffIds, layers: chains };
        await mkdirDurable(this.layout.images);
        await writeFileAtomic(this.layout.image(desc.id), desc.config);
        if (!s.images.has(desc.id)) s.images.set(desc.id, image);
        for (const t of [...desc.tags, ...(opts.tag ? [opts.tag] : [])]) s.tags.set(t, desc.id);
        await saveRepositories(s, this.layout, this.dir);
        await this.pins.drop(pin);
        return s.images.get(desc.id)!;
      });
    } catch (err) {
      // Nothing of a failed import stays: the layers it committed go again, top first,
      // unless another image, container or import uses them by now.
      await this.write(`undo the import of ${desc.id}`, async (s) => {
        await this.pins.drop(pin);
        s.pins = await this.pins.load();
        for (const chain of made.reverse()) {
          const l = s.layers.get(chain);
          if (l && this.refcount(chain) === 0) await this.dropLayer(s, l);
        }
      }).catch(() => undefined);
      throw err;
    } finally {
      await this.pins.drop(pin);
    }
  }

  /**
   * Makes the layers of `plans` (bottom first) that the store still lacks, each under its
   * chain lock, and commits them; adds the chain ids it made to `made` as it goes (a
   * failure halfway leaves the caller knowing which). With `concurrency` > 1 (overlay2,
   * aufs: layers are independent directories) they are created first and applied at
   * once, else one after the other (a child starts as a copy of its parent).
   */
  private async makeLayers(plans: LayerPlan[], concurrency: number, made: string[], maxBytes?: number): Promise<void> {
    if (concurrency <= 1) {
      for (const [k, p] of plans.entries()) {
        // One layer at a time: the next one's download overlaps this one's apply.
        plans[k + 1]?.prefetch();
        await this.locks.layer(hexOf(p.chainId), `import layer ${p.chainId}`, async () => {
          if (await this.read(`import layer ${p.chainId}`, (s) => s.layers.has(p.chainId))) return p.onDone(); // made meanwhile by another process
          const parentCache = p.parent === null ? null : await this.read(`import layer ${p.chainId}`, (s) => s.layers.get(p.parent!)!.cacheId);
          const cacheId = await this.createDriverLayer(parentCache);
          try {
            const applied = await this.applyLayer(cacheId, parentCache, p.diffId, p.blob(), p.onBytes, maxBytes);
            await this.write(`commit layer ${p.chainId}`, (s) => this.commitLayer(s, { chainId: p.chainId, diffId: p.diffId, parent: p.parent, cacheId, ...applied }));
          } catch (err) {
            await this.discardDriverLayer(cacheId);
            throw err;
          }
          made.push(p.chainId);
          p.onDone();
        });
      }
      return;
    }
    await this.locks.layer(plans.map((p) => hexOf(p.chainId)), `import ${plans.length} layers`, async () => {
      const todo = await this.read('import layers', (s) => plans.filter((p) => !s.layers.has(p.chainId)));
      const cacheIds = new Map<string, string>();
      const cacheOf = async (chain: string | null) => (chain === null ? null : cacheIds.get(chain) ?? await this.read('import layers', (s) => s.layers.get(chain)!.cacheId));
      try {
        // Layers are separate directories: create the chain (cheap), then fill them at once.
        for (const p of todo) cacheIds.set(p.chainId, await this.createDriverLayer(await cacheOf(p.parent)));
        const limit = pLimit(concurrency);
        const results = await Promise.allSettled(todo.map((p) => limit(async () => {
          const cacheId = cacheIds.get(p.chainId)!;
          const applied = await this.applyLayer(cacheId, await cacheOf(p.parent), p.diffId, p.blob(), p.onBytes, maxBytes);
          p.onDone();
          return { chainId: p.chainId, diffId: p.diffId, parent: p.parent, cacheId, ...applied };
        })));
        const failed = results.find((r) => r.status === 'rejected');
        if (failed) throw (failed as PromiseRejectedResult).reason;
        await this.write('commit layers', async (s) => {
          for (const r of results) {
            const l = (r as PromiseFulfilledResult<LayerInfo & { split: Buffer }>).value;
            await this.commitLayer(s, l);
            made.push(l.chainId);
          }
        });
      } catch (err) {
        for (const p of [...todo].reverse()) {
          const cacheId = cacheIds.get(p.chainId);
          if (cacheId !== undefined && !made.includes(p.chainId)) await this.discardDriverLayer(cacheId);
        }
        throw err;
      }
    });
  }

  /** A new driver layer with an intent naming it, so a crash before its commit leaves it to the next sweep. */
  private async createDriverLayer(parentCache: string | null): Promise<string> {
    const cacheId = randomBytes(32).toString('hex');
    await writeIntent(this.layout.intent(cacheId), cacheId);
    try {
      await this.driver.create(cacheId, parentCache);
    } catch (err) {
      await unlink(this.layout.intent(cacheId)).catch(() => undefined);
      throw err;
    }
    return cacheId;
  }

  private async discardDriverLayer(cacheId: string): Promise<void> {
    await this.driver.remove(cacheId).catch(() => undefined);
    await unlink(this.layout.intent(cacheId)).catch(() => undefined);
  }

  /** Applies one layer blob to a driver layer (see applyBlob). */
  private applyLayer(cacheId: string, parentCacheId: string | null, diffId: string,
    blob: AsyncIterable<Uint8Array>, onBytes: (n: number) => void, maxUncompressedBytes?: number) {
    return applyBlob(this.driver, cacheId, parentCacheId, diffId, blob, onBytes, maxUncompressedBytes);
  }

  /** Records a layer in the layerdb (the caller holds the write lock); its intent goes with it. */
  private async commitLayer(s: StoreState, l: LayerInfo & { split?: Buffer }): Promise<void> {
    const files: Array<[string, string | Buffer]> = [
      ['diff', l.diffId], ['size', String(l.size)], ['tar-size', String(l.tarSize)],
      ['cache-id', l.cacheId], ['exact', String(l.exact)],
      ...(l.parent ? [['parent', l.parent] as [string, string]] : []),
      ...(l.split ? [['tar-split.gz', l.split] as [string, Buffer]] : []),
    ];
    await writeRecordDir(join(this.layout.tmp, scratchName('layer')), files, this.layout.layer(l.chainId));
    await unlink(this.layout.intent(l.cacheId)).catch(() => undefined);
    const { split: _s, ...info } = l;
    s.layers.set(l.chainId, info);
  }

  // ---- registries (./registry/*) ---------------------------------------------------

  /**
   * Pulls an image from a registry through the import path: the same verification,
   * parallelism and all-or-nothing cleanup; layers the store has are not downloaded.
   * Tagged with the normalised reference (`docker.io/library/busybox:1.36`).
   */
  async pull(ref: string, opts: PullOptions = {}): Promise<ImageInfo> {
    await mkdir(this.layout.tmp, { recursive: true });
    await this.refresh();
    const localConfig = async (id: string) => (this.state.images.has(id) ? readFile(this.layout.image(id)) : undefined);
    const plan = await planPull(ref, opts, { storeDir: this.dir, localConfig });
    try {
      // importOne takes its own locks (chain locks before the store lock): not under one here.
      await this.refresh();
      return plan.upToDate(this) ?? await plan.recorded(await this.importOne(plan.source, plan.desc, plan.importOptions));
    } finally {
      await plan.close();
    }
  }

  /**
   * Pushes a local image (tag, id or id prefix) to a registry reference; the manifest goes
   * last. Its layers are pinned meanwhile (no rmi or gc elsewhere removes them under the upload).
   */
  async push(image: string, ref: string, opts: PushOptions = {}): Promise<PushResult> {
    const unpin = await this.pinLayers(this.image(image).layers, `push ${image}`);
    try {
      return await pushImage(this, image, ref, opts);
    } finally {
      await unpin();
    }
  }

  // ---- tags, containers, removal ---------------------------------------------------

  async tag(imageRef: string, tag: string): Promise<void> {
    const t = validTag(tag, 'ERR_INVALID_OPTION', 'tag');
    await this.write(`tag ${imageRef} as ${t}`, async (s) => {
      const img = this.image(imageRef);
      s.tags.set(t, img.id);
      await saveRepositories(s, this.layout, this.dir);
    });
  }

  /** A container's read-write layer on top of an image; `name` follows layer id rules. */
  async createContainer(imageRef: string, name: string): Promise<ContainerInfo> {
    assertValidId(name);
    return this.write(`create container ${name}`, async (s) => {
      if (s.containers.has(name)) throw new CairnError('ERR_LAYER_EXISTS', `a container named ${name} exists; remove it with \`cairn rm ${name}\` or pick another name`, { subject: name });
      const img = this.image(imageRef);
      const parent = img.layers[img.layers.length - 1] ?? null;
      const mountId = randomBytes(32).toString('hex');
      await writeIntent(this.layout.intent(mountId), mountId);
      try {
        await this.driver.createReadWrite(mountId, parent ? this.layer(parent).cacheId : null);
        await writeRecordDir(join(this.layout.tmp, scratchName('mount')), [
          ['mount-id', mountId], ['image', img.id], ...(parent ? [['parent', parent] as const] : []),
        ], this.layout.mount(name));
      } catch (err) {
        await this.driver.remove(mountId).catch(() => undefined);
        throw err;
      } finally {
        await unlink(this.layout.intent(mountId)).catch(() => undefined);
      }
      const c: ContainerInfo = { name, mountId, parent, image: img.id };
      s.containers.set(name, c);
      return c;
    });
  }

  /**
   * Commits a container's changes as a new image on top of its image, as `docker commit`
   * does: the container's diff becomes a layer (shared if an identical one exists), the
   * image config gains its diff id and a history entry. The container is left as it is.
   */
  async commitContainer(name: string, opts: CommitOptions = {}): Promise<ImageInfo> {
    const tag = opts.tag === undefined ? undefined : validTag(opts.tag, 'ERR_INVALID_OPTION', 'the tag option');
    const { c, base, parentCache } = await this.read(`commit container ${name}`, () => {
      const c = this.container(name);
      return { c, base: this.image(c.image), parentCache: c.parent ? this.layer(c.parent).cacheId : null };
    });
    // The diff id must be known before the layer is applied (applyLayer verifies it), so
    // the changeset is spooled to a file once, hashed on the way.
    await mkdir(this.layout.tmp, { recursive: true });
    const spool = join(this.layout.tmp, scratchName('commit'));
    let pin: string | null = null;
    try {
      const hash = createHash('sha256');
      const diff = await this.driver.diff(c.mountId, parentCache);
      // The container is not trusted: a 16 TiB sparse file made with truncate(1) would
      // stream 16 TiB of zeros into the spool. The same bound as an import's.
      const max = opts.maxUncompressedBytes ?? DEFAULT_MAX_UNCOMPRESSED_BYTES;
      let spooled = 0;
      await pipeline(diff, async function* (source: AsyncIterable<Buffer>) {
        for await (const chunk of source) {
          spooled += chunk.length;
          if (spooled > max) {
            throw new CairnError('ERR_INVALID_ARCHIVE',
              `the changes of container ${name} exceed ${max} bytes as a tar (maxUncompressedBytes; sparse files count at their full size): not committed. ` +
              'Remove the large files from the container, or commit with a larger maxUncompressedBytes.', { subject: name });
          }
          hash.update(chunk);
          yield chunk;
        }
      }, createWriteStream(spool));
      const diffId = `sha256:${hash.digest('hex')}`;
      const chainId = chainIdOf(c.parent, diffId);
      pin = await this.write(`commit container ${name}`, () => {
        this.image(base.id); // still there: from now on the pin keeps its layers
        return this.pins.add([...base.layers, chainId]);
      });
      await this.makeLayers([{ chainId, diffId, parent: c.parent, blob: () => createReadStream(spool), prefetch: () => undefined, onBytes: () => undefined, onDone: () => undefined }], 1, [], max);
      return await this.write(`commit container ${name}`, async (s) => {
        const config = JSON.parse((await readFile(this.layout.image(base.id))).toString('utf8')) as {
          rootfs?: { type?: string; diff_ids?: string[] }; history?: unknown[]; created?: string;
        };
        const created = new Date().toISOString();
        config.created = created;
        config.rootfs = { type: 'layers', diff_ids: [...base.diffIds, diffId] };
        config.history = [...(config.history ?? []), { created, created_by: `cairn commit ${name}`, ...(opts.comment ? { comment: opts.comment } : {}) }];
        const configBytes = Buffer.from(JSON.stringify(config));
        const id = sha256Of(configBytes);
        await mkdirDurable(this.layout.images);
        await writeFileAtomic(this.layout.image(id), configBytes);
        const image: ImageInfo = { id, tags: [], diffIds: [...base.diffIds, diffId], layers: [...base.layers, chainId] };
        if (!s.images.has(id)) s.images.set(id, image);
        if (tag) s.tags.set(tag, id);
        await saveRepositories(s, this.layout, this.dir);
        await this.pins.drop(pin!);
        return s.images.get(id)!;
      });
    } finally {
      if (pin !== null) await this.pins.drop(pin);
      await rm(spool, { force: true });
    }
  }

  /** Removes a container's layer; ERR_LAYER_IN_USE (nothing removed) while it is mounted. */
  async removeContainer(name: string): Promise<void> {
    await this.write(`remove container ${name}`, async (s) => {
      const c = this.container(name);
      await this.driver.remove(c.mountId); // refuses while mounted (by any process); then nothing changed
      await rm(this.layout.mount(name), { recursive: true, force: true });
      s.containers.delete(name);
    });
  }

  /**
   * Untags an image; when no tag is left (or it was named by id) deletes it and releases
   * its layers, each removed once nothing uses it. ERR_LAYER_IN_USE while a container uses it.
   */
  async removeImage(ref: string): Promise<{ untagged: string[]; deleted: string | null; layersRemoved: string[] }> {
    return this.write(`remove image ${ref}`, async (s) => {
      const img = this.image(ref);
      const tag = normalizeTag(ref);
      const mine = [...s.tags].filter(([, id]) => id === img.id).map(([t]) => t);
      if (s.tags.get(tag) === img.id && mine.length > 1) {
        s.tags.delete(tag);
        await saveRepositories(s, this.layout, this.dir);
        return { untagged: [tag], deleted: null, layersRemoved: [] };
      }
      const users = this.containers().filter((c) => c.image === img.id).map((c) => c.name);
      if (users.length) {
        throw new CairnError('ERR_LAYER_IN_USE', `image ${ref} is used by container(s) ${users.join(', ')}; remove them first (\`cairn rm NAME\`)`, { subject: ref });
      }
      for (const t of mine) s.tags.delete(t);
      await saveRepositories(s, this.layout, this.dir);
      await rm(this.layout.image(img.id), { force: true });
      s.images.delete(img.id);
      const removed: string[] = [];
      let chain: string | null = img.layers[img.layers.length - 1] ?? null;
      while (chain && this.refcount(chain) === 0) {
        const l = this.layer(chain);
        if (!(await this.dropLayer(s, l))) break; // its driver layer is in use outside the store: it stays for a later gc
        removed.push(chain);
        chain = l.parent;
      }
      return { untagged: mine, deleted: img.id, layersRemoved: removed };
    });
  }

  /**
   * Metadata first (intent, then the layerdb entry goes), disk after: a crash leaves an
   * intent the next open finishes. If the driver refuses (someone outside the store has
   * the layer mounted), the entry comes back and false is returned. Under the write lock.
   */
  private async dropLayer(s: StoreState, l: LayerInfo): Promise<boolean> {
    await writeIntent(this.layout.intent(l.cacheId), l.cacheId);
    const trash = join(this.layout.tmp, scratchName('gone'));
    await rename(this.layout.layer(l.chainId), trash);
    await fsyncDir(this.layout.layerDb);
    s.layers.delete(l.chainId);
    try {
      await this.driver.remove(l.cacheId);
    } catch (err) {
      if (!isCairnError(err, 'ERR_LAYER_IN_USE')) throw err;
      await rename(trash, this.layout.layer(l.chainId));
      await fsyncDir(this.layout.layerDb);
      s.layers.set(l.chainId, l);
      await unlink(this.layout.intent(l.cacheId)).catch(() => undefined);
      return false;
    }
    await unlink(this.layout.intent(l.cacheId)).catch(() => undefined);
    await rm(trash, { recursive: true, force: true });
    await this.locks.tryLayer(hexOf(l.chainId), 'forget a removed layer', () => this.locks.forgetLayer(hexOf(l.chainId)));
    return true;
  }

  /** Removes untagged images no container uses, and finishes what dead processes left behind. */
  async gc(): Promise<{ imagesRemoved: string[]; layersRemoved: string[]; orphansRemoved: string[] }> {
    const orphansRemoved = await this.write('collect garbage', (s) => this.sweep(s));
    const doomed = await this.read('collect garbage', (s) => {
      const tagged = new Set(s.tags.values());
      return this.images().filter((img) => !tagged.has(img.id) && !this.containers().some((c) => c.image === img.id)).map((img) => img.id);
    });
    const imagesRemoved: string[] = [];
    const layersRemoved: string[] = [];
    for (const id of doomed) {
      const r = await this.removeImage(id).catch((err: unknown) => {
        if (isCairnError(err, 'ERR_IMAGE_NOT_FOUND') || isCairnError(err, 'ERR_LAYER_IN_USE')) return null; // gone or used meanwhile
        throw err;
      });
      if (r === null || r.deleted === null) continue;
      imagesRemoved.push(id);
      layersRemoved.push(...r.layersRemoved);
    }
    // Layers nobody uses (no child, image, container or import in progress): what an
    // import cut short had committed before its image, or a removal had not dropped yet. Top first.
    await this.write('collect garbage', async (s) => {
      for (let unused = this.unusedLayers(); unused.length > 0; unused = this.unusedLayers()) {
        let progress = false;
        for (const l of unused) {
          if (await this.dropLayer(s, l)) {
            layersRemoved.push(l.chainId);
            progress = true;
          }
        }
        if (!progress) break;
      }
    });
    // Partial downloads of interrupted pulls, and registry records of layers that are gone.
    await this.write('collect garbage', async (s) => {
      const dist = new DistributionMeta(this.dir);
      await dist.dropPartials();
      const diffIds = new Set([...s.layers.values()].map((l) => l.diffId));
      for (const d of await dist.diffIds()) if (!diffIds.has(d)) await dist.forget(d);
    });
    return { imagesRemoved, layersRemoved, orphansRemoved };
  }

  private unusedLayers(): LayerInfo[] {
    return this.layers().filter((l) => this.refcount(l.chainId) === 0);
  }

  // ---- export ----------------------------------------------------------------------

  /**
   * The layer's tar exactly as imported (same digest), rebuilt from its tar-split and the
   * layer's files. Layers marked `exact: false` fall back to the driver's diff (same
   * content, other bytes).
   */
  exportLayer(chainId: string): Readable {
    const l = this.layer(chainId);
    if (!l.exact) {
      const parentCache = l.parent ? this.layer(l.parent).cacheId : null;
      // eslint-disable-next-line @typescript-eslint/no-this-alias -- the generator below is not a method
      const store = this;
      return Readable.from((async function* () { yield* await store.driver.diff(l.cacheId, parentCache); })(), { objectMode: false });
    }
    return directStream((next, reused) => this.packLayer(chainId, new PackBuffers(next, reused)), REPLAY_CHUNK);
  }

  private async *packLayer(chainId: string, out: PackBuffers): AsyncGenerator<Buffer> {
    const unpin = await this.pinLayers([chainId], `export layer ${chainId}`);
    try {
      yield* this.replayLayer(chainId, out);
      yield* out.end();
    } finally {
      await unpin();
    }
  }

  /**
   * The exact layer's original tar into `out`'s buffers (exportLayer, exportImage), its
   * files read where the driver keeps them unmounted (core's LayerFilesDir), else through
   * a mount. The caller pins the layer. Returns the tar's size.
   * @internal
   */
  async *replayLayer(chainId: string, out: PackBuffers): AsyncGenerator<Buffer, number> {
    return yield* (await this.openReplay(chainId)).intoThenClose(out);
  }

  /**
   * The exact layer's replay (replayLayer), opened and its check started now, for a caller
   * that streams another layer meanwhile (exportImage). The caller pins the layer and
   * closes the replay.
   * @internal
   */
  async openReplay(chainId: string): Promise<LayerReplay> {
    const l = this.layer(chainId);
    const split = join(this.layout.layer(chainId), 'tar-split.gz');
    // Without a recorded tar size (no tar-size file, or 0) the rebuild is checked by its digest alone.
    const size = l.tarSize > 0 ? l.tarSize : undefined;
    if (hasLayerFilesDir(this.driver)) return LayerReplay.open(split, await this.driver.layerFilesDir(l.cacheId), l.diffId, size);
    const root = await this.driver.get(l.cacheId);
    try {
      return LayerReplay.open(split, root, l.diffId, size, () => this.driver.put(l.cacheId));
    } catch (err) {
      await this.driver.put(l.cacheId);
      throw err;
    }
  }

  /**
   * Pins `chains` as users for as long as this process needs them (an rmi or gc in any
   * process leaves them); returns what drops the pin. The drop is a write, so that other
   * processes' tables stop counting it at their next operation.
   * @internal
   */
  async pinLayers(chains: string[], why: string): Promise<() => Promise<void>> {
    const pin = await this.write(why, () => this.pins.add(chains));
    return async () => {
      try {
        await this.write(`${why}: done`, async (s) => {
          await this.pins.drop(pin);
          s.pins = await this.pins.load();
        });
      } finally {
        await this.pins.drop(pin);
      }
    };
  }

  /** The raw image config JSON. */
  async imageConfig(ref: string): Promise<Buffer> {
    return readFile(this.layout.image(this.image(ref).id));
  }

  // ---- crash repair ----------------------------------------------------------------

  /** At open: the sweep of repair.ts, under the write lock, only when a dead process left something. */
  private async recover(): Promise<void> {
    const dirty = await this.read('open the image store', (s) => hasAbandonedWork(s, this.layout));
    if (dirty) await this.write('repair the image store', (s) => this.sweep(s));
  }

  private sweep(s: StoreState): Promise<string[]> {
    return sweepAbandoned(s, this.layout, this.pins, this.driver);
  }
}
