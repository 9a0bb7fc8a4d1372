// The registry part of @cairnfs/image's public API (LayerStore.pull / push live in store.ts).
export { login, logout, normalizeRegistry, type LoginOptions } from './login.js';
export { findCredentials, dockerConfigPath, containersAuthPaths, type Credentials, type FoundCredentials, type Env } from './credentials.js';
export { parseReference, formatReference, familiarName, withDefaultTag, type Reference } from './reference.js';
export { parsePlatform, hostPlatform, formatPlatform, type Platform } from './manifest.js';
export type { PullOptions, PullProgress, LayerProgress, LayerStatus } from './pull.js';
export type { PushOptions, PushProgress, PushResult, PushLayerStatus } from './push.js';
export type { TlsOptions, RetryOptions } from './http.js';
export type { PushCompression } from './compress.js';
