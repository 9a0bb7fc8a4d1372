/**
 * @cairnfs/image: images on any cairn storage driver. Import a `docker save` tarball, an
 * OCI archive or an OCI image layout (layers plain, gzip or zstd, diff ids verified while
 * applying), keep layers by chain id shared between images, make container layers, and
 * export layers byte for byte and images as `docker save` tarballs.
 *
 * ```ts
 * const store = await LayerStore.open(driver);
 * const [img] = await store.importImage('busybox.tar', { onProgress: console.log });
 * await store.createContainer(img.id, 'web');
 * ```
 * @packageDocumentation
 */
export { LayerStore } from './store.js';
export type { CommitOptions, ContainerInfo, ImageInfo, ImportOptions, ImportProgress, LayerInfo, StoreOptions } from './store.js';
export { exportImage } from './export.js';
export { chainIdOf, chainIds, isDigest, sha256Of } from './digest.js';
export { DEFAULT_MAX_UNCOMPRESSED_BYTES, detectCompression, type Compression } from './decompress.js';
export { isValidTag, normalizeTag } from './reference.js';
