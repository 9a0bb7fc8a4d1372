// The few @cairn/sys calls the archive code needs, typed here so this module states
// exactly what it depends on. All are no-follow (l*) variants: applying a layer must
// never act through a symlink.
import { constants as fsConstants } from 'node:fs';
import * as sys from '@cairn/sys';

interface ArchiveSys {
  mknodSync(path: string, mode: number, major: number, minor: number): void;
  lsetxattrSync(path: string, name: string, value: Buffer): void;
  lgetxattrSync(path: string, name: string): Buffer | null;
  llistxattrSync(path: string): string[];
  lutimesNsSync(path: string, atimeNs: bigint, mtimeNs: bigint): void;
}

const native = sys as unknown as ArchiveSys;

export const S_IFCHR = fsConstants.S_IFCHR;
export const S_IFBLK = fsConstants.S_IFBLK;
export const S_IFIFO = fsConstants.S_IFIFO;

export const mknodSync = (path: string, mode: number, major: number, minor: number): void =>
  native.mknodSync(path, mode, major, minor);
export const lsetxattrSync = (path: string, name: string, value: Buffer): void => native.lsetxattrSync(path, name, value);
export const lgetxattrSync = (path: string, name: string): Buffer | null => native.lgetxattrSync(path, name);
export const llistxattrSync = (path: string): string[] => native.llistxattrSync(path);
export const lutimesNsSync = (path: string, atimeNs: bigint, mtimeNs: bigint): void =>
  native.lutimesNsSync(path, atimeNs, mtimeNs);

/** glibc's dev_t split (gnu_dev_major/minor), in JS so stat results need no native call. */
export function devMajor(dev: bigint): number {
  return Number(((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn));
}
export function devMinor(dev: bigint): number {
  return Number((dev & 0xffn) | ((dev >> 12n) & ~0xffn));
}
