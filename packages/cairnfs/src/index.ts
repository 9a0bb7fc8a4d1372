/**
 * cairn: Docker-grade container storage drivers for Node.js.
 *
 * Importing this package registers the built-in drivers in the default registry, so
 * `openDriver({ root })` picks among them as moby does:
 *
 * ```ts
 * import { openDriver, probe } from 'cairnfs';
 * const driver = await openDriver({ root: '/var/lib/cairn' });
 * const report = await probe({ root: '/var/lib/cairn' }); // why each driver was or was not chosen
 * ```
 *
 * Images and containers on top of a driver ({@link LayerStore}, {@link exportImage}) and
 * moving a store between drivers ({@link migrate}) are re-exported here too, so one
 * dependency is enough.
 *
 * Driver authors who need the building blocks (staging, mount refcounts, the archive
 * code) import `@cairnfs/core` and `@cairnfs/archive` directly; this package re-exports the user-facing API.
 * @packageDocumentation
 */
import { defaultRegistry } from '@cairnfs/core';
import { overlay2Driver } from '@cairnfs/overlay2';
import { btrfsDriver } from '@cairnfs/btrfs';
import { vfsDriver } from '@cairnfs/vfs';
import { aufsDriver } from '@cairnfs/aufs';
import { zfsDriver } from '@cairnfs/zfs';
import { devicemapperDriver } from '@cairnfs/devicemapper';

export { CairnError, ErrorCodes, isCairnError, isValidId } from '@cairnfs/core';
export type { CairnErrorDetails, ErrorCode } from '@cairnfs/core';
export type {
  Change, ChangeKind, CreateOptions, DriverContext, DriverFactory, ProbeResult, StorageDriver,
  GetOptions, ApplyDiffOptions, IdMappings, IdMap,
} from '@cairnfs/core';
// Rootless: a command as root of a user namespace mapped with the caller's subordinate ids (`cairn unshare`).
export { userNamespaceCommand, rootlessReport, rootlessIdMappings, subordinateRanges, ROOTLESS_UID_ENV } from '@cairnfs/core';
export type { UserNamespaceCommandOptions, RootlessFact, SubordinateRange } from '@cairnfs/core';
export { Registry, defaultRegistry, openDriver, probe } from '@cairnfs/core';
export type { OpenOptions, ProbeOptions } from '@cairnfs/core';
export { detectBackingFs, supportsDType } from '@cairnfs/core';
export type { BackingFs } from '@cairnfs/core';
export { overlay2Driver, btrfsDriver, zfsDriver, devicemapperDriver, aufsDriver, vfsDriver };

// Moving a store from one driver to another (aufs → overlay2 is the classic case).
export { migrate, DEFAULT_MIGRATE_MAX_LAYER_BYTES } from './migrate.js';
export type { MigrateOptions, MigrateProgress, MigrateResult, LayerRef } from './migrate.js';

// Building and reading layer tars (for runtimes that commit containers or make layers).
export { packEntries, readTar } from '@cairnfs/archive';
export type { TarSourceEntry, TarHeaderInput, TarItem, TarEntry } from '@cairnfs/archive';

// Images: the layer store (import docker save / OCI images, containers, commit, export)
// and registries (pull, push, login).
export {
  LayerStore, exportImage, login, logout, parseReference, formatReference, familiarName, parsePlatform,
  chainIdOf, chainIds, normalizeTag, DEFAULT_MAX_UNCOMPRESSED_BYTES,
} from '@cairnfs/image';
export type {
  ImageInfo, LayerInfo, ContainerInfo, ImportOptions, ImportProgress, StoreOptions, Compression,
  PullOptions, PullProgress, LayerProgress, PushOptions, PushProgress, PushResult, LoginOptions, Credentials, Reference, Platform, TlsOptions, RetryOptions,
} from '@cairnfs/image';

/** The drivers this package registers on import, in priority order. */
export const builtinDrivers = [overlay2Driver, btrfsDriver, zfsDriver, devicemapperDriver, aufsDriver, vfsDriver] as const;

for (const factory of builtinDrivers) defaultRegistry.register(factory);
