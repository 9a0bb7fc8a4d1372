import { availableParallelism } from 'node:os';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, open, readdir, readFile, rename, rm, unlink } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import { dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import pLimit from 'p-limit';
import { CairnError, KeyedMutex, assertValidId, fsyncDir, secureDir, type StorageDriver } from '@cairnfs/core';
import { readSmall, writeFileAtomic } from './atomic.js';
import { chainIdOf, chainIds, hexOf, sha256Of } from './digest.js';
import { DEFAULT_MAX_UNCOMPRESSED_BYTES, decompressed } from './decompress.js';
import { describeSource, type ImageDescription } from './describe.js';
import { isStoreKey, normalizeTag, refMeaning, validTag } from './reference.js';
import { StoreLayout } from './layout.js';
import { openSource, type BlobSource } from './source.js';
import { SplitRecorder, reassemble } from './tarsplit.js';
import { planPull, type PullOptions } from './registry/pull.js';
import { pushImage, type PushOptions, type PushResult } from './registry/push.js';
import { localNameCandidates } from './registry/reference.js';
import { DistributionMeta } from './registry/distmeta.js';

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
}

/** Writes a new file and fsyncs it (callers fsync its directory once all are written). */
async function writeSyncedFile(path: string, data: string | Buffer): Promise<void> {
  const fh = await open(path, 'w', 0o600);
  try { await fh.writeFile(data); await fh.sync(); } finally { await fh.close(); }
}

/**
 * mkdir -p whose new directories survive power loss: each one's parent is fsynced, so the
 * first layer or image recorded under a fresh tree does not vanish with its directory.
 */
async function mkdirDurable(path: string): Promise<void> {
  const first = await mkdir(path, { recursive: true });
  if (first === undefined) return;
  for (let dir = path; ; dir = dirname(dir)) {
    await fsyncDir(dirname(dir));
    if (dir === first || dir === dirname(dir)) break;
  }
}

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
 */
export class LayerStore {
  private readonly layout: StoreLayout;
  private readonly layerMap = new Map<string, LayerInfo>();
  private readonly imageMap = new Map<string, ImageInfo>();
  private readonly containerMap = new Map<string, ContainerInfo>();
  /** tag → image id */
  private readonly tags = new Map<string, string>();
  /** One metadata change at a time: imports, removals and tagging interleave only between steps. */
  private readonly mutex = new KeyedMutex();

  private constructor(readonly driver: StorageDriver, readonly dir: string) {
    this.layout = new StoreLayout(dir);
  }

  static async open(driver: StorageDriver, opts: StoreOptions = {}): Promise<LayerStore> {
    const root = opts.root ?? dirname(driver.home);
    // image/ holds every layer's tar-split and every image's config: the caller's alone, as the driver homes.
    await secureDir(join(root, 'image'), 0o700, 'image store');
    await secureDir(join(root, 'image', driver.name), 0o700, 'image store');
    const store = new LayerStore(driver, join(root, 'image', driver.name));
    await store.load();
    return store;
  }

  // ---- reading ---------------------------------------------------------------------

  layers(): LayerInfo[] { return [...this.layerMap.values()]; }
  images(): ImageInfo[] { return [...this.imageMap.values()]; }
  containers(): ContainerInfo[] { return [...this.containerMap.values()]; }

  layer(chainId: string): LayerInfo {
    const l = this.layerMap.get(chainId);
    if (!l) throw notFound(`no layer with chain id ${chainId}; \`cairn layers\` lists them`);
    return l;
  }

  container(name: string): ContainerInfo {
    const c = this.containerMap.get(name);
    if (!c) throw notFound(`no container named ${name}; \`cairn create IMAGE NAME\` makes one`);
    return c;
  }

  /** Users of a layer: child layers, images whose top it is, containers on it. */
  refcount(chainId: string): number {
    let n = 0;
    for (const l of this.layerMap.values()) if (l.parent === chainId) n++;
    for (const i of this.imageMap.values()) if (i.layers[i.layers.length - 1] === chainId) n++;
    for (const c of this.containerMap.values()) if (c.parent === chainId) n++;
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
    const m = refMeaning(ref);
    const missing = () => new CairnError('ERR_IMAGE_NOT_FOUND', `no image ${ref}; \`cairn images\` lists them, \`cairn import FILE\` adds one`, { subject: ref });
    if (m.fullId) {
      const img = this.imageMap.get(m.fullId);
      if (img) return img;
      throw missing();
    }
    // `busybox:1.36` also finds what a pull recorded as `docker.io/library/busybox:1.36`, and back.
    let byTag: string | undefined;
    if (m.tag) for (const name of [m.tag, ...localNameCandidates(ref)]) { byTag = this.tags.get(name); if (byTag) break; }
    const hits = m.idPrefix ? [...this.imageMap.keys()].filter((id) => hexOf(id).startsWith(m.idPrefix!)) : [];
    if (byTag && hits.length > 0 && !(hits.length === 1 && hits[0] === byTag)) {
      throw new CairnError('ERR_INVALID_OPTION',
        `${ref} is ambiguous: it is a tag of image ${byTag} and a prefix of the id of ${hits.filter((h) => h !== byTag).join(', ')}; ` +
        'give the full image id (sha256:…) or the tag with a registry or repository path', { subject: ref });
    }
    if (byTag) return this.imageMap.get(byTag)!;
    if (hits.length === 1) return this.imageMap.get(hits[0]!)!;
    if (hits.length > 1) throw new CairnError('ERR_INVALID_OPTION', `image id prefix ${m.idPrefix} is ambiguous (${hits.length} images); give more digits`, { subject: ref });
    throw missing();
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
      for (const d of descs) out.push(await this.mutex.run('store', () => this.importOne(src, d, opts)));
      return out;
    } finally {
      await src.close();
    }
  }

  private async importOne(src: BlobSource, desc: ImageDescription, opts: ImportOptions): Promise<ImageInfo> {
    const chains = chainIds(desc.diffIds);
    const missing = chains.map((_, i) => i).filter((i) => !this.layerMap.has(chains[i]!));
    const sizes = await Promise.all(missing.map(async (i) => (await src.size(desc.layerPaths[i]!)) ?? 0));
    const progress: ImportProgress = {
      image: desc.id, layersDone: chains.length - missing.length, layersTotal: chains.length,
      bytesDone: 0, bytesTotal: sizes.reduce((a, b) => a + b, 0),
    };
    const report = (layer?: string) => opts.onProgress?.({ ...progress, ...(layer ? { layer } : {}) });
    report();

    const cacheIds = new Map<number, string>();
    const cacheOf = (i: number): string | null => (i < 0 ? null : this.layerMap.get(chains[i]!)?.cacheId ?? cacheIds.get(i)!);
    const applied = new Map<number, { size: number; tarSize: number; exact: boolean; split: Buffer }>();
    const create = async (i: number) => {
      const cacheId = randomBytes(32).toString('hex');
      await writeFileAtomic(this.layout.intent(cacheId), cacheId);
      cacheIds.set(i, cacheId);
      await this.driver.create(cacheId, cacheOf(i - 1));
    };
    const apply = async (i: number) => {
      const onBytes = (n: number) => { progress.bytesDone += n; report(); };
      applied.set(i, await this.applyLayer(cacheIds.get(i)!, cacheOf(i - 1), desc.diffIds[i]!, src.stream(desc.layerPaths[i]!), onBytes, opts.maxUncompressedBytes));
      progress.layersDone++;
      report(chains[i]);
    };

    try {
      if ((opts.parallel ?? true) && PARALLEL_DRIVERS.has(this.driver.name)) {
        // overlay2 layers are separate directories: create the chain (cheap), then fill them at once.
        for (const i of missing) await create(i);
        const limit = pLimit(opts.concurrency ?? availableParallelism());
        const results = await Promise.allSettled(missing.map((i) => limit(() => apply(i))));
        const failed = results.find((r) => r.status === 'rejected');
        if (failed) throw (failed as PromiseRejectedResult).reason;
      } else {
        // vfs, btrfs, zfs, devicemapper: a child starts as a snapshot of its parent, so in order.
        for (const i of missing) { await create(i); await apply(i); }
      }
      for (const i of missing) {
        await this.commitLayer({ chainId: chains[i]!, diffId: desc.diffIds[i]!, parent: i > 0 ? chains[i - 1]! : null, cacheId: cacheIds.get(i)!, ...applied.get(i)! });
      }
    } catch (err) {
      // Nothing of a failed import stays: remove the driver layers it made, top first.
      for (const i of [...cacheIds.keys()].sort((a, b) => b - a)) {
        if (this.layerMap.has(chains[i]!)) continue; // committed before the failure: a complete, valid layer
        const cacheId = cacheIds.get(i)!;
        await this.driver.remove(cacheId).catch(() => undefined);
        await unlink(this.layout.intent(cacheId)).catch(() => undefined);
      }
      throw err;
    }

    const image: ImageInfo = { id: desc.id, tags: [], diffIds: desc.diffIds, layers: chains };
    await mkdirDurable(this.layout.images);
    await writeFileAtomic(this.layout.image(desc.id), desc.config);
    this.imageMap.set(desc.id, this.imageMap.get(desc.id) ?? image);
    const tags = [...desc.tags, ...(opts.tag ? [opts.tag] : [])];
    for (const t of tags) this.tags.set(t, desc.id);
    await this.saveRepositories();
    return this.imageMap.get(desc.id)!;
  }

  /**
   * Applies one layer blob, hashing the uncompressed stream and recording its tar-split
   * as it passes to the driver; the diff id is checked once the stream is read to the end.
   */
  private async applyLayer(cacheId: string, parentCacheId: string | null, diffId: string,
    blob: AsyncIterable<Uint8Array>, onBytes: (n: number) => void, maxUncompressedBytes?: number) {
    const counted = (async function* () { for await (const c of blob) { onBytes(c.length); yield c; } })();
    const it = decompressed(counted, { maxBytes: maxUncompressedBytes, what: `layer ${diffId}` })[Symbol.asyncIterator]();
    const hash = createHash('sha256');
    const rec = new SplitRecorder({ maxLogicalBytes: maxUncompressedBytes ?? DEFAULT_MAX_UNCOMPRESSED_BYTES, what: `layer ${diffId}` });
    let tarSize = 0;
    const take = async (): Promise<IteratorResult<Buffer>> => {
      const r = await it.next();
      if (!r.done) { hash.update(r.value); rec.write(r.value); tarSize += r.value.length; }
      return r;
    };
    // The driver may stop reading at the end-of-archive marker; its return() must not
    // close the source, since the digest covers every byte up to EOF.
    const feed: AsyncIterable<Buffer> = {
      [Symbol.asyncIterator]: () => ({ next: take, return: async () => ({ done: true, value: undefined }) }),
    };
    let size: number;
    try {
      size = await this.driver.applyDiff(cacheId, parentCacheId, feed);
      while (!(await take()).done) { /* drain to EOF */ }
    } catch (err) {
      await it.return?.(undefined);
      throw err;
    }
    const split = await rec.finish();
    const got = `sha256:${hash.digest('hex')}`;
    if (got !== diffId) {
      throw new CairnError('ERR_INVALID_ARCHIVE',
        `layer content does not match the image: its diff id is ${got}, the image config says ${diffId}; the image is corrupt or was tampered with`,
        { subject: diffId });
    }
    return { size, tarSize, exact: rec.exact, split };
  }

  private async commitLayer(l: LayerInfo & { split?: Buffer }): Promise<void> {
    const stage = join(this.layout.tmp, `layer-${randomBytes(6).toString('hex')}`);
    await mkdir(stage, { recursive: true });
    const files: Array<[string, string | Buffer]> = [
      ['diff', l.diffId], ['size', String(l.size)], ['tar-size', String(l.tarSize)],
      ['cache-id', l.cacheId], ['exact', String(l.exact)],
      ...(l.parent ? [['parent', l.parent] as [string, string]] : []),
      ...(l.split ? [['tar-split.gz', l.split] as [string, Buffer]] : []),
    ];
    for (const [name, data] of files) await writeSyncedFile(join(stage, name), data);
    await fsyncDir(stage);
    await mkdirDurable(this.layout.layerDb);
    await rename(stage, this.layout.layer(l.chainId));
    await fsyncDir(this.layout.layerDb);
    await unlink(this.layout.intent(l.cacheId)).catch(() => undefined);
    const { split: _s, ...info } = l;
    this.layerMap.set(l.chainId, info);
  }

  // ---- registries (./registry/*) ---------------------------------------------------

  /**
   * Pulls an image from a registry through the import path: the same verification,
   * parallelism and all-or-nothing cleanup; layers the store has are not downloaded.
   * Tagged with the normalised reference (`docker.io/library/busybox:1.36`).
   */
  async pull(ref: string, opts: PullOptions = {}): Promise<ImageInfo> {
    await mkdir(this.layout.tmp, { recursive: true });
    const localConfig = async (id: string) => (this.imageMap.has(id) ? readFile(this.layout.image(id)) : undefined);
    const plan = await planPull(ref, opts, { storeDir: this.dir, localConfig });
    try {
      return await this.mutex.run('store', async () => plan.upToDate(this) ?? plan.recorded(await this.importOne(plan.source, plan.desc, plan.importOptions)));
    } finally {
      await plan.close();
    }
  }

  /** Pushes a local image (tag, id or id prefix) to a registry reference; the manifest goes last. */
  async push(image: string, ref: string, opts: PushOptions = {}): Promise<PushResult> {
    return this.mutex.run('store', () => pushImage(this, image, ref, opts));
  }

  // ---- tags, containers, removal ---------------------------------------------------

  async tag(imageRef: string, tag: string): Promise<void> {
    await this.mutex.run('store', async () => {
      const t = validTag(tag, 'ERR_INVALID_OPTION', 'tag');
      const img = this.image(imageRef);
      this.tags.set(t, img.id);
      await this.saveRepositories();
    });
  }

  /** A container's read-write layer on top of an image; `name` follows layer id rules. */
  async createContainer(imageRef: string, name: string): Promise<ContainerInfo> {
    assertValidId(name);
    return this.mutex.run('store', async () => {
      if (this.containerMap.has(name)) throw new CairnError('ERR_LAYER_EXISTS', `a container named ${name} exists; remove it with \`cairn rm ${name}\` or pick another name`, { subject: name });
      const img = this.image(imageRef);
      const parent = img.layers[img.layers.length - 1] ?? null;
      const mountId = randomBytes(32).toString('hex');
      await writeFileAtomic(this.layout.intent(mountId), mountId);
      try {
        await this.driver.createReadWrite(mountId, parent ? this.layer(parent).cacheId : null);
        const stage = join(this.layout.tmp, `mount-${randomBytes(6).toString('hex')}`);
        await mkdir(stage, { recursive: true });
        // Durable before the rename names the container: else power loss can leave it with empty files.
        await writeSyncedFile(join(stage, 'mount-id'), mountId);
        await writeSyncedFile(join(stage, 'image'), img.id);
        if (parent) await writeSyncedFile(join(stage, 'parent'), parent);
        await fsyncDir(stage);
        await mkdirDurable(this.layout.mounts);
        await rename(stage, this.layout.mount(name));
        await fsyncDir(this.layout.mounts);
      } catch (err) {
        await this.driver.remove(mountId).catch(() => undefined);
        throw err;
      } finally {
        await unlink(this.layout.intent(mountId)).catch(() => undefined);
      }
      const c: ContainerInfo = { name, mountId, parent, image: img.id };
      this.containerMap.set(name, c);
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
    return this.mutex.run('store', async () => {
      const c = this.container(name);
      const base = this.image(c.image);
      const parentCache = c.parent ? this.layer(c.parent).cacheId : null;

      // The diff id must be known before the layer is applied (applyLayer verifies it), so
      // the changeset is spooled to a file once, hashed on the way.
      await mkdir(this.layout.tmp, { recursive: true });
      const spool = join(this.layout.tmp, `commit-${randomBytes(6).toString('hex')}.tar`);
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

        if (!this.layerMap.has(chainId)) {
          const cacheId = randomBytes(32).toString('hex');
          await writeFileAtomic(this.layout.intent(cacheId), cacheId);
          try {
            await this.driver.create(cacheId, parentCache);
            const applied = await this.applyLayer(cacheId, parentCache, diffId, createReadStream(spool), () => undefined, max);
            await this.commitLayer({ chainId, diffId, parent: c.parent, cacheId, ...applied });
          } catch (err) {
            await this.driver.remove(cacheId).catch(() => undefined);
            await unlink(this.layout.intent(cacheId)).catch(() => undefined);
            throw err;
          }
        }

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
        this.imageMap.set(id, this.imageMap.get(id) ?? image);
        if (tag) this.tags.set(tag, id);
        await this.saveRepositories();
        return this.imageMap.get(id)!;
      } finally {
        await rm(spool, { force: true });
      }
    });
  }

  /** Removes a container's layer; ERR_LAYER_IN_USE (nothing removed) while it is mounted. */
  async removeContainer(name: string): Promise<void> {
    await this.mutex.run('store', async () => {
      const c = this.container(name);
      await this.driver.remove(c.mountId); // refuses while mounted; then nothing changed
      await rm(this.layout.mount(name), { recursive: true, force: true });
      this.containerMap.delete(name);
    });
  }

  /**
   * Untags an image; when no tag is left (or it was named by id) deletes it and releases
   * its layers, each removed once nothing uses it. ERR_LAYER_IN_USE while a container uses it.
   */
  async removeImage(ref: string): Promise<{ untagged: string[]; deleted: string | null; layersRemoved: string[] }> {
    return this.mutex.run('store', async () => {
      const img = this.image(ref);
      const tag = normalizeTag(ref);
      const mine = [...this.tags].filter(([, id]) => id === img.id).map(([t]) => t);
      if (this.tags.get(tag) === img.id && mine.length > 1) {
        this.tags.delete(tag);
        await this.saveRepositories();
        return { untagged: [tag], deleted: null, layersRemoved: [] };
      }
      const users = this.containers().filter((c) => c.image === img.id).map((c) => c.name);
      if (users.length) {
        throw new CairnError('ERR_LAYER_IN_USE', `image ${ref} is used by container(s) ${users.join(', ')}; remove them first (\`cairn rm NAME\`)`, { subject: ref });
      }
      for (const t of mine) this.tags.delete(t);
      await this.saveRepositories();
      await rm(this.layout.image(img.id), { force: true });
      this.imageMap.delete(img.id);
      const removed: string[] = [];
      let chain: string | null = img.layers[img.layers.length - 1] ?? null;
      while (chain && this.refcount(chain) === 0) {
        const l = this.layer(chain);
        await this.dropLayer(l);
        removed.push(chain);
        chain = l.parent;
      }
      return { untagged: mine, deleted: img.id, layersRemoved: removed };
    });
  }

  /** Metadata first (intent, then the layerdb entry goes), disk after: a crash leaves an intent the next open finishes. */
  private async dropLayer(l: LayerInfo): Promise<void> {
    await writeFileAtomic(this.layout.intent(l.cacheId), l.cacheId);
    const trash = join(this.layout.tmp, `gone-${randomBytes(6).toString('hex')}`);
    await rename(this.layout.layer(l.chainId), trash);
    await fsyncDir(this.layout.layerDb);
    this.layerMap.delete(l.chainId);
    await this.driver.remove(l.cacheId);
    await unlink(this.layout.intent(l.cacheId)).catch(() => undefined);
    await rm(trash, { recursive: true, force: true });
  }

  /** Removes untagged images no container uses, and finishes what crashes left behind. */
  async gc(): Promise<{ imagesRemoved: string[]; layersRemoved: string[]; orphansRemoved: string[] }> {
    const orphansRemoved = await this.mutex.run('store', () => this.sweep());
    const tagged = new Set(this.tags.values());
    const imagesRemoved: string[] = [];
    const layersRemoved: string[] = [];
    for (const img of this.images()) {
      if (tagged.has(img.id) || this.containers().some((c) => c.image === img.id)) continue;
      const r = await this.removeImage(img.id);
      imagesRemoved.push(img.id);
      layersRemoved.push(...r.layersRemoved);
    }
    // Layers nobody uses (no child, image or container): what an import cut short had
    // committed before its image, or a removal cut short had not dropped yet. Top first.
    await this.mutex.run('store', async () => {
      for (let unused = this.unusedLayers(); unused.length > 0; unused = this.unusedLayers()) {
        for (const l of unused) {
          await this.dropLayer(l);
          layersRemoved.push(l.chainId);
        }
      }
    });
    // Partial downloads of interrupted pulls, and registry records of layers that are gone.
    await this.mutex.run('store', async () => {
      const dist = new DistributionMeta(this.dir);
      await dist.dropPartials();
      const diffIds = new Set(this.layers().map((l) => l.diffId));
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
    // eslint-disable-next-line @typescript-eslint/no-this-alias -- the generator below is not a method
    const store = this;
    return Readable.from((async function* () {
      const parentCache = l.parent ? store.layer(l.parent).cacheId : null;
      if (!l.exact) { yield* await store.driver.diff(l.cacheId, parentCache); return; }
      const split = await readFile(join(store.layout.layer(chainId), 'tar-split.gz'));
      const root = await store.driver.get(l.cacheId);
      try {
        yield* reassemble(split, root, l.diffId);
      } finally {
        await store.driver.put(l.cacheId);
      }
    })(), { objectMode: false });
  }

  /** The raw image config JSON. */
  async imageConfig(ref: string): Promise<Buffer> {
    return readFile(this.layout.image(this.image(ref).id));
  }

  /** Tags of an image. */
  tagsOf(imageId: string): string[] {
    return [...this.tags].filter(([, id]) => id === imageId).map(([t]) => t).sort();
  }

  // ---- persistence -----------------------------------------------------------------

  private async saveRepositories(): Promise<void> {
    const repos: Record<string, Record<string, string>> = {};
    for (const [tag, id] of [...this.tags].sort()) {
      const name = tag.includes('@') ? tag.slice(0, tag.indexOf('@')) : tag.slice(0, tag.lastIndexOf(':'));
      (repos[name] ??= {})[tag] = id;
    }
    await mkdir(this.dir, { recursive: true });
    await writeFileAtomic(this.layout.repositories, JSON.stringify({ Repositories: repos }, null, 2) + '\n');
    for (const img of this.imageMap.values()) img.tags = this.tagsOf(img.id);
  }

  private async load(): Promise<void> {
    await mkdir(this.layout.tmp, { recursive: true });
    for (const hex of await readdir(this.layout.layerDb).catch(() => [] as string[])) {
      const d = join(this.layout.layerDb, hex);
      const diffId = await readSmall(join(d, 'diff'));
      const cacheId = await readSmall(join(d, 'cache-id'));
      if (!diffId || !cacheId) continue; // not a layer: skip rather than refuse to open
      this.layerMap.set(`sha256:${hex}`, {
        chainId: `sha256:${hex}`, diffId, cacheId, parent: (await readSmall(join(d, 'parent'))) ?? null,
        size: Number(await readSmall(join(d, 'size')) ?? 0), tarSize: Number(await readSmall(join(d, 'tar-size')) ?? 0),
        exact: (await readSmall(join(d, 'exact'))) === 'true',
      });
    }
    for (const hex of await readdir(this.layout.images).catch(() => [] as string[])) {
      if (!/^[0-9a-f]{64}$/.test(hex)) continue;
      try {
        const cfg = JSON.parse(await readFile(join(this.layout.images, hex), 'utf8')) as { rootfs?: { diff_ids?: string[] } };
        const diffIds = cfg.rootfs?.diff_ids ?? [];
        this.imageMap.set(`sha256:${hex}`, { id: `sha256:${hex}`, tags: [], diffIds, layers: chainIds(diffIds) });
      } catch { /* a torn config cannot exist (atomic writes); an alien file is ignored */ }
    }
    const repos = await readSmall(this.layout.repositories);
    if (repos) {
      const parsed = JSON.parse(repos) as { Repositories?: Record<string, Record<string, string>> };
      for (const byTag of Object.values(parsed.Repositories ?? {})) {
        // A tag that could pose as an image id (written before tags were validated) is dropped.
        for (const [tag, id] of Object.entries(byTag)) if (this.imageMap.has(id) && isStoreKey(tag)) this.tags.set(normalizeTag(tag), id);
      }
    }
    for (const img of this.imageMap.values()) img.tags = this.tagsOf(img.id);
    for (const name of await readdir(this.layout.mounts).catch(() => [] as string[])) {
      const d = this.layout.mount(name);
      const mountId = await readSmall(join(d, 'mount-id'));
      const image = await readSmall(join(d, 'image'));
      if (!mountId || !image) continue;
      this.containerMap.set(name, { name, mountId, image, parent: (await readSmall(join(d, 'parent'))) ?? null });
    }
    await this.sweep();
  }

  /** Finishes interrupted creates and removes: driver layers named by an intent file that no metadata claims are removed. */
  private async sweep(): Promise<string[]> {
    const claimed = new Set([...this.layerMap.values()].map((l) => l.cacheId));
    for (const c of this.containerMap.values()) claimed.add(c.mountId);
    const pending = new Map<string, string>(); // cache id → its intent file
    for (const name of await readdir(this.layout.tmp).catch(() => [] as string[])) {
      const p = join(this.layout.tmp, name);
      if (name.startsWith('intent-')) {
        const cacheId = name.slice('intent-'.length);
        if (!claimed.has(cacheId) && await this.driver.exists(cacheId)) pending.set(cacheId, p);
        else await unlink(p).catch(() => undefined);
      } else {
        await rm(p, { recursive: true, force: true });
      }
    }
    // An import cut short leaves a chain of driver layers, and drivers refuse to remove a
    // parent before its children; which is which is not recorded, so retry the refused
    // ones while a round makes progress (found by the import kill trials: in directory
    // order the store failed to open until someone removed the layers by hand).
    const removed: string[] = [];
    while (pending.size > 0) {
      const before = pending.size;
      let refused: unknown = null;
      for (const [cacheId, intent] of [...pending]) {
        try {
          await this.driver.remove(cacheId);
        } catch (err) {
          if (!(err instanceof CairnError && err.code === 'ERR_LAYER_IN_USE')) throw err;
          refused = err;
          continue;
        }
        pending.delete(cacheId);
        removed.push(cacheId);
        await unlink(intent).catch(() => undefined);
      }
      if (pending.size === before) throw refused; // nothing went this round: a user outside the store holds them
    }
    return removed;
  }
}
