// Loads the compiled addon. The relative path works from src/ (jest runs the sources) and
// from dist/ (the built package), since both sit one level below the package root.
import { createRequire } from 'node:module';

/** The raw addon surface; src/index.ts wraps it with documented, typed functions. */
export interface NativeBinding {
  constants: Record<string, number>;
  mount(source: string | null, target: string, fstype: string | null, flags: number, data: string | null): Promise<void>;
  mountAt(cwd: string, source: string | null, target: string, fstype: string | null, flags: number, data: string | null): Promise<void>;
  umount2(target: string, flags: number): Promise<void>;
  fsMount(fstype: string, source: string | null, params: Array<[string, string | null]>, target: string, readOnly: boolean, cwd: string | null): Promise<void>;
  hasNewMountApi(): boolean;
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
  makeUserNamespaceSync(maps: IdRanges): number;
  idmappedMount(source: string, target: string, usernsFd: number, readOnly: boolean, recursive: boolean): Promise<void>;
  shiftOwnership(root: string, maps: IdRanges, toHost: boolean): Promise<void>;
}

/** One range of an id map: `size` ids from `containerId` on stand for `hostId` on (core's IdMap). */
export interface IdRange { containerId: number; hostId: number; size: number }
/** A uid map and a gid map (core's IdMappings). */
export interface IdRanges { uidMap: readonly IdRange[]; gidMap: readonly IdRange[] }

function load(): NativeBinding {
  const require = createRequire(import.meta.url);
  try {
    return require('../build/Release/cairn_sys.node') as NativeBinding;
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'MODULE_NOT_FOUND') {
      throw new Error(
        '@cairnfs/sys: the native addon is not built (build/Release/cairn_sys.node is missing). ' +
          'Run `npm rebuild @cairnfs/sys` (needs g++, make and python3) and try again.',
        { cause: err },
      );
    }
    throw err;
  }
}

export const native: NativeBinding = load();
