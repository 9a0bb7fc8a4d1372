// Manifests as registries serve them: Docker schema 2 and OCI image manifests, Docker
// manifest lists and OCI indexes (one entry per platform). Parsing validates every field
// used later (digests, sizes, media types), so the rest of the code trusts the shapes.
import { arch as hostArch } from 'node:process';
import { CairnError } from '@cairnfs/core';
import { isDigest } from '../digest.js';
import type { Compression } from '../decompress.js';

export const MediaTypes = {
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
  dockerLayer: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
  dockerForeignLayer: 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip',
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  ociLayer: 'application/vnd.oci.image.layer.v1.tar',
  ociLayerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  ociLayerZstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
  dockerSchema1: 'application/vnd.docker.distribution.manifest.v1+json',
  dockerSchema1Signed: 'application/vnd.docker.distribution.manifest.v1+prettyjws',
} as const;

/** What a manifest GET accepts, in order of preference. */
export const MANIFEST_ACCEPT = [MediaTypes.ociIndex, MediaTypes.dockerList, MediaTypes.ociManifest, MediaTypes.dockerManifest].join(', ');

/** The largest manifest or index cairn reads (distribution's own limit is 4 MiB). */
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;
/** The largest image config cairn reads; real ones are kilobytes, a few hundred KB with long histories. */
export const MAX_CONFIG_BYTES = 32 * 1024 * 1024;

export interface Platform { os: string; architecture: string; variant?: string }

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  platform?: Platform;
  urls?: string[];
}

export type Manifest =
  | { kind: 'index'; mediaType: string; manifests: Descriptor[] }
  | { kind: 'image'; mediaType: string; config: Descriptor; layers: Descriptor[] };

const bad = (what: string, subject?: string) => new CairnError('ERR_INVALID_ARCHIVE', `the registry's manifest is not valid: ${what}`, subject !== undefined ? { subject } : {});

function descriptor(d: unknown, what: string): Descriptor {
  const o = d as Record<string, unknown> | null;
  if (typeof o !== 'object' || o === null) throw bad(`${what} is not an object`);
  if (typeof o.mediaType !== 'string') throw bad(`${what} has no mediaType`);
  if (!isDigest(o.digest)) throw bad(`${what} has digest ${JSON.stringify(o.digest)}, not a sha256 digest`);
  if (typeof o.size !== 'number' || !Number.isSafeInteger(o.size) || o.size < 0) throw bad(`${what} has size ${JSON.stringify(o.size)}`);
  const out: Descriptor = { mediaType: o.mediaType, digest: o.digest, size: o.size };
  const p = o.platform as Record<string, unknown> | undefined;
  if (p && typeof p === 'object' && typeof p.os === 'string' && typeof p.architecture === 'string') {
    out.platform = { os: p.os, architecture: p.architecture, ...(typeof p.variant === 'string' && p.variant ? { variant: p.variant } : {}) };
  }
  if (Array.isArray(o.urls) && o.urls.length) out.urls = o.urls.filter((u): u is string => typeof u === 'string');
  return out;
}

/** Parses a manifest or index; `contentType` is the answer's Content-Type, used when the body names no mediaType. */
export function parseManifest(bytes: Buffer, contentType: string | undefined): Manifest {
  let doc: Record<string, unknown>;
  try { doc = JSON.parse(bytes.toString('utf8')) as Record<string, unknown>; } catch { throw bad('it is not JSON'); }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw bad('it is not a JSON object');
  const mediaType = typeof doc.mediaType === 'string' ? doc.mediaType : (contentType ?? '').split(';')[0]!.trim();
  if (doc.schemaVersion === 1 || mediaType === MediaTypes.dockerSchema1 || mediaType === MediaTypes.dockerSchema1Signed) {
    throw new CairnError('ERR_NOT_SUPPORTED', 'the image has a Docker schema 1 manifest, deprecated since 2017 and not supported; push it again with a current docker or skopeo');
  }
  if (doc.schemaVersion !== 2) throw bad(`schemaVersion is ${JSON.stringify(doc.schemaVersion)}, not 2`);
  if (Array.isArray(doc.manifests)) {
    return { kind: 'index', mediaType: mediaType || MediaTypes.ociIndex, manifests: doc.manifests.map((m, i) => descriptor(m, `manifests[${i}]`)) };
  }
  if (doc.config !== undefined && Array.isArray(doc.layers)) {
    return {
      kind: 'image', mediaType: mediaType || MediaTypes.ociManifest,
      config: descriptor(doc.config, 'config'), layers: doc.layers.map((l, i) => descriptor(l, `layers[${i}]`)),
    };
  }
  throw bad('it has neither manifests (an index) nor config and layers (an image)');
}

/**
 * The compression of a layer, from its media type. Foreign and non-distributable layers
 * (Windows base layers, licensed blobs served from elsewhere) and unknown types (artifacts,
 * encrypted layers) are refused with ERR_NOT_SUPPORTED.
 */
export function layerCompression(d: Descriptor, index: number): Compression {
  const t = d.mediaType;
  if (t === MediaTypes.dockerLayer || t === MediaTypes.ociLayerGzip) return 'gzip';
  if (t === MediaTypes.ociLayerZstd) return 'zstd';
  if (t === MediaTypes.ociLayer) return 'none';
  if (t === MediaTypes.dockerForeignLayer || t.includes('nondistributable') || d.urls?.length) {
    throw new CairnError('ERR_NOT_SUPPORTED',
      `layer ${index} (${d.digest}) is a foreign/non-distributable layer (${t}) that registries do not serve; such images (Windows base images) cannot be pulled by cairn`, { subject: d.digest });
  }
  throw new CairnError('ERR_NOT_SUPPORTED', `layer ${index} (${d.digest}) has media type ${t}, which is not an image layer cairn can apply (gzip, zstd or plain tar)`, { subject: d.digest });
}

/** Refuses configs that are not image configs (Helm charts, signatures and other OCI artifacts). */
export function checkConfigType(d: Descriptor): void {
  if (d.mediaType !== MediaTypes.dockerConfig && d.mediaType !== MediaTypes.ociConfig) {
    throw new CairnError('ERR_NOT_SUPPORTED', `the manifest's config has media type ${d.mediaType}: this is an OCI artifact, not a container image`, { subject: d.digest });
  }
}

const ARCH_OF_NODE: Record<string, string> = { x64: 'amd64', arm64: 'arm64', arm: 'arm', ppc64: 'ppc64le', s390x: 's390x', ia32: '386', riscv64: 'riscv64', loong64: 'loong64', mips64el: 'mips64le' };
const ARCH_ALIASES: Record<string, string> = { x86_64: 'amd64', 'x86-64': 'amd64', aarch64: 'arm64', armhf: 'arm', armel: 'arm', i386: '386' };

/** This host's platform as images name it (`linux/amd64`, `linux/arm64/v8`). */
export function hostPlatform(): Platform {
  const architecture = ARCH_OF_NODE[hostArch] ?? hostArch;
  return { os: 'linux', architecture, ...(architecture === 'arm' ? { variant: 'v7' } : {}) };
}

/** Parses `os/arch[/variant]` (ERR_INVALID_OPTION when malformed). */
export function parsePlatform(s: string): Platform {
  const parts = s.split('/');
  if (parts.length < 2 || parts.length > 3 || parts.some((p) => !/^[a-z0-9._-]+$/i.test(p))) {
    throw new CairnError('ERR_INVALID_OPTION', `platform ${JSON.stringify(s)} is not os/arch[/variant] (e.g. linux/amd64, linux/arm64/v8)`, { subject: s });
  }
  const os = parts[0]!.toLowerCase();
  const a = parts[1]!.toLowerCase();
  return { os, architecture: ARCH_ALIASES[a] ?? a, ...(parts[2] ? { variant: parts[2].toLowerCase() } : {}) };
}

export const formatPlatform = (p: Platform) => `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ''}`;

/** arm64's variant is v8 unless named; an empty variant elsewhere matches any. */
function variantMatches(want: Platform, have: Platform): boolean {
  const norm = (p: Platform) => (p.architecture === 'arm64' && (!p.variant || p.variant === 'v8') ? 'v8' : p.variant);
  if (!want.variant && want.architecture !== 'arm64') return true;
  return norm(want) === norm(have);
}

/**
 * The index entry for `want`: same os and architecture, matching variant; among several,
 * the first (registries list the preferred one first, as docker picks). Entries with no
 * platform are image manifests only when they are the only kind there (attestation
 * manifests carry `unknown/unknown`).
 */
export function choosePlatform(manifests: Descriptor[], want: Platform): Descriptor | undefined {
  const images = manifests.filter((m) => m.mediaType !== MediaTypes.ociIndex && m.mediaType !== MediaTypes.dockerList);
  const hit = images.find((m) => m.platform && m.platform.os === want.os
    && (ARCH_ALIASES[m.platform.architecture] ?? m.platform.architecture) === want.architecture && variantMatches(want, m.platform));
  if (hit) return hit;
  const unlabelled = images.filter((m) => !m.platform);
  return unlabelled.length === images.length && unlabelled.length > 0 ? unlabelled[0] : undefined;
}
