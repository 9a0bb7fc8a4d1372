// Pull: resolve a reference to one image manifest (choosing the platform in a list or
// index), fetch and check its config, and hand the store an image description whose layer
// "files" are registry blobs streamed on demand. The store applies them exactly as an
// import does (store.ts importOne: decompress + hash + apply pipelined, concurrently on
// overlay2, everything removed on failure); layers it already has are never requested.
import { describeConfig, type ImageDescription } from '../describe.js';
import type { BlobSource } from '../source.js';
import type { ImageInfo, ImportOptions, ImportProgress, LayerStore } from '../store.js';
import { chainIds } from '../digest.js';
import { CairnError } from '@cairnfs/core';
import { RegistryClient, type ClientOptions } from './client.js';
import { DistributionMeta } from './distmeta.js';
import { blobStream, fetchManifest, fetchSmallBlob, type FetchedManifest } from './download.js';
import { Transport } from './http.js';
import {
  MAX_CONFIG_BYTES, checkConfigType, choosePlatform, formatPlatform, hostPlatform, layerCompression, parsePlatform,
  type Descriptor, type Platform,
} from './manifest.js';
import { formatReference, nameOf, parseReference, withDefaultTag, type Reference } from './reference.js';

export interface PullOptions extends ClientOptions {
  /** `os/arch[/variant]` to pick from a multi-platform image; default this host's (linux/amd64 here). */
  platform?: string;
  /**
   * Mirrors per registry, tried in order before the registry itself (`{ 'docker.io':
   * ['https://mirror.local'] }`); a mirror that fails or lacks the image is skipped.
   */
  mirrors?: Record<string, string[]>;
  /** Layers downloaded and applied at once on drivers that can (overlay2, aufs); default max(3, CPUs). */
  concurrency?: number;
  /** As for import: overlay2/aufs apply layers in parallel unless false. */
  parallel?: boolean;
  /** As for import: the decompression bound per layer (default 64 GiB). */
  maxUncompressedBytes?: number;
  onProgress?: (p: PullProgress) => void;
}

export type LayerStatus = 'present' | 'waiting' | 'downloading' | 'applied';

export interface LayerProgress {
  index: number;
  /** The compressed blob's digest. */
  digest: string;
  status: LayerStatus;
  bytesDone: number;
  bytesTotal: number;
  /** Average download rate of this layer so far. */
  bytesPerSecond: number;
}

export interface PullProgress {
  /** The normalised reference (`docker.io/library/busybox:1.36`). */
  ref: string;
  /** The image id (config digest). */
  image: string;
  layersDone: number;
  layersTotal: number;
  /** Compressed bytes received for layers the store lacked, and their total. */
  bytesDone: number;
  bytesTotal: number;
  /** The layer this event is about, if any. */
  layer?: LayerProgress;
}

/** What the store needs to run a pull through its import path. */
export interface PullPlan {
  ref: Reference;
  /** The reference the image is recorded under. */
  tag: string;
  /** Digest of the manifest (or index) the reference resolved to. */
  manifestDigest: string;
  desc: ImageDescription;
  source: BlobSource;
  importOptions: ImportOptions;
  /** The image, when the store has it complete under this tag already (then nothing is written). */
  upToDate(store: LayerStore): ImageInfo | undefined;
  /** Remembers where the imported image's layers came from (for pushes); returns the image. */
  recorded(img: ImageInfo): Promise<ImageInfo>;
  close(): Promise<void>;
}

export interface PullContext {
  storeDir: string;
  /** The config of an image the store already has, by id. */
  localConfig(id: string): Promise<Buffer | undefined>;
}

/** Checks a reference and options without any request (ERR_INVALID_OPTION). */
export function checkPullArgs(ref: string, opts: PullOptions): { ref: Reference; platform: Platform } {
  const r = withDefaultTag(parseReference(ref));
  const platform = opts.platform !== undefined ? parsePlatform(opts.platform) : hostPlatform();
  for (const [registry, urls] of Object.entries(opts.mirrors ?? {})) {
    for (const u of urls) {
      let url: URL;
      try { url = new URL(u); } catch { throw new CairnError('ERR_INVALID_OPTION', `mirror ${JSON.stringify(u)} for ${registry} is not a URL`, { subject: u }); }
      if (url.protocol !== 'https:' && !(url.protocol === 'http:' && opts.insecure)) {
        throw new CairnError('ERR_INVALID_OPTION', `mirror ${u} for ${registry}: only https mirrors, or http with insecure: true`, { subject: u });
      }
    }
  }
  return { ref: r, platform };
}

/** The endpoints to try for a registry: its mirrors first, then itself. */
function clientsFor(ref: Reference, opts: PullOptions): RegistryClient[] {
  const transport = new Transport(opts);
  const mirrors = (opts.mirrors?.[ref.registry] ?? []).map((url) =>
    new RegistryClient(new URL(url).host, opts, { mirror: url, repository: ref.repository, transport }));
  return [...mirrors, new RegistryClient(ref.registry, opts, { repository: ref.repository, transport })];
}

async function resolveManifest(client: RegistryClient, ref: Reference, platform: Platform, explicit: boolean): Promise<{ top: FetchedManifest; image: FetchedManifest }> {
  const top = await fetchManifest(client, ref.repository, ref.digest ?? ref.tag!, ref.digest ? { digest: ref.digest } : undefined);
  if (top.manifest.kind === 'image') return { top, image: top };
  const chosen = choosePlatform(top.manifest.manifests, platform);
  if (!chosen) {
    const have = top.manifest.manifests.filter((m) => m.platform && m.platform.os !== 'unknown').map((m) => formatPlatform(m.platform!));
    throw new CairnError('ERR_IMAGE_NOT_FOUND',
      `${formatReference(ref)} has no image for ${formatPlatform(platform)}${explicit ? '' : ' (this host)'}; it has ${have.join(', ') || 'no platform-labelled images'}. Pass platform to pick one.`,
      { subject: formatReference(ref) });
  }
  const image = await fetchManifest(client, ref.repository, chosen.digest, { digest: chosen.digest, size: chosen.size });
  if (image.manifest.kind !== 'image') {
    throw new CairnError('ERR_NOT_SUPPORTED', `the index entry for ${formatPlatform(platform)} in ${formatReference(ref)} is itself an index; nested indexes are not followed`, { subject: chosen.digest });
  }
  return { top, image };
}

/**
 * Resolves `ref` and prepares its layers as a {@link BlobSource}. Requests: the manifest
 * (and the platform's manifest in a list), the config unless the store has the image;
 * layer blobs only when the store's import asks for them.
 */
export async function planPull(refText: string, opts: PullOptions, ctx: PullContext): Promise<PullPlan> {
  const { ref, platform } = checkPullArgs(refText, opts);
  const clients = clientsFor(ref, opts);
  const closeAll = async () => { await clients[0]!.transport.close(); };
  try {
    let client: RegistryClient | undefined;
    let resolved: { top: FetchedManifest; image: FetchedManifest } | undefined;
    for (const [i, c] of clients.entries()) {
      try {
        resolved = await resolveManifest(c, ref, platform, opts.platform !== undefined);
        client = c;
        break;
      } catch (err) {
        // A mirror that cannot serve the image is skipped; the registry's own answer is final.
        if (i === clients.length - 1 || (opts.signal?.aborted ?? false)) throw err;
      }
    }
    const manifest = resolved!.image.manifest as Extract<FetchedManifest['manifest'], { kind: 'image' }>;
    checkConfigType(manifest.config);
    manifest.layers.forEach((l, i) => layerCompression(l, i));

    const what = `the config of ${formatReference(ref)}`;
    const config = (await ctx.localConfig(manifest.config.digest)) ?? await fetchSmallBlob(client!, ref.repository, manifest.config, MAX_CONFIG_BYTES, what);
    const tag = ref.digest ? `${nameOf(ref)}@${ref.digest}` : formatReference(ref);
    const desc = describeConfig(config, manifest.layers.map((l) => l.digest), [tag]);
    if (opts.platform !== undefined) checkConfigPlatform(config, platform, ref);

    const meta = new DistributionMeta(ctx.storeDir);
    await meta.ensureDownloads();
    const progress = new PullReporter(tag, desc.id, manifest.layers, opts.onProgress);
    const source = new RegistryBlobSource(client!, ref.repository, manifest.layers, meta, progress);
    const layerChains = chainIds(desc.diffIds);
    const importOptions: ImportOptions = {
      concurrency: opts.concurrency ?? 3,
      ...(opts.parallel !== undefined ? { parallel: opts.parallel } : {}),
      ...(opts.maxUncompressedBytes !== undefined ? { maxUncompressedBytes: opts.maxUncompressedBytes } : {}),
      onProgress: (p) => progress.fromImport(p, layerChains),
    };
    return {
      ref, tag, manifestDigest: resolved!.top.digest, desc, source, importOptions,
      upToDate: (store) => {
        const have = store.images().find((i) => i.id === desc.id);
        const chains = new Set(store.layers().map((l) => l.chainId));
        if (!have || !store.tagsOf(have.id).includes(tag) || !have.layers.every((l) => chains.has(l))) return undefined;
        const n = have.layers.length;
        progress.fromImport({ image: have.id, layersDone: n, layersTotal: n, bytesDone: 0, bytesTotal: 0 }, layerChains);
        return have;
      },
      recorded: async (img) => {
        for (const [i, l] of manifest.layers.entries()) {
          await meta.record(desc.diffIds[i]!, { digest: l.digest, mediaType: l.mediaType, size: l.size, registry: ref.registry, repository: ref.repository });
        }
        return img;
      },
      close: closeAll,
    };
  } catch (err) {
    await closeAll();
    throw err;
  }
}

function checkConfigPlatform(config: Buffer, want: Platform, ref: Reference): void {
  let cfg: { os?: unknown; architecture?: unknown; variant?: unknown };
  try { cfg = JSON.parse(config.toString('utf8')) as typeof cfg; } catch { return; } // describeConfig has parsed it already
  if (typeof cfg.os === 'string' && typeof cfg.architecture === 'string' && (cfg.os !== want.os || cfg.architecture !== want.architecture)) {
    throw new CairnError('ERR_IMAGE_NOT_FOUND',
      `${formatReference(ref)} is a ${cfg.os}/${cfg.architecture} image, not ${formatPlatform(want)} as asked`, { subject: formatReference(ref) });
  }
}

/** The image's layers as a source the importer streams from: blobs by digest, verified, resumable. */
class RegistryBlobSource implements BlobSource {
  private readonly byDigest = new Map<string, { desc: Descriptor; index: number }>();
  /** Partial files in use: a blob that appears twice in one image streams its second copy without one. */
  private readonly partialsInUse = new Set<string>();
  /** Downloads started ahead of their stream, by digest (see prefetch). */
  private readonly prefetches = new Map<string, Promise<void>>();
  private closing = false;
  /** Bytes of a blob its prefetch already reported as progress. */
  private readonly reported = new Map<string, number>();

  constructor(private readonly client: RegistryClient, private readonly repository: string, layers: Descriptor[],
    private readonly meta: DistributionMeta, private readonly progress: PullReporter) {
    layers.forEach((desc, index) => { if (!this.byDigest.has(desc.digest)) this.byDigest.set(desc.digest, { desc, index }); });
  }

  async read(): Promise<Buffer | undefined> { return undefined; }
  async size(digest: string): Promise<number | undefined> { return this.byDigest.get(digest)?.desc.size; }

  async *stream(digest: string): AsyncIterable<Uint8Array> {
    const hit = this.byDigest.get(digest)!;
    const fetched = this.prefetches.get(digest);
    if (fetched) {
      this.prefetches.delete(digest);
      // Whatever the prefetch got is in the partial file: read (and verified) from there,
      // the rest fetched with a Range request as any resume is.
      await fetched;
    }
    const own = !this.partialsInUse.has(digest);
    if (own) this.partialsInUse.add(digest);
    try {
      if (!fetched) this.progress.layer(hit.index, 'downloading', 0);
      yield* blobStream(this.client, this.repository, hit.desc, {
        ...(own ? { partial: this.meta.partial(digest) } : {}),
        onBytes: (n: number) => {
          // Bytes a prefetch reported are not counted twice.
          const skip = Math.min(n, this.reported.get(digest) ?? 0);
          if (skip) this.reported.set(digest, this.reported.get(digest)! - skip);
          if (n > skip) this.progress.layer(hit.index, 'downloading', n - skip);
        },
      });
    } finally {
      if (own) this.partialsInUse.delete(digest);
    }
  }

  /** Downloads a blob into its partial file while the layer before it is applied. */
  prefetch(digest: string): void {
    const hit = this.byDigest.get(digest);
    if (!hit || this.closing || this.prefetches.has(digest) || this.partialsInUse.has(digest)) return;
    this.partialsInUse.add(digest);
    const run = (async () => {
      this.progress.layer(hit.index, 'downloading', 0);
      const blob = blobStream(this.client, this.repository, hit.desc, {
        partial: this.meta.partial(digest), keepComplete: true,
        onBytes: (n) => { this.reported.set(digest, (this.reported.get(digest) ?? 0) + n); this.progress.layer(hit.index, 'downloading', n); },
      });
      // Returning early (close) ends the request; what arrived stays only if the stream was cut.
      for await (const _ of blob) if (this.closing) break;
    })().catch(() => undefined) // the stream that follows fetches (and reports) what the prefetch could not
      .finally(() => this.partialsInUse.delete(digest));
    this.prefetches.set(digest, run);
  }

  async close(): Promise<void> {
    this.closing = true;
    await Promise.all(this.prefetches.values());
    await this.client.close();
  }
}

/** Turns blob bytes and the importer's layer events into {@link PullProgress} events (per layer at most every 100 ms). */
class PullReporter {
  private readonly layers: LayerProgress[];
  private readonly started: number[];
  private readonly lastSent: number[];
  private layersDone = 0;
  private bytesDone = 0;
  private bytesTotal = 0;
  private first = true;

  constructor(private readonly ref: string, private readonly image: string, descs: Descriptor[], private readonly sink?: (p: PullProgress) => void) {
    this.layers = descs.map((d, index) => ({ index, digest: d.digest, status: 'waiting', bytesDone: 0, bytesTotal: d.size, bytesPerSecond: 0 }));
    this.started = descs.map(() => 0);
    this.lastSent = descs.map(() => 0);
  }

  private emit(layer?: LayerProgress): void {
    this.sink?.({ ref: this.ref, image: this.image, layersDone: this.layersDone, layersTotal: this.layers.length,
      bytesDone: this.bytesDone, bytesTotal: this.bytesTotal, ...(layer ? { layer: { ...layer } } : {}) });
  }

  layer(index: number, status: LayerStatus, bytes: number): void {
    const l = this.layers[index]!;
    const now = Date.now();
    if (!this.started[index]) this.started[index] = now;
    l.status = status;
    l.bytesDone += bytes;
    this.bytesDone += bytes;
    l.bytesPerSecond = Math.round(l.bytesDone / Math.max(0.001, (now - this.started[index]!) / 1000));
    if (bytes === 0 || l.bytesDone === l.bytesTotal || now - this.lastSent[index]! >= 100) {
      this.lastSent[index] = now;
      this.emit(l);
    }
  }

  fromImport(p: ImportProgress, chains: string[]): void {
    this.layersDone = p.layersDone;
    this.bytesTotal = p.bytesTotal;
    if (p.layer === undefined) {
      if (this.first) { // the first event: which layers the store has
        this.first = false;
        const missing = p.layersTotal - p.layersDone;
        for (const l of this.layers.slice(0, this.layers.length - missing)) { l.status = 'present'; this.emit(l); }
        if (missing === 0) this.emit();
      }
      return;
    }
    const index = chains.indexOf(p.layer);
    if (index >= 0) { this.layers[index]!.status = 'applied'; this.emit(this.layers[index]); }
  }
}

