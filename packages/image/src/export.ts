// exportImage: a `docker save` tarball. manifest.json (what every `docker load` reads)
// plus an OCI layout (oci-layout, index.json, blobs/sha256/…) over the same blobs, as
// docker ≥ 25 writes it, so the result loads into docker, podman and containerd alike.
// Layer blobs are the uncompressed tars, rebuilt byte for byte, named by their diff id.
import type { Readable } from 'node:stream';
import { CairnError } from '@cairnfs/core';
import { directStream, encodeHeader, tarTrailer } from '@cairnfs/archive';
import { hexOf, sha256Of } from './digest.js';
import type { LayerInfo, LayerStore } from './store.js';
import { PackBuffers } from './packbuffers.js';
import { type LayerReplay, REPLAY_CHUNK } from './tarsplit.js';

const LAYER_TYPE = 'application/vnd.oci.image.layer.v1.tar';
const CONFIG_TYPE = 'application/vnd.oci.image.config.v1+json';
const MANIFEST_TYPE = 'application/vnd.oci.image.manifest.v1+json';

function pad(size: number): Buffer {
  return Buffer.alloc((512 - (size % 512)) % 512);
}

function* file(out: PackBuffers, name: string, data: Buffer): Generator<Buffer> {
  yield* out.put(encodeHeader({ name, type: 'file', mode: 0o644, size: data.length }));
  yield* out.put(data);
  yield* out.put(pad(data.length));
}

/**
 * The error for a layer that cannot be rebuilt byte for byte where its original digest is
 * needed (an image export, a push): the image config names the layer by that digest.
 */
export function notExact(what: string, l: LayerInfo): CairnError {
  return new CairnError('ERR_NOT_SUPPORTED',
    `${what}: its layer ${l.diffId} cannot be rebuilt byte for byte (a path in its tar was ` +
    'written twice or replaced by another entry), and the image config names the layer by the digest of those exact bytes. ' +
    "LayerStore.exportLayer still gives its content (as the driver's diff); re-import the image from its origin to export it.", { subject: l.chainId });
}

/**
 * Streams a docker-save tarball of the given images (by tag, id or id prefix).
 *
 * Every layer must be exact (see LayerInfo.exact): the image config names each layer by
 * the digest of its original tar, so a regenerated diff (other bytes) would make an
 * archive no runtime loads. An inexact layer fails the export with ERR_NOT_SUPPORTED
 * before the first byte is written, as Docker's save fails on a layer tar-split cannot
 * rebuild.
 */
export function exportImage(store: LayerStore, refs: readonly string[]): Readable {
  return directStream((next, reused) => packImage(store, refs, new PackBuffers(next, reused)), REPLAY_CHUNK);
}

async function* packImage(store: LayerStore, refs: readonly string[], out: PackBuffers): AsyncGenerator<Buffer> {
  const images = refs.map((ref) => store.image(ref));
  for (const [i, img] of images.entries()) {
    for (const chain of img.layers) {
      const l = store.layer(chain);
      if (!l.exact) throw notExact(`image ${refs[i]} cannot be exported`, l);
    }
  }
  const unpin = await store.pinLayers([...new Set(images.flatMap((img) => img.layers))], `export ${refs.join(' ')}`);
  // The layers to write, in order, each once (by blob path); the next one's replay is
  // opened, and its files checked, while the one before it streams.
  const blobs = new Map<string, string>();
  for (const chain of images.flatMap((img) => img.layers)) {
    const blob = layerBlob(store.layer(chain));
    if (!blobs.has(blob)) blobs.set(blob, chain);
  }
  const queue = [...blobs.values()];
  let ahead: LayerReplay | undefined;
  try {
    const written = new Set<string>();
    const manifest: Array<{ Config: string; RepoTags: string[]; Layers: string[] }> = [];
    const index: Array<Record<string, unknown>> = [];
    yield* file(out, 'oci-layout', Buffer.from('{"imageLayoutVersion":"1.0.0"}'));
    for (const [i, img] of images.entries()) {
      const ref = refs[i]!;
      const explicit = img.tags.includes(ref) || img.tags.includes(`${ref}:latest`);
      const tags = explicit ? [img.tags.find((t) => t === ref || t === `${ref}:latest`)!] : img.tags;
      const config = await store.imageConfig(img.id);
      const layerPaths: string[] = [];
      const descs: Array<Record<string, unknown>> = [];
      for (const chain of img.layers) {
        const l = store.layer(chain);
        const path = layerBlob(l);
        layerPaths.push(path);
        descs.push({ mediaType: LAYER_TYPE, digest: l.diffId, size: l.tarSize });
        if (written.has(path)) continue;
        written.add(path);
        const replay = ahead ?? await store.openReplay(chain);
        ahead = undefined;
        let n: number;
        try {
          await replay.ready();
          queue.shift();
          if (queue.length > 0) ahead = await store.openReplay(queue[0]!);
          yield* out.put(encodeHeader({ name: path, type: 'file', mode: 0o644, size: l.tarSize }));
          n = yield* replay.into(out);
        } finally {
          await replay.close();
        }
        if (n !== l.tarSize) throw new Error(`layer ${chain} rebuilt to ${n} bytes, expected ${l.tarSize}`);
        yield* out.put(pad(n));
      }
      const configPath = `blobs/sha256/${hexOf(img.id)}`;
      if (!written.has(configPath)) { written.add(configPath); yield* file(out, configPath, config); }
      const ociManifest = Buffer.from(JSON.stringify({
        schemaVersion: 2, mediaType: MANIFEST_TYPE,
        config: { mediaType: CONFIG_TYPE, digest: img.id, size: config.length }, layers: descs,
      }));
      const mDigest = sha256Of(ociManifest);
      const mPath = `blobs/sha256/${hexOf(mDigest)}`;
      if (!written.has(mPath)) { written.add(mPath); yield* file(out, mPath, ociManifest); }
      manifest.push({ Config: configPath, RepoTags: tags, Layers: layerPaths });
      const refNames = tags.length ? tags : [undefined];
      for (const t of refNames) {
        index.push({
          mediaType: MANIFEST_TYPE, digest: mDigest, size: ociManifest.length,
          ...(t ? { annotations: { 'io.containerd.image.name': t, 'org.opencontainers.image.ref.name': t.slice(t.lastIndexOf(':') + 1) } } : {}),
        });
      }
    }
    yield* file(out, 'index.json', Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: index })));
    yield* file(out, 'manifest.json', Buffer.from(JSON.stringify(manifest)));
    yield* out.put(tarTrailer());
    yield* out.end();
  } finally {
    await ahead?.close();
    await unpin();
  }
}

function layerBlob(l: LayerInfo): string {
  return `blobs/sha256/${hexOf(l.diffId)}`;
}
