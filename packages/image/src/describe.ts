// What images a source holds: docker save's manifest.json when present (every docker
// version writes it, also next to the OCI layout of docker ≥ 25), else the OCI layout's
// index.json, following nested indexes and picking this host's platform.
import { posix } from 'node:path';
import { CairnError } from '@cairnfs/core';
import { assertDigest, hexOf, sha256Of } from './digest.js';
import type { BlobSource } from './source.js';

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

/** Adds ':latest' to a bare name, as docker does. */
export function normalizeTag(ref: string): string {
  const slash = ref.lastIndexOf('/');
  return ref.slice(slash + 1).includes(':') ? ref : `${ref}:latest`;
}

const PLATFORM_ARCH: Record<string, string> = { x64: 'amd64', arm64: 'arm64', arm: 'arm', ppc64: 'ppc64le', s390x: 's390x', ia32: '386' };

interface Descriptor { mediaType?: string; digest?: string; platform?: { os?: string; architecture?: string }; annotations?: Record<string, string> }

async function ociManifests(src: BlobSource, index: { manifests?: Descriptor[] }, tag: string | undefined, out: ImageDescription[]): Promise<void> {
  const arch = PLATFORM_ARCH[process.arch] ?? process.arch;
  const ms = index.manifests ?? [];
  const forHost = ms.filter((m) => !m.platform || (m.platform.os === 'linux' && m.platform.architecture === arch));
  for (const m of forHost) {
    const digest = assertDigest(m.digest, 'a manifest digest in index.json');
    const blob = await need(src, `blobs/sha256/${hexOf(digest)}`);
    if (sha256Of(blob) !== digest) throw bad(`manifest blob ${digest} does not match its digest`);
    const ref = m.annotations?.['io.containerd.image.name'] ?? m.annotations?.['org.opencontainers.image.ref.name'] ?? tag;
    const doc = parseJson<{ mediaType?: string; manifests?: Descriptor[]; config?: Descriptor; layers?: Descriptor[] }>(blob, `manifest ${digest}`);
    if (doc.manifests) { await ociManifests(src, doc, ref, out); continue; }
    if (!doc.config || !doc.layers) throw bad(`manifest ${digest} has no config or layers`);
    const cfgDigest = assertDigest(doc.config.digest, 'the config digest');
    const config = await need(src, `blobs/sha256/${hexOf(cfgDigest)}`);
    const layerPaths = doc.layers.map((l) => `blobs/sha256/${hexOf(assertDigest(l.digest, 'a layer digest'))}`);
    // A bare OCI ref name ("1.0") is a tag without a repository: keep it only when it looks like a full reference.
    const tags = ref && (ref.includes(':') || ref.includes('/')) ? [normalizeTag(ref)] : [];
    out.push(describeConfig(config, layerPaths, tags));
  }
}

/** Every image in the source. */
export async function describeSource(src: BlobSource): Promise<ImageDescription[]> {
  const manifest = await src.read('manifest.json');
  if (manifest) {
    const entries = parseJson<Array<{ Config?: string; RepoTags?: string[] | null; Layers?: string[] }>>(manifest, 'manifest.json');
    if (!Array.isArray(entries)) throw bad('manifest.json is not a list');
    const out: ImageDescription[] = [];
    for (const e of entries) {
      if (typeof e.Config !== 'string' || !Array.isArray(e.Layers)) throw bad('a manifest.json entry lacks Config or Layers');
      const config = await need(src, e.Config);
      out.push(describeConfig(config, e.Layers.map((l) => posix.normalize(l)), (e.RepoTags ?? []).map(normalizeTag)));
    }
    return out;
  }
  const index = await src.read('index.json');
  if (index) {
    const out: ImageDescription[] = [];
    await ociManifests(src, parseJson(index, 'index.json'), undefined, out);
    if (out.length === 0) throw bad(`index.json lists no image for linux/${PLATFORM_ARCH[process.arch] ?? process.arch}`);
    return out;
  }
  throw bad('neither manifest.json (docker save) nor index.json (OCI image layout) found');
}
