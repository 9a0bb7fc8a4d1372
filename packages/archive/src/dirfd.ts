// Working on layer content through directory fds (the pure-JS applier): names are always
// relative to a directory fd resolved beneath the layer root, never followed.
import * as fs from 'node:fs';
import { errnoCode } from '@cairnfs/core';
import * as sys from './sys.js';

export const O_NODE_PATH = sys.O_PATH | fs.constants.O_NOFOLLOW;
export const O_DIR_PATH = sys.O_PATH | fs.constants.O_NOFOLLOW | fs.constants.O_DIRECTORY;

/** Removes everything inside the directory behind `dfd`, depth first, every name relative to its directory's fd. */
export function removeContents(dfd: number): void {
  for (const name of sys.readdirFdSync(dfd)) {
    const st = lstatAt(dfd, name);
    if (st === null) continue;
    if (st.isDirectory()) {
      const child = sys.openatSync(dfd, name, O_DIR_PATH);
      try {
        removeContents(child);
      } finally {
        fs.closeSync(child);
      }
      sys.unlinkatSync(dfd, name, true);
    } else {
      sys.unlinkatSync(dfd, name);
    }
  }
}


/** lstat of dirfd/name (the name never followed: fstat of an O_PATH|O_NOFOLLOW fd); null when nothing is there. */
export function lstatAt(dirfd: number, name: string): fs.Stats | null;
export function lstatAt(dirfd: number, name: string, bigint: true): fs.BigIntStats | null;
export function lstatAt(dirfd: number, name: string, bigint = false): fs.Stats | fs.BigIntStats | null {
  let fd: number;
  try {
    fd = sys.openatSync(dirfd, name, O_NODE_PATH);
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return null;
    throw err;
  }
  try {
    return bigint ? fs.fstatSync(fd, { bigint: true }) : fs.fstatSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}
