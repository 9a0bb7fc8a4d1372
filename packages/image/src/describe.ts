// What images a source holds: docker save's manifest.json when present (every docker
// version writes it, also next to the OCI layout of docker ≥ 25), else the OCI layout's
// index.json, following nested indexes and picking this host's platform.
import { posix } from 'node:path';
import { CairnError } from '@cairnfs/core';
import { assertDigest, hexOf, sha256Of } from './digest.js';
import type { BlobSource } from './source.js';
import { validTag } from './reference.js';

export interface ImageDescription {
  /** Raw config JSON bytes; the image id is their sha256. */
  config: Buffer;
  id: string;
  diffIds: string[];
  /** Source paths of the layer blobs, bottom first (possibly compressed). */
  layerPaths: string[];
  /** `name:tag` references found in the source. */
  tags: string[];
}

const bad = (what: string) => new CairnError('ERR_INVALID_ARCHIVE', `not a valid image: ${what}`);

function parseJson<T>(buf: Buffer, what: string): T {
  try { return JSON.parse(buf.toString('utf8')) as T; } catch { throw bad(`${what} is not valid JSON`); }
}

async function need(src: BlobSource, path: string): Promise<Buffer> {
  const b = await src.read(path);
  if (!b) throw bad(`${path} is missing`);
  return b;
}

/** An image description from its config and layer paths; checks the diff ids against the layers. */
export function describeConfig(config: Buffer, layerPaths: string[], tags: string[]): ImageDescription {
  const cfg = parseJson<{ rootfs?: { type?: string; diff_ids?: unknown } }>(config, 'the image config');
  const ids = cfg.rootfs?.diff_ids;
  if (!Array.isArray(ids)) throw bad('the image config has no rootfs.diff_ids');
  const diffIds = ids.map((d, i) => assertDigest(d, `diff id ${i} of the image config`));
  if (diffIds.length !== layerPaths.length) {
    throw bad(`the config lists ${diffIds.length} layers (rootfs.diff_ids) but the manifest ${layerPaths.length}`);
  }
  return { config, id: sha256Of(config), diffIds, layerPaths, tags };
}

const PLATFORM_ARCH: Record<string, string> = { x64: 'amd64', arm64: 'arm64', arm: 'arm', ppc64: 'ppc64le', s390x: 's390x', ia32: '386' };

/**
 * Most image indexes nested below index.json. Real layouts use one level (docker ≥ 25:
 * index.json → a multi-platform index → manifests), two at most; the limit keeps a chain
 * of indexes from recursing without end.
 */
export const MAX_INDEX_DEPTH = 8;
/**
 * Most manifest descriptors one source may list, over manifest.json and all its indexes
 * (counted as listed, before any is read). A `docker save` of a thousand tags stays far
 * below; a 14 KB archive listing 10⁴ copies of one manifest took 83 s before this bound
 * and the dedup by digest below.
 */
export const MAX_MANIFESTS = 10_000;

interface Descriptor { mediaType?: string; digest?: string; platform?: { os?: string; architecture?: string }; annotations?: Record<string, string> }

/** State of one walk over a source's indexes: each blob is read once, however often it is listed. */
interface Walk {
  listed: number;
  /** Indexes already walked. */
  indexes: Set<string>;
  /** Image manifests already described, by digest: a second listing only adds its tag. */
  images: Map<string, ImageDescription>;
  out: ImageDescription[];
}

function countListed(w: Walk, n: number): void {
  w.listed += n;
  if (w.listed > MAX_MANIFESTS) {
    throw bad(`the image lists more than ${MAX_MANIFESTS} manifests (over manifest.json and its indexes); refused as a fan-out bomb`);
  }
}

async function ociManifests(src: BlobSource, index: { manifests?: unknown }, tag: string | undefined, depth: number, w: Walk): Promise<void> {
  const arch = PLATFORM_ARCH[process.arch] ?? process.arch;
  const ms = index.manifests ?? [];
  if (!Array.isArray(ms)) throw bad('an index\'s manifests is not a list');
  countListed(w, ms.length);
  const forHost = (ms as Descriptor[]).filter((m) => !m.platform || (m.platform.os === 'linux' && m.platform.architecture === arch));
  for (const m of forHost) {
    const digest = assertDigest(m.digest, 'a manifest digest in index.json');
    const ref = m.annotations?.['io.containerd.image.name'] ?? m.annotations?.['org.opencontainers.image.ref.name'] ?? tag;
    // A bare OCI ref name ("1.0") is a tag without a repository: keep it only when it looks like a full reference.
    const tags = ref && (ref.includes(':') || ref.includes('/')) ? [validTag(ref, 'ERR_INVALID_ARCHIVE', `the name of manifest ${digest}`)] : [];
    const known = w.images.get(digest);
    if (known) {
      for (const t of tags) if (!known.tags.includes(t)) known.tags.push(t);
      continue;
    }
    if (w.indexes.has(digest)) continue;
    const blob = await need(src, `blobs/sha256/${hexOf(digest)}`);
    if (sha256Of(blob) !== digest) throw bad(`manifest blob ${digest} does not match its digest`);
    const doc = parseJson<{ mediaType?: string; manifests?: unknown; config?: Descriptor; layers?: Descriptor[] }>(blob, `manifest ${digest}`);
    if (doc.manifests) {
      if (depth >= MAX_INDEX_DEPTH) throw bad(`image indexes are nested more than ${MAX_INDEX_DEPTH} deep (at ${digest})`);
      w.indexes.add(digest);
      await ociManifests(src, doc, ref, depth + 1, w);
      continue;
    }
    if (!doc.config || !Array.isArray(doc.layers)) throw bad(`manifest ${digest} has no config or layers`);
    const cfgDigest = assertDigest(doc.config.digest, 'the config digest');
    const config = await need(src, `blobs/sha256/${hexOf(cfgDigest)}`);
    const layerPaths = doc.layers.map((l) => `blobs/sha256/${hexOf(assertDigest(l.digest, 'a layer digest'))}`);
    const desc = describeConfig(config, layerPaths, tags);
    w.images.set(digest, desc);
    w.out.push(desc);
  }
}

/** Every image in the source. */
export async function describeSource(src: BlobSource): Promise<ImageDescription[]> {
  const w: Walk = { listed: 0, indexes: new Set(), images: new Map(), out: [] };
  const manifest = await src.read('manifest.json');
  if (manifest) {
    const entries = parseJson<Array<{ Config?: string; RepoTags?: unknown; Layers?: string[] }>>(manifest, 'manifest.json');
    if (!Array.isArray(entries)) throw bad('manifest.json is not a list');
    countListed(w, entries.length);
    for (const [i, e] of entries.entries()) {
      if (typeof e.Config !== 'string' || !Array.isArray(e.Layers)) throw bad('a manifest.json entry lacks Config or Layers');
      if (e.RepoTags != null && !Array.isArray(e.RepoTags)) throw bad(`RepoTags of manifest.json entry ${i} is not a list`);
      const tags = ((e.RepoTags ?? []) as unknown[]).map((t) => validTag(t, 'ERR_INVALID_ARCHIVE', `RepoTags of manifest.json entry ${i}`));
      const config = await need(src, e.Config);
      w.out.push(describeConfig(config, e.Layers.map((l) => posix.normalize(l)), tags));
    }
    return w.out;
  }
  const index = await src.read('index.json');
  if (index) {
    await ociManifests(src, parseJson(index, 'index.json'), undefined, 0, w);
    if (w.out.length === 0) throw bad(`index.json lists no image for linux/${PLATFORM_ARCH[process.arch] ?? process.arch}`);
    return w.out;
  }
  throw bad('neither manifest.json (docker save) nor index.json (OCI image layout) found');
}
