// Loads the compiled addon (see load.ts for which binary). The package root is one level
// above this module both from src/ (jest runs the sources) and from dist/ (the built package).
import { fileURLToPath } from 'node:url';
import { loadAddon } from './load.js';

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
}

function load(): NativeBinding {
  return loadAddon<NativeBinding>(fileURLToPath(new URL('..', import.meta.url)));
}

export const native: NativeBinding = load();
