// Packing a layer directory's changes as an OCI layer tar.
import * as fs from 'node:fs';
import type { Readable } from 'node:stream';
import type { Change } from '../driver.js';
import { CairnError, errnoCode } from '../errors.js';
import type { TarEntryType } from './entry.js';
import { WHITEOUT_OPAQUE, WHITEOUT_PREFIX, splitEntryPath } from './safe-path.js';
import * as sys from './sys.js';
import { packEntries, type TarHeaderInput, type TarSourceEntry } from './tar-writer.js';

export interface ExportOptions {
  /**
   * How deletions are recorded in `dir` itself. `overlay`: `dir` is (or mirrors) an
   * overlayfs upper dir, so a 0/0 character device is a deletion (packed as
   * `.wh.<name>`) and a directory with `trusted.overlay.opaque=y` gets a `.wh..wh..opq`
   * entry. `none` (default): everything is packed as what it is.
   */
  whiteouts?: 'overlay' | 'none';
}

/** Xattrs that describe the host, not the layer: overlayfs bookkeeping and SELinux labels. */
function exportableXattr(name: string): boolean {
  return !name.startsWith('trusted.overlay.') && !name.startsWith('user.overlay.') && name !== 'security.selinux';
}

const READ_CHUNK = 1024 * 1024;

/**
 * Packs the given changes of `dir` as an OCI layer tar: additions and modifications as
 * entries (directories, files, symlinks, hardlinks — the second and later paths of an
 * inode become hardlink entries —, devices, fifos; xattrs as SCHILY.xattr.*; nanosecond
 * mtimes), deletions as `.wh.<name>`. Paths are sorted and headers carry no user/group
 * names or access times, so equal trees give byte-identical tars. Sockets are skipped.
 * File content is read as the stream is consumed, one chunk at a time.
 */
export function exportChanges(dir: string, changes: readonly Change[], opts: ExportOptions = {}): Readable {
  const sorted = [...changes].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  return packEntries(changeEntries(dir, sorted, opts.whiteouts === 'overlay'));
}

/**
 * Packs a whole overlayfs upper directory as an OCI layer tar: a 0/0 character device
 * becomes `.wh.<name>`, a directory with `trusted.overlay.opaque=y` becomes its entry
 * followed by `.wh..wh..opq` inside it. Used by overlay2's native diff.
 */
export function exportOverlayUpper(dir: string): Readable {
  return packEntries(walkEntries(dir));
}

function* changeEntries(dir: string, changes: readonly Change[], overlay: boolean): Generator<TarSourceEntry> {
  const inodes = new Map<string, string>();
  for (const change of changes) {
    const parts = splitEntryPath(change.path.replace(/^\/+/, ''));
    if (parts.length === 0) continue; // the root itself is not an entry of a changeset
    const rel = parts.join('/');
    if (change.kind === 'delete') {
      yield { header: whiteoutHeader(parts, 0, 0, 0n, 0) };
      continue;
    }
    yield* pathEntries(dir, rel, parts, inodes, overlay);
  }
}

function* walkEntries(dir: string): Generator<TarSourceEntry> {
  const inodes = new Map<string, string>();
  // Depth-first, children in byte order: parents precede children, output is stable.
  const stack: string[][] = [fs.readdirSync(dir).sort().reverse().map((n) => n)];
  const prefixes: string[] = [''];
  while (stack.length > 0) {
    const names = stack[stack.length - 1]!;
    const name = names.pop();
    if (name === undefined) {
      stack.pop();
      prefixes.pop();
      continue;
    }
    const rel = prefixes[prefixes.length - 1]! + name;
    yield* pathEntries(dir, rel, rel.split('/'), inodes, true);
    const st = fs.lstatSync(dir + '/' + rel);
    if (st.isDirectory()) {
      stack.push(fs.readdirSync(dir + '/' + rel).sort().reverse());
      prefixes.push(rel + '/');
    }
  }
}

function* pathEntries(dir: string, rel: string, parts: string[], inodes: Map<string, string>, overlay: boolean): Generator<TarSourceEntry> {
  const abs = dir + '/' + rel;
  let st: fs.BigIntStats;
  try {
    st = fs.lstatSync(abs, { bigint: true });
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') {
      throw new CairnError('ERR_LAYER_NOT_FOUND',
        `Cannot export /${rel}: the change list names it but it is not in ${dir} (was the layer modified during the diff?).`,
        { subject: rel, cause: err });
    }
    throw err;
  }
  const mode = Number(st.mode & 0o7777n);
  const uid = Number(st.uid);
  const gid = Number(st.gid);
  let type: TarEntryType;
  if (st.isFile()) type = 'file';
  else if (st.isDirectory()) type = 'dir';
  else if (st.isSymbolicLink()) type = 'symlink';
  else if (st.isCharacterDevice()) type = 'char';
  else if (st.isBlockDevice()) type = 'block';
  else if (st.isFIFO()) type = 'fifo';
  else return; // sockets have no tar form

  if (overlay && type === 'char' && st.rdev === 0n) {
    // moby's overlay converter: the whiteout keeps the device's owner and mtime, mode 0600.
    yield { header: whiteoutHeader(parts, uid, gid, st.mtimeNs, 0o600) };
    return;
  }
  const header: TarHeaderInput = { name: rel, type, mode, uid, gid, mtimeNs: st.mtimeNs };
  const xattrs = readXattrs(abs);
  if (xattrs.size > 0) header.xattrs = xattrs;

  if (type !== 'dir' && st.nlink > 1n) {
    const key = `${st.dev}:${st.ino}`;
    const first = inodes.get(key);
    if (first !== undefined) {
      yield { header: { name: rel, type: 'hardlink', mode, uid, gid, mtimeNs: st.mtimeNs, linkname: first } };
      return;
    }
    inodes.set(key, rel);
  }
  switch (type) {
    case 'file':
      header.size = Number(st.size);
      yield { header, body: readChunks(abs, header.size) };
      break;
    case 'symlink':
      header.linkname = fs.readlinkSync(abs);
      yield { header };
      break;
    case 'char':
    case 'block':
      header.devmajor = sys.devMajor(st.rdev);
      header.devminor = sys.devMinor(st.rdev);
      yield { header };
      break;
    case 'dir': {
      yield { header };
      const opaque = overlay ? sys.lgetxattrSync(abs, 'trusted.overlay.opaque') : null;
      if (opaque !== null && opaque.length === 1 && opaque[0] === 0x79) {
        yield { header: { name: rel + '/' + WHITEOUT_OPAQUE, type: 'file', mode: mode & 0o777, uid, gid, mtimeNs: st.mtimeNs, size: 0 } };
      }
      break;
    }
    default:
      yield { header };
  }
}

function whiteoutHeader(parts: string[], uid: number, gid: number, mtimeNs: bigint, mode: number): TarHeaderInput {
  const name = [...parts.slice(0, -1), WHITEOUT_PREFIX + parts[parts.length - 1]].join('/');
  return { name, type: 'file', mode, uid, gid, mtimeNs, size: 0 };
}

function readXattrs(abs: string): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  for (const name of sys.llistxattrSync(abs)) {
    if (!exportableXattr(name)) continue;
    const value = sys.lgetxattrSync(abs, name);
    if (value !== null) out.set(name, value);
  }
  return out;
}

/** File content, read synchronously a chunk per pull, never more than `size` bytes. */
function* readChunks(abs: string, size: number): Generator<Buffer> {
  const fd = fs.openSync(abs, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
  try {
    let left = size;
    while (left > 0) {
      const buf = Buffer.allocUnsafe(Math.min(READ_CHUNK, left));
      const n = fs.readSync(fd, buf, 0, buf.length, null);
      if (n === 0) break; // shrank: the writer reports the size mismatch
      left -= n;
      yield n === buf.length ? buf : buf.subarray(0, n);
    }
  } finally {
    fs.closeSync(fd);
  }
}
