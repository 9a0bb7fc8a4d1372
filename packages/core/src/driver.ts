import type { Readable } from 'node:stream';
import type { ErrorCode } from './errors.js';

/**
 * A storage driver keeps container image layers and container root filesystems on
 * the host, the way moby's graphdrivers and containerd's snapshotters do.
 *
 * ## Glossary
 * - **layer**: a filesystem tree named by an id. A layer may have a *parent*; its
 *   contents are the parent's contents plus its own changes.
 * - **image layer**: made with {@link StorageDriver.create}; filled once with
 *   {@link StorageDriver.applyDiff}, then read-only.
 * - **container layer**: made with {@link StorageDriver.createReadWrite}; the
 *   writable top of a container's root filesystem.
 * - **changeset**: an OCI layer tar: additions and modifications as entries,
 *   deletions as `.wh.<name>`, a directory replaced wholesale marked by `.wh..wh..opq`.
 *
 * ## Importing a layer
 * ```ts
 * await driver.create(layerId, parentId);          // empty layer on top of its parent
 * const bytes = await driver.applyDiff(layerId, parentId, tarStream);
 * ```
 *
 * ## Running a container
 * ```ts
 * await driver.createReadWrite(containerId, topImageLayerId);
 * const rootfs = await driver.get(containerId);    // mounts; counts references
 * // … run the container with `rootfs` as its root …
 * await driver.put(containerId);                   // the last put unmounts
 * const tar = await driver.diff(containerId, topImageLayerId); // commit it
 * ```
 *
 * ## Rules every driver keeps
 * - Ids are validated before any file is touched (`ERR_INVALID_ID`).
 * - A layer is visible to {@link StorageDriver.exists} only once complete; a crash
 *   mid-create leaves nothing that `exists()` reports, and the next open cleans up.
 * - `remove` of a mounted layer, or of one with children, fails with
 *   `ERR_LAYER_IN_USE` and deletes nothing.
 * - Any number of processes may open one home at once: locks are taken per operation
 *   (core's StoreLocks), mount holds are shared (core's SharedMounts), and what one
 *   process creates or removes, the others see at their next operation.
 */
export interface StorageDriver {
  /** `'overlay2' | 'vfs' | 'btrfs' | 'zfs' | 'devicemapper' | 'aufs'`. */
  readonly name: string;
  /** Absolute path of the driver's home, `${root}/${name}`. */
  readonly home: string;

  /** Creates an image layer (read-only once its applyDiff is done). */
  create(id: string, parent?: string | null, opts?: CreateOptions): Promise<void>;
  /** Creates a container layer, writable. */
  createReadWrite(id: string, parent?: string | null, opts?: CreateOptions): Promise<void>;
  /** True when the layer exists and is complete. */
  exists(id: string): Promise<boolean>;
  /** Deletes a layer; `ERR_LAYER_IN_USE` when it is mounted or has children. */
  remove(id: string): Promise<void>;

  /**
   * Mounts the layer (or adds one more hold on its mount) and returns the root of its
   * filesystem. Holds are shared by every process on the home: one mount, many holds.
   */
  get(id: string, opts?: GetOptions): Promise<string>;
  /**
   * Drops one hold of this driver (or of `opts.holder`); the last hold (of any process)
   * unmounts. `ERR_NOT_MOUNTED` without a matching `get`.
   */
  put(id: string, opts?: PutOptions): Promise<void>;

  /** The OCI changeset between `parent` (default: the layer's own parent) and the layer, as an uncompressed tar. */
  diff(id: string, parent?: string | null): Promise<Readable>;
  /** The paths that differ between `parent` and the layer. */
  changes(id: string, parent?: string | null): Promise<Change[]>;
  /** Applies an OCI changeset (or a plain tar) to the layer; returns the bytes of file content applied. */
  applyDiff(id: string, parent: string | null | undefined, tar: Readable | AsyncIterable<Uint8Array>, opts?: ApplyDiffOptions): Promise<number>;
  /** The bytes of file content the changeset between `parent` and the layer would carry. */
  diffSize(id: string, parent?: string | null): Promise<number>;

  /** Human-readable key/value pairs, e.g. `['Backing Filesystem', 'extfs']`. */
  status(): Promise<Array<[string, string]>>;
  /** Driver-specific facts about a layer, e.g. overlay2's `LowerDir`, `UpperDir`, `WorkDir`, `MergedDir`. */
  metadata(id: string): Promise<Record<string, string>>;
  /**
   * Closes the driver: drops this driver's mount holds, unmounting the layers that then
   * have no holder in any process (another process's mounts, and `cairn mount`s, stay).
   * Safe to call twice.
   */
  cleanup(): Promise<void>;
}

export interface CreateOptions {
  /** Per-layer options, e.g. `{ size: '64M' }` for a quota where the driver supports one. */
  storageOpt?: Record<string, string>;
  /** SELinux mount label, passed through to mounts where the driver supports it. */
  mountLabel?: string;
}

/** How `get` mounts a layer. */
export interface GetOptions {
  /** SELinux mount label (`context=`), passed to the mount on drivers that mount. */
  mountLabel?: string;
  /** Show the layer through an id-mapped mount (container id → host id), without a copy. */
  idMappings?: IdMappings;
  /**
   * Who holds the mount. By default this driver instance: the hold ends with `put`, with
   * `cleanup()`, or when this process dies. A name (`cli-mount:web`) makes it a hold of
   * the store itself, which outlives this process and every cleanup until
   * `put(id, { holder })` with the same name: what `cairn mount` does.
   */
  holder?: string;
}

/** Which hold `put` drops. */
export interface PutOptions {
  /** The named holder a `get` used (see GetOptions.holder); default: this driver instance. */
  holder?: string;
}

/** How `applyDiff` writes ownership. */
export interface ApplyDiffOptions {
  /** Store ownership shifted by these maps (as containers/storage does for user-namespaced containers). */
  idMappings?: IdMappings;
  /** Rootless with a single id: keep going when a chown is refused, leaving files owned by the caller. */
  ignoreChownErrors?: boolean;
}

/** User and group id maps, as the OCI runtime spec writes them. */
export interface IdMappings {
  uidMap: IdMap[];
  gidMap: IdMap[];
}

/** `size` ids from `containerId` on map to `hostId` on. */
export interface IdMap {
  containerId: number;
  hostId: number;
  size: number;
}

export type ChangeKind = 'add' | 'modify' | 'delete';

/** One changed path; `path` is absolute within the layer: `'/etc/hosts'`. */
export interface Change {
  path: string;
  kind: ChangeKind;
}

/** What a driver says about itself before it is opened. */
export interface ProbeResult {
  name: string;
  /** Lower is preferred: overlay2 1, btrfs 2, zfs 3, devicemapper 4, aufs 5, vfs 6. */
  priority: number;
  usable: boolean;
  /** Why the driver cannot be used here, in words a person can act on. */
  reason?: string;
  /** Backing filesystem name of the driver home (moby's names: `extfs`, `xfs`, `btrfs`, …). */
  backingFs?: string;
  /**
   * When unusable, the code an explicit open fails with: `ERR_NOT_SUPPORTED` (kernel or
   * host lacks it), `ERR_INCOMPATIBLE_FS` (wrong backing fs), `ERR_PREREQUISITES` (a tool
   * or privilege is missing). Defaults to `ERR_NOT_SUPPORTED`.
   */
  code?: ErrorCode;
  /**
   * Facts about a usable driver a person may need, e.g. that id-mapped `get` falls back
   * to chown copies here and why, or how the driver runs rootless.
   */
  notes?: string[];
  /** Set by the registry's `probe()`: true for the one driver `openDriver` would pick. */
  chosen?: boolean;
  /** Set by the registry's `probe()`: true when the driver's home already holds layers. */
  prior?: boolean;
}

/** What the registry passes a driver factory when probing or opening. */
export interface DriverContext {
  /** The storage root; the driver's home is `${root}/${name}`. */
  root: string;
  /** Absolute path of the driver home. */
  home: string;
  /** Driver options, named as moby names them (`overlay2.size`, `btrfs.min_space`, …). */
  options: Record<string, string>;
  /** Milliseconds an operation waits for a lock held by another process before `ERR_LOCKED`; 0 = try once. */
  lockTimeoutMs: number;
}

/** A driver as the registry knows it: a name, a priority, a probe and an opener. */
export interface DriverFactory {
  readonly name: string;
  readonly priority: number;
  /**
   * When true, auto-selection picks this driver only if the backing filesystem of the
   * root is the driver's own (btrfs, zfs), as moby does.
   */
  readonly requiresOwnFilesystem?: boolean;
  /**
   * Option-name prefixes this driver owns (`dm` for devicemapper's `dm.basesize`);
   * defaults to `[name]`. The registry hands the driver only options under these.
   */
  readonly optionPrefixes?: readonly string[];
  /** Says whether the driver can run here, and why not. Must not create or change anything. */
  probe(ctx: DriverContext): Promise<ProbeResult>;
  /**
   * Opens (creating the home if needed) and returns a ready driver. Probes first and
   * refuses, with the probe's code and reason, where the driver cannot run; a caller that
   * has just probed (the registry) passes that usable result as `probed` to skip a second probe.
   */
  open(ctx: DriverContext, probed?: ProbeResult): Promise<StorageDriver>;
  /** True when `${root}/${name}` already holds layers (prior-driver detection). */
  hasLayers(ctx: DriverContext): Promise<boolean>;
}

/** One layer of a store: its id and the layer it was created on (what migrate copies, parents first). */
export interface LayerRef {
  id: string;
  parent: string | null;
  /** Created with createReadWrite on the target (a container layer); default: create. */
  readWrite?: boolean;
}

/**
 * Drivers that can list their own layers. Optional: drivers whose parents live in
 * metadata only the image layer store reads (vfs, overlay2, …) need the caller to pass
 * `MigrateOptions.layers` instead.
 */
export interface LayerLister {
  listLayers(): Promise<LayerRef[]>;
}

/**
 * Drivers that keep the files a layer's applyDiff wrote in a directory that can be read
 * without mounting the layer (overlay2 and aufs: its diff dir; vfs and btrfs: its whole
 * tree), as moby's overlay2 does for its DiffGetter. Optional: the image store reads a
 * layer's files from there to rebuild its tar byte for byte, where other drivers must
 * mount it (`get`). The directory is the driver's own: the caller only reads it, and keeps
 * the layer from being removed meanwhile (the image store pins it).
 */
export interface LayerFilesDir {
  /** The directory holding layer `id`'s files; ERR_LAYER_NOT_FOUND when there is no such layer. */
  layerFilesDir(id: string): Promise<string>;
}

/** Whether `driver` offers {@link LayerFilesDir}. */
export function hasLayerFilesDir(driver: object): driver is LayerFilesDir {
  return typeof (driver as Partial<LayerFilesDir>).layerFilesDir === 'function';
}
