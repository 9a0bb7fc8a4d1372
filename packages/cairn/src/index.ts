/**
 * cairn: Docker-grade container storage drivers for Node.js.
 *
 * Importing this package registers the built-in drivers in the default registry, so
 * `openDriver({ root })` picks among them as moby does:
 *
 * ```ts
 * import { openDriver, probe } from 'cairn';
 * const driver = await openDriver({ root: '/var/lib/cairn' });
 * const report = await probe({ root: '/var/lib/cairn' }); // why each driver was or was not chosen
 * ```
 *
 * Driver authors who need the building blocks (staging, mount refcounts, the archive
 * code) import `@cairn/core` directly; this package re-exports the user-facing API.
 * @packageDocumentation
 */
import { defaultRegistry } from '@cairn/core';
import { overlay2Driver } from '@cairn/overlay2';
import { btrfsDriver } from '@cairn/btrfs';
import { vfsDriver } from '@cairn/vfs';
import { aufsDriver } from '@cairn/aufs';
import { zfsDriver } from '@cairn/zfs';
import { devicemapperDriver } from '@cairn/devicemapper';

export { CairnError, ErrorCodes, isCairnError, isValidId } from '@cairn/core';
export type { CairnErrorDetails, ErrorCode } from '@cairn/core';
export type {
  Change, ChangeKind, CreateOptions, DriverContext, DriverFactory, ProbeResult, StorageDriver,
} from '@cairn/core';
export { Registry, defaultRegistry, openDriver, probe } from '@cairn/core';
export type { OpenOptions, ProbeOptions } from '@cairn/core';
export { detectBackingFs, supportsDType } from '@cairn/core';
export type { BackingFs } from '@cairn/core';
export { overlay2Driver, btrfsDriver, zfsDriver, devicemapperDriver, aufsDriver, vfsDriver };

// Moving a store from one driver to another (aufs → overlay2 is the classic case).
export { migrate } from '@cairn/core';
export type { MigrateOptions, MigrateProgress, MigrateResult, LayerRef } from '@cairn/core';

// Building and reading layer tars (for runtimes that commit containers or make layers).
export { packEntries, readTar } from '@cairn/core';
export type { TarSourceEntry, TarHeaderInput, TarItem, TarEntry } from '@cairn/core';

/** The drivers this package registers on import, in priority order. */
export const builtinDrivers = [overlay2Driver, btrfsDriver, zfsDriver, devicemapperDriver, aufsDriver, vfsDriver] as const;

for (const factory of builtinDrivers) defaultRegistry.register(factory);
