// Push: every layer as a compressed blob (gzip by default, zstd on request), skipped when
// the repository has it (HEAD of a digest the store recorded earlier), mounted from
// another repository of the same registry when the store knows one that has it, else
// uploaded; then the config; the manifest last, so a tag never names missing blobs.
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Readable } from 'node:stream';
import pLimit from 'p-limit';
import { CairnError, isCairnError, ownerToken } from '@cairnfs/core';
import { sha256Of } from '../digest.js';
import { notExact } from '../export.js';
import type { ImageInfo, LayerStore } from '../store.js';
import { RegistryClient, expectStatus, pushScope, type ClientOptions } from './client.js';
import { compressStream, type PushCompression } from './compress.js';
import { DistributionMeta, type BlobRecord } from './distmeta.js';
import { header } from './http.js';
import { MediaTypes } from './manifest.js';
import { formatReference, parseReference, withDefaultTag, type Reference } from './reference.js';
import { blobExists, cancelUpload, finishUpload, mountBlob, patchChunk, patchStream, putBlob, startUpload } from './upload.js';

export interface PushOptions extends ClientOptions {
  /** Layer compression (default gzip: a Docker schema 2 manifest; zstd makes an OCI manifest). */
  compression?: PushCompression;
  /**
   * How blobs are sent: `stream` (default: one streamed PATCH, then PUT), `monolithic`
   * (compressed to a temp file first, then one PUT), `chunked` (PATCHes of `chunkSize`).
   */
  upload?: 'stream' | 'monolithic' | 'chunked';
  /** Bytes per PATCH for `chunked` (default 8 MiB, at most 256 MiB). */
  chunkSize?: number;
  /** Layers pushed at once (default 3). */
  concurrency?: number;
  onProgress?: (p: PushProgress) => void;
}

export type PushLayerStatus = 'checking' | 'exists' | 'mounted' | 'uploading' | 'pushed';

export interface PushProgress {
  ref: string;
  layersDone: number;
  layersTotal: number;
  layer?: { index: number; status: PushLayerStatus; digest?: string; bytesDone: number };
}

export interface PushResult {
  /** The normalised target reference. */
  ref: string;
  /** Digest of the pushed manifest (what `name@digest` pulls). */
  digest: string;
  mediaType: string;
  /** Blobs sent, found already there, mounted from another repository (layers and config). */
  uploaded: number;
  existing: number;
  mounted: number;
}

const MAX_CHUNK = 256 * 1024 * 1024;

export function checkPushArgs(ref: string, opts: PushOptions): Reference {
  const r = withDefaultTag(parseReference(ref));
  if (r.digest) throw new CairnError('ERR_INVALID_OPTION', `push to ${ref}: give a tag, not a digest (the registry computes the digest)`, { subject: ref });
  if (opts.compression !== undefined && opts.compression !== 'gzip' && opts.compression !== 'zstd') {
    throw new CairnError('ERR_INVALID_OPTION', `compression ${JSON.stringify(opts.compression)}: use gzip or zstd`, { subject: String(opts.compression) });
  }
  if (opts.upload !== undefined && !['stream', 'monolithic', 'chunked'].includes(opts.upload)) {
    throw new CairnError('ERR_INVALID_OPTION', `upload ${JSON.stringify(opts.upload)}: use stream, monolithic or chunked`, { subject: String(opts.upload) });
  }
  if (opts.chunkSize !== undefined && !(Number.isSafeInteger(opts.chunkSize) && opts.chunkSize > 0 && opts.chunkSize <= MAX_CHUNK)) {
    throw new CairnError('ERR_INVALID_OPTION', `chunkSize ${opts.chunkSize}: a whole number of bytes from 1 to ${MAX_CHUNK}`, { subject: String(opts.chunkSize) });
  }
  return r;
}

/** The local image, with "not found" as ERR_IMAGE_NOT_FOUND. */
function localImage(store: LayerStore, ref: string): ImageInfo {
  try { return store.image(ref); } catch (err) {
    if (isCairnError(err, 'ERR_LAYER_NOT_FOUND')) throw new CairnError('ERR_IMAGE_NOT_FOUND', `no local image ${ref} to push; \`cairn images\` lists them`, { subject: ref });
    throw err;
  }
}

interface Pushed { digest: string; size: number; how: 'exists' | 'mounted' | 'uploaded' }

/** Pushes a store image to `ref`. The caller has pinned the image's layers (they stay while it uploads; the store stays unlocked). */
export async function pushImage(store: LayerStore, imageRef: string, refText: string, opts: PushOptions = {}): Promise<PushResult> {
  const target = checkPushArgs(refText, opts);
  const img = localImage(store, imageRef);
  const name = formatReference(target);
  const compression = opts.compression ?? 'gzip';
  const oci = compression === 'zstd';
  const layerType = oci ? MediaTypes.ociLayerZstd : MediaTypes.dockerLayer;
  // Records of either gzip type carry the same bytes; a zstd push wants zstd blobs only.
  const reusable: string[] = oci ? [MediaTypes.ociLayerZstd] : [MediaTypes.dockerLayer, MediaTypes.ociLayerGzip];
  const meta = new DistributionMeta(store.dir);
  const client = new RegistryClient(target.registry, opts, { repository: target.repository });
  const tmp = join(store.dir, 'layerdb', 'tmp'); // swept by LayerStore.open: a crash leaves no spool behind
  let layersDone = 0;
  const report = (layer?: PushProgress['layer']) =>
    opts.onProgress?.({ ref: name, layersDone, layersTotal: img.layers.length, ...(layer ? { layer } : {}) });

  try {
    report();
    const config = await store.imageConfig(img.id);
    const limit = pLimit(opts.concurrency ?? 3);
    const layers = await Promise.all(img.layers.map((chain, index) => limit(async () => {
      const diffId = img.diffIds[index]!;
      report({ index, status: 'checking', bytesDone: 0 });
      const known = (await meta.blobsOf(diffId)).filter((b) => reusable.includes(b.mediaType));
      let done = await reuse(client, target, known);
      if (!done) {
        // A layer rebuilt from the driver's diff would not match the config's diff id.
        if (!store.layer(chain).exact) throw notExact(`image ${imageRef} cannot be pushed`, store.layer(chain));
        const source = () => store.exportLayer(chain) as AsyncIterable<Buffer>;
        done = await uploadBlob(client, target.repository, source, compression, opts, tmp, (n) => report({ index, status: 'uploading', bytesDone: n }));
      }
      await meta.record(diffId, { digest: done.digest, mediaType: layerType, size: done.size, registry: target.registry, repository: target.repository });
      layersDone++;
      report({ index, status: done.how === 'uploaded' ? 'pushed' : done.how, digest: done.digest, bytesDone: done.size });
      return done;
    })));

    const configDigest = img.id;
    const configPushed: Pushed = { digest: configDigest, size: config.length, how: 'exists' };
    if (!(await blobExists(client, target.repository, configDigest, config.length))) {
      await withRetry(client, async () => {
        const location = await startUpload(client, target.repository);
        await putBlob(client, target.repository, location, configDigest, config.length, () => config);
      });
      configPushed.how = 'uploaded';
    }

    const mediaType = oci ? MediaTypes.ociManifest : MediaTypes.dockerManifest;
    const manifest = Buffer.from(JSON.stringify({
      schemaVersion: 2, mediaType,
      config: { mediaType: oci ? MediaTypes.ociConfig : MediaTypes.dockerConfig, size: config.length, digest: configDigest },
      layers: layers.map((l) => ({ mediaType: layerType, size: l.size, digest: l.digest })),
    }, null, 3));
    const digest = sha256Of(manifest);
    await putManifest(client, target, manifest, mediaType, digest);
    const all = [...layers, configPushed];
    return {
      ref: name, digest, mediaType,
      uploaded: all.filter((l) => l.how === 'uploaded').length,
      existing: all.filter((l) => l.how === 'exists').length,
      mounted: all.filter((l) => l.how === 'mounted').length,
    };
  } finally {
    await client.close();
  }
}

/** A recorded blob the target has (HEAD), or can mount from a sibling repository. */
async function reuse(client: RegistryClient, target: Reference, known: BlobRecord[]): Promise<Pushed | undefined> {
  // Same repository first, then others in the same registry, then digests seen elsewhere (HEAD only).
  const here = known.filter((b) => b.registry === target.registry);
  const ordered = [...here.filter((b) => b.repository === target.repository), ...here.filter((b) => b.repository !== target.repository)];
  const tried = new Set<string>();
  for (const b of ordered) {
    if (!tried.has(b.digest)) {
      tried.add(b.digest);
      if (await blobExists(client, target.repository, b.digest, b.size)) return { digest: b.digest, size: b.size, how: 'exists' };
    }
    if (b.repository !== target.repository && await mountBlob(client, target.repository, b.digest, b.repository)) {
      return { digest: b.digest, size: b.size, how: 'mounted' };
    }
  }
  for (const b of known.filter((x) => !tried.has(x.digest)).slice(0, 3)) {
    tried.add(b.digest);
    if (await blobExists(client, target.repository, b.digest, b.size)) return { digest: b.digest, size: b.size, how: 'exists' };
  }
  return undefined;
}

/** The compressed layer, hashed and counted as it is produced. */
function compressed(source: () => AsyncIterable<Buffer>, how: PushCompression, onBytes: (total: number) => void) {
  const hash = createHash('sha256');
  let size = 0;
  const stream = (async function* () {
    for await (const c of compressStream(source(), how)) {
      hash.update(c);
      size += c.length;
      onBytes(size);
      yield c;
    }
  })();
  return { stream, result: () => ({ digest: `sha256:${hash.digest('hex')}`, size }) };
}

async function uploadBlob(client: RegistryClient, repository: string, source: () => AsyncIterable<Buffer>, how: PushCompression,
  opts: PushOptions, tmp: string, onBytes: (n: number) => void): Promise<Pushed> {
  if (opts.upload === 'monolithic') {
    // Compressed to a spool file first: the digest is known before any byte is sent, so a
    // blob the registry has is found by HEAD, and a failed PUT is re-sent from the file.
    await mkdir(tmp, { recursive: true });
    // Named after this process: a store open or gc elsewhere leaves a live push's spool alone.
    const spool = join(tmp, `push@${ownerToken()}@${randomBytes(6).toString('hex')}`);
    try {
      const c = compressed(source, how, () => undefined);
      await pipeline(Readable.from(c.stream), createWriteStream(spool, { mode: 0o600 }));
      const { digest, size } = c.result();
      if (await blobExists(client, repository, digest, size)) return { digest, size, how: 'exists' };
      await withRetry(client, async () => {
        const location = await startUpload(client, repository);
        let sent = 0;
        await putBlob(client, repository, location, digest, size, () => Readable.from((async function* () {
          for await (const b of createReadStream(spool, { highWaterMark: 1 << 20 })) { sent += (b as Buffer).length; onBytes(sent); yield b as Buffer; }
        })()));
      });
      return { digest, size, how: 'uploaded' };
    } finally {
      await rm(spool, { force: true });
    }
  }
  return withRetry(client, async () => {
    const c = compressed(source, how, onBytes);
    let location = await startUpload(client, repository);
    try {
      if (opts.upload === 'chunked') {
        const chunkSize = opts.chunkSize ?? 8 * 1024 * 1024;
        let pending: Buffer[] = [];
        let pendingBytes = 0;
        let offset = 0;
        const flush = async () => {
          const chunk = Buffer.concat(pending, pendingBytes);
          location = await patchChunk(client, repository, location, chunk, offset);
          offset += chunk.length;
          pending = [];
          pendingBytes = 0;
        };
        for await (const b of c.stream) {
          for (let at = 0; at < b.length;) {
            const take = Math.min(b.length - at, chunkSize - pendingBytes);
            pending.push(b.subarray(at, at + take));
            pendingBytes += take;
            at += take;
            if (pendingBytes === chunkSize) await flush();
          }
        }
        if (pendingBytes > 0) await flush();
      } else {
        location = await patchStream(client, repository, location, c.stream);
      }
      const { digest, size } = c.result();
      await finishUpload(client, repository, location, digest);
      return { digest, size, how: 'uploaded' as const };
    } catch (err) {
      await cancelUpload(client, repository, location);
      throw err;
    }
  });
}

/** Runs a whole blob upload again (new session) after a 5xx or a broken connection, within the retry bound. */
async function withRetry<T>(client: RegistryClient, fn: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      const retryable = isCairnError(err) && (err.code === 'ERR_NETWORK' || (err.code === 'ERR_REGISTRY' && (err.status ?? 0) >= 500));
      if (!retryable || attempt >= client.transport.retry.attempts || client.signal?.aborted) throw err;
      await client.transport.wait(client.transport.delay(attempt), client.signal);
    }
  }
}

/** PUTs the manifest under the tag, unless the tag already names exactly this manifest. */
async function putManifest(client: RegistryClient, target: Reference, manifest: Buffer, mediaType: string, digest: string): Promise<void> {
  const path = `v2/${target.repository}/manifests/${target.tag}`;
  const head = await client.request('HEAD', path, { scopes: [pushScope(target.repository)], headers: { accept: mediaType } });
  await head.body.dump().catch(() => undefined);
  if (head.status === 200 && header(head.headers, 'docker-content-digest') === digest) return;
  const res = await client.request('PUT', path, {
    scopes: [pushScope(target.repository)], body: manifest, retry: true,
    headers: { 'content-type': mediaType, 'content-length': String(manifest.length) },
  });
  await expectStatus(client, res, [201], `pushing the manifest of ${formatReference(target)}`);
  await res.body.dump().catch(() => undefined);
  const said = header(res.headers, 'docker-content-digest');
  if (said && said !== digest) {
    throw new CairnError('ERR_REGISTRY', `the registry stored the manifest of ${formatReference(target)} as ${said}, not ${digest}`, { status: res.status });
  }
}


