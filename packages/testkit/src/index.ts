export * from './backends.js';
export * from './loopfs.js';
export * from './tree.js';
export * from './conformance.js';
export * from './dockerd.js';
export * from './crash.js';
export { RemoteDriver, RemoteError } from './remote.js';
export type { StressOptions, WitnessOptions, WorkReport } from './remote-work.js';
export * from './zfs.js';
export * from './fuzz.js';
export * from './racer.js';
export * from './vm.js';
export * from './busybox.js';
export { codeOf, expectIndependent16MQuotas, writeError } from './quota-checks.js';
export { loadDriverFactory, readPlan, runChild, runJournaled, say } from './crash-protocol.js';
export { T as AUFS_STORE_MTIME, put as putPinned, pinDirTimes, writeDockerStore, writeExpectedTop } from './aufs-store.js';
export {
  sha, tarOf as packedTarOf, fileEntry, dirEntry, sampleLayers, configFor, writeDockerSave, writeOciLayout, tarDir,
  type Compress,
} from './image-fixture.js';
export {
  shiftMap, multiUserLayerTar, ownersAndInodes, ownersOf, runAs, idmappedGetChecks, shiftedLayerChecks, tarOwners, type IdmapHarness,
} from './idmap-checks.js';
export { ROOTLESS_USER, ROOTLESS_REPO, rootlessMissingReason, ensureRootlessUser, runRootless, runJestRootless, type RootlessUser, type RootlessRun, type RootlessJestRun } from './rootless.js';
export * from './registry.js';
export * from './httpproxy.js';
