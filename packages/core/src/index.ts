// @cairnfs/core: the StorageDriver contract and the helpers every driver shares. The tar and
// changeset engine is @cairnfs/archive; the syscalls are @cairnfs/sys. Every name below is
// public API: nothing is exported by wildcard, so this file is the list a reviewer checks.
export { ErrorCodes, CairnError, isCairnError, errnoCode, translateSpaceError, fromAddonFault, layerNotFound } from './errors.js';
export type { ErrorCode, CairnErrorDetails } from './errors.js';
export { isValidId, assertValidId, normalizeParent } from './ids.js';
export type {
  StorageDriver, CreateOptions, GetOptions, PutOptions, ApplyDiffOptions, IdMappings, IdMap, ChangeKind, Change, ProbeResult,
  DriverContext, DriverFactory, LayerRef, LayerLister, LayerFilesDir,
} from './driver.js';
export { hasLayerFilesDir } from './driver.js';
export { KeyedMutex } from './mutex.js';
export { SharedMounts, describeHolds, type MountHooks, type HoldInfo, type SharedMountsOptions } from './holds.js';
export {
  STAGING_DIR, TRASH_DIR, makeStagingDir, removeMountPoint, fsyncDir, fsyncFile, commitStaged, discardDir, sweepLeftovers, writeFileAtomic,
  ownedName, parseOwnedName, isOwnerAlive, moveToTrash, type SweepOptions,
} from './staging.js';
export { unescapeMountField, parseMountInfo, readMountInfo, findMountOf, type MountInfoEntry } from './mountinfo.js';
export {
  FS_MAGIC_NAMES, FS_MAGIC_FUSE, UNKNOWN_FS_NAME, nearestExistingPath, detectBackingFs, nameBackingFs, supportsDType,
  type BackingFs,
} from './backingfs.js';
export { copyTree, type ReflinkMode, type CopyTreeOptions, type CopyTreeStats } from './copytree.js';
export { listedExtras, lstatListed, type ListedExtras } from './listing.js';
export {
  STORE_LOCK_FILE, STATE_DIR, DEFAULT_LOCK_TIMEOUT_MS, StoreLocks, SharedTable, type StoreLocksOptions, type LayerLockOptions,
} from './storelock.js';
export { flockHolders, type FlockHolder } from './flock.js';
export { OpenSessions } from './sessions.js';
export {
  processStartTime, selfIdentity, isProcessAlive, bootId, ownerToken, ownerOfToken, type ProcessIdentity,
} from './proc.js';
export { ROOT_DIR_MODE, secureDir } from './securedir.js';
export { Registry, defaultRegistry, openDriver, probe, type ProbeOptions, type OpenOptions } from './registry.js';
export { parseByteSize, formatByteSize } from './units.js';
export {
  probeXfsProjectQuota, requireXfsProjectQuota, LayerQuotas, type ProjectQuota, type ProjectQuotaProbe,
} from './xfsquota.js';
export { readXattrs, sameXattrMaps } from './xattrs.js';
export {
  defineDriver, guardAfterCleanup, dirHasEntries, type DriverDefinition, type DriverSetup, type ProbeVerdict,
} from './define.js';
export { RecordFile } from './record.js';
export { mountLabelOption } from './mountlabel.js';
export {
  validateIdMappings, idMappingsKey, parseIdMappingsKey, sameIdMappings, mapId, isIdentityMapping, withUserNamespace,
  probeIdmappedMounts, attachIdmappedView, refuseIdMappings,
} from './idmap.js';
export {
  ROOTLESS_UID_ENV, subordinateRanges, rootlessIdMappings, findTool, userNamespaceCommand, rootlessReport,
  type SubordinateRange, type UserNamespaceCommandOptions, type RootlessFact,
} from './rootless.js';
