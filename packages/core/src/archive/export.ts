// Packing a layer directory's changes as an OCI layer tar.
import * as fs from 'node:fs';
import {
  STAT, STAT_FIELDS, WALK_LINKS, WALK_XATTRS, readFileIntoSync, statDirSync, statPathsSync,
  type DirStats, type StatBatch,
} from '@cairn/sys';
import { Readable } from 'node:stream';
import type { Change } from '../driver.js';
import { CairnError, errnoCode } from '../errors.js';
import type { TarEntryType } from './entry.js';
import { WHITEOUT_OPAQUE, WHITEOUT_PREFIX, splitEntryPath } from './safe-path.js';
import * as sys from './sys.js';
import { BLOCK } from './tar-fields.js';
import { encodeHeader, encodeHeaderInto, type TarHeaderInput } from './tar-writer.js';

/** One entry to pack: a header and, for regular files, the path its content is read from. */
interface ExportEntry {
  header: TarHeaderInput;
  file?: string;
}

export interface ExportOptions {
  /**
   * How deletions are recorded in `dir` itself. `overlay`: `dir` is (or mirrors) an
   * overlayfs upper dir, so a 0/0 character device is a deletion (packed as
   * `.wh.<name>`) and a directory with `trusted.overlay.opaque=y` gets a `.wh..wh..opq`
   * entry. `none` (default): everything is packed as what it is.
   */
  whiteouts?: 'overlay' | 'none';
  /**
   * Read the tree with node:fs (BigInt lstat, llistxattr, readlink and open/read/close per
   * entry) instead of @cairn/sys's bulk reader. Same bytes out, more CPU. Default: false,
   * unless the environment sets `CAIRN_PURE_JS=1` (as for applyLayer).
   */
  pureJs?: boolean;
}

function usePureJs(opts: { pureJs?: boolean }): boolean {
  return opts.pureJs ?? process.env.CAIRN_PURE_JS === '1';
}

/** Xattrs that describe the host, not the layer: overlayfs bookkeeping and SELinux labels. */
function exportableXattr(name: string): boolean {
  return !name.startsWith('trusted.overlay.') && !name.startsWith('user.overlay.') && name !== 'security.selinux';
}

/**
 * Output chunk size. Headers and file content are written straight into one buffer of
 * this size (file content with readSync at the right offset), so a small file costs one
 * open/read/close and no intermediate buffer or copy; measured against the 64 KiB
 * batches of packEntries this halved export's user CPU (docs/benchmarks.md).
 */
const BATCH = 256 * 1024;

const { S_IFMT, S_IFREG, S_IFDIR, S_IFLNK, S_IFCHR, S_IFBLK, S_IFIFO } = fs.constants;

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
  if (!usePureJs(opts)) return packDirect(bulkChangeEntries(dir, sorted, opts.whiteouts === 'overlay'), true);
  return packDirect(changeEntries(dir, sorted, opts.whiteouts === 'overlay'), false);
}

/**
 * Packs a whole overlayfs upper directory as an OCI layer tar: a 0/0 character device
 * becomes `.wh.<name>`, a directory with `trusted.overlay.opaque=y` becomes its entry
 * followed by `.wh..wh..opq` inside it. Used by overlay2's native diff.
 */
export function exportOverlayUpper(dir: string, opts: { pureJs?: boolean } = {}): Readable {
  if (!usePureJs(opts)) return packDirect(bulkWalkEntries(dir), true);
  return packDirect(walkEntries(dir), false);
}

function* changeEntries(dir: string, changes: readonly Change[], overlay: boolean): Generator<ExportEntry> {
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

function* walkEntries(dir: string): Generator<ExportEntry> {
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

function* pathEntries(dir: string, rel: string, parts: string[], inodes: Map<string, string>, overlay: boolean): Generator<ExportEntry> {
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
      yield { header, file: abs };
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

/** Paths lstat'ed per native call when packing a change list. */
const STAT_BATCH = 256;
const NS = 1_000_000_000n;

/** changeEntries over the bulk reader: the change list's paths lstat'ed STAT_BATCH at a time. */
function* bulkChangeEntries(dir: string, changes: readonly Change[], overlay: boolean): Generator<ExportEntry> {
  const inodes = new Map<string, string>();
  const out: ExportEntry[] = [];
  for (let start = 0; start < changes.length; start += STAT_BATCH) {
    const items: Array<{ parts: string[]; rel: string; statIndex: number }> = [];
    const rels: string[] = [];
    for (const change of changes.slice(start, start + STAT_BATCH)) {
      const parts = splitEntryPath(change.path.replace(/^\/+/, ''));
      if (parts.length === 0) continue; // the root itself is not an entry of a changeset
      const rel = parts.join('/');
      if (change.kind === 'delete') {
        items.push({ parts, rel, statIndex: -1 });
      } else {
        items.push({ parts, rel, statIndex: rels.length });
        rels.push(rel);
      }
    }
    const batch = statPathsSync(dir, rels, WALK_XATTRS | WALK_LINKS);
    const extras = new BatchExtras(batch);
    for (const { parts, rel, statIndex } of items) {
      if (statIndex < 0) {
        out.push({ header: whiteoutHeader(parts, 0, 0, 0n, 0) });
        continue;
      }
      if (batch.stats[statIndex * STAT_FIELDS + STAT.mode] === 0) {
        throw new CairnError('ERR_LAYER_NOT_FOUND',
          `Cannot export /${rel}: the change list names it but it is not in ${dir} (was the layer modified during the diff?).`,
          { subject: rel });
      }
      statEntries(out, dir + '/' + rel, rel, parts, batch.stats, statIndex, extras, inodes, overlay);
    }
    yield* out;
    out.length = 0;
  }
}

/** walkEntries over the bulk reader: one native call per directory, names in sort() order. */
function* bulkWalkEntries(dir: string): Generator<ExportEntry> {
  const inodes = new Map<string, string>();
  const out: ExportEntry[] = [];
  interface Level { prefix: string; listing: DirStats; extras: BatchExtras; order: number[]; pos: number }
  const open = (prefix: string): Level => {
    const listing = statDirSync(prefix === '' ? dir : dir + '/' + prefix.slice(0, -1), WALK_XATTRS | WALK_LINKS);
    const names = listing.names;
    const order = Array.from(names.keys()).sort((a, b) => (names[a]! < names[b]! ? -1 : names[a]! > names[b]! ? 1 : 0));
    return { prefix, listing, extras: new BatchExtras(listing), order, pos: 0 };
  };
  const stack: Level[] = [open('')];
  while (stack.length > 0) {
    const level = stack[stack.length - 1]!;
    if (level.pos === level.order.length) {
      stack.pop();
      continue;
    }
    const i = level.order[level.pos++]!;
    const rel = level.prefix + level.listing.names[i]!;
    statEntries(out, dir + '/' + rel, rel, rel.split('/'), level.listing.stats, i, level.extras, inodes, true);
    yield* out;
    out.length = 0;
    if ((level.listing.stats[i * STAT_FIELDS + STAT.mode]! & S_IFMT) === S_IFDIR) stack.push(open(rel + '/'));
  }
}

/** A batch's xattrs (exportable ones, plus overlay's opaque marker) and symlink targets by entry index. */
class BatchExtras {
  readonly xattrs = new Map<number, Map<string, Buffer>>();
  readonly opaque = new Set<number>();
  readonly links = new Map<number, string>();

  constructor(batch: StatBatch) {
    const x = batch.xattrs;
    for (let k = 0; k < x.length; k += 3) {
      const i = x[k] as number;
      const name = x[k + 1] as string;
      const value = x[k + 2] as Buffer;
      if (name === 'trusted.overlay.opaque') {
        if (value.length === 1 && value[0] === 0x79) this.opaque.add(i);
      }
      if (!exportableXattr(name)) continue;
      let map = this.xattrs.get(i);
      if (map === undefined) this.xattrs.set(i, (map = new Map()));
      map.set(name, value);
    }
    const l = batch.links;
    for (let k = 0; k < l.length; k += 2) this.links.set(l[k] as number, l[k + 1] as string);
  }
}

/** pathEntries from bulk-read numbers: the same entries, pushed onto `out`. */
function statEntries(out: ExportEntry[], abs: string, rel: string, parts: string[], stats: Float64Array, i: number,
  extras: BatchExtras, inodes: Map<string, string>, overlay: boolean): void {
  const f = i * STAT_FIELDS;
  const fullMode = stats[f + STAT.mode]!;
  const mode = fullMode & 0o7777;
  const uid = stats[f + STAT.uid]!;
  const gid = stats[f + STAT.gid]!;
  let type: TarEntryType;
  switch (fullMode & S_IFMT) {
    case S_IFREG: type = 'file'; break;
    case S_IFDIR: type = 'dir'; break;
    case S_IFLNK: type = 'symlink'; break;
    case S_IFCHR: type = 'char'; break;
    case S_IFBLK: type = 'block'; break;
    case S_IFIFO: type = 'fifo'; break;
    default: return; // sockets have no tar form
  }
  const mtimeNs = BigInt(stats[f + STAT.mtimeSec]!) * NS + BigInt(stats[f + STAT.mtimeNsec]!);
  if (overlay && type === 'char' && stats[f + STAT.rdevMajor] === 0 && stats[f + STAT.rdevMinor] === 0) {
    // moby's overlay converter: the whiteout keeps the device's owner and mtime, mode 0600.
    out.push({ header: whiteoutHeader(parts, uid, gid, mtimeNs, 0o600) });
    return;
  }
  const header: TarHeaderInput = { name: rel, type, mode, uid, gid, mtimeNs };
  const xattrs = extras.xattrs.get(i);
  if (xattrs !== undefined) header.xattrs = xattrs;

  if (type !== 'dir' && stats[f + STAT.nlink]! > 1) {
    const key = `${stats[f + STAT.dev]}:${stats[f + STAT.inoHi]}:${stats[f + STAT.inoLo]}`;
    const first = inodes.get(key);
    if (first !== undefined) {
      out.push({ header: { name: rel, type: 'hardlink', mode, uid, gid, mtimeNs, linkname: first } });
      return;
    }
    inodes.set(key, rel);
  }
  switch (type) {
    case 'file':
      header.size = stats[f + STAT.size]!;
      out.push({ header, file: abs });
      break;
    case 'symlink':
      header.linkname = extras.links.get(i) ?? '';
      out.push({ header });
      break;
    case 'char':
    case 'block':
      header.devmajor = stats[f + STAT.rdevMajor]!;
      header.devminor = stats[f + STAT.rdevMinor]!;
      out.push({ header });
      break;
    case 'dir':
      out.push({ header });
      if (overlay && extras.opaque.has(i)) {
        out.push({ header: { name: rel + '/' + WHITEOUT_OPAQUE, type: 'file', mode: mode & 0o777, uid, gid, mtimeNs, size: 0 } });
      }
      break;
    default:
      out.push({ header });
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

/** A sync tar stream over entries, in BATCH-sized chunks, ending with the trailer. */
function packDirect(entries: Iterable<ExportEntry>, nativeReads: boolean): Readable {
  // highWaterMark 1: one chunk is buffered at a time, so read() hands that chunk over as
  // it is; with room for two, the async iterator's read() concatenated (copied) them.
  return Readable.from(tarChunks(entries, nativeReads), { objectMode: false, highWaterMark: 1 });
}

/**
 * Encodes headers and reads file content synchronously into BATCH-sized buffers. A file
 * is read for exactly its header's size; one that shrank meanwhile fails the stream
 * with ERR_INVALID_ARCHIVE (the tar would be corrupt), as packEntries does. Each yielded
 * buffer is fresh, so consumers may hold on to it.
 */
function* tarChunks(entries: Iterable<ExportEntry>, nativeReads: boolean): Generator<Buffer> {
  let buf = Buffer.allocUnsafe(BATCH);
  let used = 0;
  for (const { header, file } of entries) {
    let n = encodeHeaderInto(header, buf, used);
    if (n === 0) {
      yield buf.subarray(0, used);
      buf = Buffer.allocUnsafe(BATCH);
      used = 0;
      n = encodeHeaderInto(header, buf, 0);
      if (n === 0) {
        // Only xattrs can make a header this large: it travels as a chunk of its own.
        yield encodeHeader(header);
      }
    }
    used += n;
    if (file === undefined) continue;
    const size = header.size ?? 0;
    if (nativeReads && size <= BATCH) {
      // A file that fits in one chunk: open, read and close in one native call.
      if (used + size > buf.length) {
        yield buf.subarray(0, used);
        buf = Buffer.allocUnsafe(BATCH);
        used = 0;
      }
      if (size > 0 && readFileIntoSync(file, buf, used, size) !== size) throw shorterThanHeader(header.name, size);
      used += size;
    } else {
      const fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
      try {
        let left = size;
        while (left > 0) {
          if (used === buf.length) {
            yield buf;
            buf = Buffer.allocUnsafe(BATCH);
            used = 0;
          }
          const n = fs.readSync(fd, buf, used, Math.min(buf.length - used, left), null);
          if (n === 0) throw shorterThanHeader(header.name, size);
          used += n;
          left -= n;
        }
      } finally {
        fs.closeSync(fd);
      }
    }
    let pad = (BLOCK - (size % BLOCK)) % BLOCK;
    while (pad > 0) {
      if (used === buf.length) {
        yield buf;
        buf = Buffer.allocUnsafe(BATCH);
        used = 0;
      }
      const n = Math.min(pad, buf.length - used);
      buf.fill(0, used, used + n);
      used += n;
      pad -= n;
    }
  }
  // End-of-archive: two zero blocks.
  if (used + 2 * BLOCK > buf.length) {
    yield buf.subarray(0, used);
    buf = Buffer.allocUnsafe(BATCH);
    used = 0;
  }
  buf.fill(0, used, used + 2 * BLOCK);
  yield buf.subarray(0, used + 2 * BLOCK);
}

function shorterThanHeader(name: string, size: number): CairnError {
  return new CairnError('ERR_INVALID_ARCHIVE',
    `Cannot pack ${name}: its content is shorter than the ${size} bytes in its header (did the file change while it was being packed?).`,
    { subject: name });
}
