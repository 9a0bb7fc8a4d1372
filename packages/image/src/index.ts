/**
 * @cairnfs/image: images on any cairn storage driver. Import a `docker save` tarball, an
 * OCI archive or an OCI image layout (layers plain, gzip or zstd, diff ids verified while
 * applying), keep layers by chain id shared between images, make container layers, and
 * export layers byte for byte and images as `docker save` tarballs; pull from and push to
 * OCI registries (Docker's auth, docker's config.json and credential helpers).
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
export {
  login, logout, normalizeRegistry, findCredentials, dockerConfigPath, containersAuthPaths,
  parseReference, formatReference, familiarName, withDefaultTag, parsePlatform, hostPlatform, formatPlatform,
} from './registry/index.js';
export type {
  LoginOptions, Credentials, FoundCredentials, Reference, Platform, PullOptions, PullProgress, LayerProgress, LayerStatus,
  PushOptions, PushProgress, PushResult, PushLayerStatus, TlsOptions, RetryOptions, PushCompression, Env,
} from './registry/index.js';
