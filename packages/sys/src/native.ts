// Loads the compiled addon (see load.ts for which binary). The package root is one level
// above this module both from src/ (jest runs the sources) and from dist/ (the built package).
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { loadAddon } from './load.js';
import type { LayerApplier, TarLimits } from './applier.js';
import type { SplitReplay } from './splitreplay.js';
import type { BtrfsChildSubvolume, BtrfsFsInfo } from './btrfs.js';
import type { BeneathFile } from './openfile.js';
import type { TarPacker } from './tarpack.js';
import type { DirStats, StatBatch } from './walk.js';

/** A zstd decoder of the addon (an opaque native handle). */
export interface ZstdHandle { readonly __zstdDecoder: unique symbol }

/**
 * The raw addon surface, every export of cairn_sys.node with its exact argument types
 * (packages/sys/test/native-surface.test.ts checks that the addon exports exactly these
 * names). src/index.ts and the modules it re-exports wrap it with documented functions;
 * nothing else reaches into the addon.
 */
export interface NativeBinding {
  constants: NativeConstants;
  mount(source: string | null, target: string, fstype: string | null, flags: number, data: string | null): Promise<void>;
  mountAt(cwd: string, source: string | null, target: string, fstype: string | null, flags: number, data: string | null): Promise<void>;
  umount2(target: string, flags: number): Promise<void>;
  fsMount(fstype: string, source: string | null, params: Array<[string, string | null]>, target: string, readOnly: boolean, cwd: string | null): Promise<void>;
  hasNewMountApi(): boolean;
  zstdLibrary(): string | null;
  decoderMissing(kind: number): string | null;
  SplitReplay: new (rootFd: number, splitFd: number, expectedBytes?: number) => SplitReplay;
  zstdCreate(): ZstdHandle;
  zstdDecode(decoder: ZstdHandle, input: Uint8Array, offset: number, output: Uint8Array): Promise<[read: number, written: number, hint: number]>;
  zstdFree(decoder: ZstdHandle): void;
  mknodSync(path: string, mode: number, major: number, minor: number): void;
  mknod(path: string, mode: number, major: number, minor: number): Promise<void>;
  lsetxattrSync(path: string, name: string, value: Uint8Array, flags: number | undefined): void;
  lgetxattrSync(path: string, name: string): Buffer | null;
  llistxattrSync(path: string): string[];
  lremovexattrSync(path: string, name: string): void;
  lsetxattr(path: string, name: string, value: Uint8Array, flags: number | undefined): Promise<void>;
  lgetxattr(path: string, name: string): Promise<Buffer | null>;
  llistxattr(path: string): Promise<string[]>;
  lremovexattr(path: string, name: string): Promise<void>;
  lutimesNsSync(path: string, atimeNs: bigint, mtimeNs: bigint): void;
  flockSync(fd: number, operation: number): boolean;
  major(dev: number | bigint): number;
  minor(dev: number | bigint): number;
  makedev(major: number, minor: number): number;
  /** 0 when buf's whole pages are now mapped; else madvise's errno (best effort). */
  populateSync(buf: Uint8Array): number;

  // applier.ts (native/untar.cc)
  LayerApplier: new (root: string, whiteouts: number, noDevices: boolean, ownership: boolean, euid: number, egid: number, umask: number,
    legacyKernel: boolean, idMappings: IdRanges | null, ignoreChownErrors: boolean, opaqueXattr: string | undefined) => LayerApplier;
  tarLimits: TarLimits;
  sha256Hex: (chunks: Uint8Array | Uint8Array[], portable?: boolean) => string;
  sha256Libcrypto: () => boolean;
  // tarpack.ts (native/tarpack.cc)
  TarPacker: new (root: string, flags: number, walk: boolean, idMappings: IdRanges | null) => TarPacker;
  // walk.ts (native/walk.cc)
  statDirSync(dir: string, flags: number, root: string | undefined): DirStats;
  statPathsSync(base: string, rels: readonly string[], flags: number): StatBatch;
  readFileIntoSync(path: string, buf: Uint8Array, offset: number, length: number): number;
  // openfile.ts (native/openfile.cc)
  openBeneathSync(root: number | string, rel: string, flags: number): BeneathFile;
  // at.ts (native/atcalls.cc)
  openDirBeneathSync(rootFd: number, rel: string): number;
  openatSync(dirfd: number, name: string, flags: number, mode: number): number;
  mkdiratSync(dirfd: number, name: string, mode: number): void;
  mknodatSync(dirfd: number, name: string, mode: number, major: number, minor: number, exact: boolean): void;
  symlinkatSync(target: string, dirfd: number, name: string): void;
  linkatSync(olddirfd: number, oldname: string, newdirfd: number, newname: string): void;
  unlinkatSync(dirfd: number, name: string, removeDir: boolean): void;
  fchownFdSync(fd: number, uid: number, gid: number): void;
  chmodFdSync(fd: number, mode: number, isDir: boolean): void;
  haveChmodFdSync(): boolean;
  utimensFdSync(fd: number, dirfd: number, name: string, atimeNs: bigint, mtimeNs: bigint): void;
  setxattratSync(dirfd: number, name: string, key: string, value: Uint8Array): void;
  readdirFdSync(dirfd: number): string[];
  cloneFdSync(srcFd: number, dstFd: number): void;
  copyFdSync(srcFd: number, dstFd: number): number;
  copyFd(srcFd: number, dstFd: number): Promise<void>;
  // durable.ts (native/durable.cc)
  fsyncPath(path: string, isDirectory: boolean): Promise<void>;
  replaceFile(path: string, data: string | Uint8Array, mode: number, durable: boolean): Promise<void>;
  writeNewFiles(dir: string, names: string[], datas: Array<string | Uint8Array>, mode: number): Promise<void>;
  renameDurable(from: string, to: string, syncFrom: boolean): Promise<void>;
  // btrfs.ts (native/btrfs.cc)
  btrfsSubvolCreate(dir: string, name: string): Promise<void>;
  btrfsSnapshot(source: string, dir: string, name: string, readOnly: boolean): Promise<void>;
  btrfsSubvolDestroy(dir: string, name: string): Promise<void>;
  btrfsGetFlags(path: string): Promise<number>;
  btrfsSetFlags(path: string, flags: number | bigint): Promise<void>;
  btrfsSubvolId(path: string): Promise<number>;
  btrfsSubvolChildren(path: string): Promise<BtrfsChildSubvolume[]>;
  btrfsFsInfo(path: string): Promise<BtrfsFsInfo>;
  btrfsQgroupLimit(path: string, qgroupid: number | bigint, maxReferenced: number | bigint): Promise<void>;
  btrfsQgroupDestroy(path: string, qgroupid: number | bigint): Promise<void>;
  // quota.ts (native/quota.cc)
  xfsGetProjectId(path: string): Promise<number>;
  xfsSetProjectId(path: string, projectId: number): Promise<void>;
  xfsSetProjectLimit(path: string, projectId: number, bytes: number): Promise<void>;
  xfsGetProjectLimit(path: string, projectId: number): Promise<number>;
  xfsQuotaState(path: string): Promise<number>;
  // index.ts (native/userns.cc)
  makeUserNamespaceSync(maps: IdRanges): number;
  idmappedMount(source: string, target: string, usernsFd: number, readOnly: boolean, recursive: boolean): Promise<void>;
  shiftOwnership(root: string, maps: IdRanges, toHost: boolean): Promise<void>;
  removeTree(path: string): Promise<void>;
}

/** One range of an id map: `size` ids from `containerId` on stand for `hostId` on (core's IdMap). */
export interface IdRange { containerId: number; hostId: number; size: number }
/** A uid map and a gid map (core's IdMappings). */
export interface IdRanges { uidMap: readonly IdRange[]; gidMap: readonly IdRange[] }

/** Flag values from the C headers the addon was compiled against (frozen). */
export interface NativeConstants {
  readonly MS_RDONLY: number; readonly MS_NOSUID: number; readonly MS_NODEV: number;
  readonly MS_NOEXEC: number; readonly MS_REMOUNT: number; readonly MS_BIND: number;
  readonly MS_REC: number; readonly MS_PRIVATE: number; readonly MS_SLAVE: number;
  readonly MS_SHARED: number; readonly MS_NOATIME: number; readonly MS_RELATIME: number;
  readonly MNT_FORCE: number; readonly MNT_DETACH: number; readonly MNT_EXPIRE: number;
  readonly UMOUNT_NOFOLLOW: number;
  readonly XATTR_CREATE: number; readonly XATTR_REPLACE: number;
  readonly S_IFCHR: number; readonly S_IFBLK: number; readonly S_IFIFO: number;
  readonly S_IFSOCK: number; readonly S_IFREG: number; readonly S_IFDIR: number;
  readonly S_IFLNK: number;
  readonly LOCK_SH: number; readonly LOCK_EX: number; readonly LOCK_UN: number; readonly LOCK_NB: number;
}

function load(): NativeBinding {
  // CAIRN_SYS_ADDON: another build of this same addon (scripts/sanitize.sh points it at
  // the ASan/UBSan build); unset, node-gyp-build's pick (a local build, else the prebuilt one).
  const override = process.env['CAIRN_SYS_ADDON'];
  if (override) return createRequire(import.meta.url)(override) as NativeBinding;
  return loadAddon<NativeBinding>(fileURLToPath(new URL('..', import.meta.url)));
}

export const native: NativeBinding = load();
