// Packing a layer directory's changes as an OCI layer tar. By default @cairnfs/sys's
// TarPacker writes the tar (headers, content, padding) in the addon, one native call per
// output chunk; the node:fs path below (pureJs) builds the same bytes in JS.
import * as fs from 'node:fs';
import { PACK_KEEP_WHITEOUT_NAMES, PACK_OVERLAY, PACK_PATH_ORDER, openTarPacker, type TarPacker } from '@cairnfs/sys';
import { Readable } from 'node:stream';
import { CairnError, errnoCode, mapId, type Change, type IdMappings } from '@cairnfs/core';
import { changesBetween } from './changes.js';
import type { TarEntryType } from './entry.js';
import { WHITEOUT_OPAQUE, WHITEOUT_PREFIX, splitEntryPath } from './safe-path.js';
import { changedWhileRead, listBeneath, lstatBeneath, openRegularBeneath, type BeneathNode } from './beneath.js';
import { BLOCK } from './tar-fields.js';
import { encodeHeader, encodeHeaderInto, type TarHeaderInput } from './tar-writer.js';
import { RECORDED_DEVICE_XATTR, parseRecordedDevice } from './owners.js';
import { PACK_BUFFER, directStream } from './export-to-fd.js';

/**
 * One entry to pack: a header and, for regular files, where its content is read from (a
 * path below the layer root, resolved beneath it) with the identity (device, inode) of
 * the file its header was built from.
 */
interface ExportEntry {
  header: TarHeaderInput;
  file?: { root: string; rel: string; dev: bigint; ino: bigint };
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
   * Files of `dir` whose name starts with `.wh.`. `refuse` (default): the export fails with
   * ERR_UNSAFE_ARCHIVE, since in a layer tar that name is a deletion: a container that
   * made /etc/.wh.passwd would otherwise commit a layer that deletes /etc/passwd, while
   * changes() reports an added file. `keep`: pack them as they are, for aufs branches,
   * whose `.wh.` files are their whiteouts.
   */
  whiteoutNames?: 'refuse' | 'keep';
  /**
   * Read the tree entry by entry (lstat with xattrs and link target, open/read/close, each
   * resolved beneath `dir` without following a symlink: beneath.ts) and encode headers in
   * JS, instead of @cairnfs/sys's TarPacker. Same bytes out,
   * ~1.6× the CPU. Default: false, unless the environment sets `CAIRN_PURE_JS=1` (as for
   * applyLayer).
   */
  pureJs?: boolean;
  /**
   * The tree is stored shifted by these maps (applyDiff with idMappings, or an upper dir
   * written through an id-mapped mount): owners are packed host → container, so the tar
   * has the container's ids. An owner outside the maps is ERR_BACKEND_FAILED.
   */
  idMappings?: IdMappings | null;
}

/** What the node:fs walk needs to know besides the tree. */
interface PackContext { overlay: boolean; keep: boolean; maps: IdMappings | null }

function usePureJs(opts: { pureJs?: boolean }): boolean {
  return opts.pureJs ?? process.env.CAIRN_PURE_JS === '1';
}

/** Xattrs that describe the host, not the layer: overlayfs bookkeeping and SELinux labels. */
function exportableXattr(name: string): boolean {
  return !name.startsWith('trusted.overlay.') && !name.startsWith('user.overlay.') && name !== 'security.selinux';
}

/**
 * Output chunk size, on both paths. Headers and file content are written straight into
 * one buffer of this size (file content read at the right offset), so a small file costs
 * one open/read/close and no intermediate buffer or copy; measured against the 64 KiB
 * batches of packEntries this halved export's user CPU (docs/benchmarks.md).
 */
const BATCH = PACK_BUFFER;

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
  const keep = opts.whiteoutNames === 'keep';
  if (!usePureJs(opts)) return packNative(dir, (opts.whiteouts === 'overlay' ? PACK_OVERLAY : 0) | (keep ? PACK_KEEP_WHITEOUT_NAMES : 0), sorted, opts.idMappings ?? null);
  return packDirect(changeEntries(dir, sorted, { overlay: opts.whiteouts === 'overlay', keep, maps: opts.idMappings ?? null }));
}

/**
 * Packs a whole overlayfs upper directory as an OCI layer tar: a 0/0 character device
 * becomes `.wh.<name>`, a directory with `trusted.overlay.opaque=y` becomes its entry
 * followed by `.wh..wh..opq` inside it. Used by overlay2's native diff.
 */
export function exportOverlayUpper(dir: string, opts: Pick<ExportOptions, 'pureJs' | 'idMappings'> = {}): Readable {
  if (!usePureJs(opts)) return packNative(dir, PACK_OVERLAY, null, opts.idMappings ?? null);
  return packDirect(walkEntries(dir, { overlay: true, keep: false, maps: opts.idMappings ?? null }));
}

/**
 * Packs every entry below `dir` as an addition: the bytes of
 * `exportChanges(dir, await changesBetween(dir, null))`, but the addon walks the tree
 * itself in exportChanges' path order, so no change list is built (naive diff of a base
 * layer). The pure-JS path does exactly that composition.
 */
export async function exportTree(dir: string, opts: Pick<ExportOptions, 'pureJs' | 'idMappings'> = {}): Promise<Readable> {
  if (!usePureJs(opts)) return packNative(dir, PACK_PATH_ORDER, null, opts.idMappings ?? null);
  return exportChanges(dir, await changesBetween(dir, null, { pureJs: true }), { pureJs: true, idMappings: opts.idMappings ?? null });
}

function* changeEntries(dir: string, changes: readonly Change[], ctx: PackContext): Generator<ExportEntry> {
  const inodes = new Map<string, string>();
  for (const change of changes) {
    const parts = splitEntryPath(change.path.replace(/^\/+/, ''));
    if (parts.length === 0) continue; // the root itself is not an entry of a changeset
    const rel = parts.join('/');
    if (change.kind === 'delete') {
      yield { header: whiteoutHeader(parts, 0, 0, 0n, 0) };
      continue;
    }
    yield* pathEntries(dir, rel, parts, inodes, ctx);
  }
}

function* walkEntries(dir: string, ctx: PackContext): Generator<ExportEntry> {
  const inodes = new Map<string, string>();
  // Depth-first, children in byte order: parents precede children, output is stable.
  const stack: string[][] = [listDir(dir, '').sort().reverse()];
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
    const node = lstatBeneath(dir, rel);
    yield* pathEntries(dir, rel, rel.split('/'), inodes, ctx, node);
    if (node !== null && (node.st.mode & S_IFMT) === S_IFDIR) {
      stack.push(listDir(dir, rel).sort().reverse());
      prefixes.push(rel + '/');
    }
  }
}

const { S_IFMT, S_IFDIR, S_IFREG, S_IFLNK, S_IFCHR, S_IFBLK, S_IFIFO } = fs.constants;

/** A directory's names, beneath the root: one swapped for a symlink or a file meanwhile fails the export. */
function listDir(dir: string, rel: string): string[] {
  try {
    return listBeneath(dir, rel);
  } catch (err) {
    const code = errnoCode(err);
    if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'ELOOP' || code === 'EXDEV') throw changedWhileRead(`Cannot export /${rel} of ${dir}`, rel, err);
    throw err;
  }
}

/** The owner a header carries: as stored, or mapped back host → container. */
function packedOwner(ctx: PackContext, rel: string, uid: number, gid: number, lenient = false): [number, number] {
  if (!ctx.maps) return [uid, gid];
  const u = mapId(ctx.maps.uidMap, uid, false);
  const g = mapId(ctx.maps.gidMap, gid, false);
  if (u === undefined || g === undefined) {
    if (lenient) return [0, 0];
    throw unmappedOwner(rel, `owner ${uid}:${gid}`);
  }
  return [u, g];
}

function unmappedOwner(rel: string, detail: string): CairnError {
  return new CairnError('ERR_BACKEND_FAILED',
    `Cannot export /${rel}: its ${detail} has no mapping in the layer's id map (a file given an owner from outside the container's id range?); chown it into the range and retry`,
    { subject: rel });
}

function* pathEntries(dir: string, rel: string, parts: string[], inodes: Map<string, string>, ctx: PackContext,
  found: BeneathNode | null = lstatBeneath(dir, rel)): Generator<ExportEntry> {
  const overlay = ctx.overlay;
  const keepWhiteoutNames = ctx.keep;
  if (!keepWhiteoutNames && parts[parts.length - 1]!.startsWith(WHITEOUT_PREFIX)) throw whiteoutNamed(rel);
  // Beneath the root, the last component not followed: a parent a container swapped for a
  // symlink (to a host directory) makes the name "not there", never a host file's entry.
  if (found === null) {
    throw new CairnError('ERR_BACKEND_FAILED',
      `Cannot export /${rel}: the change list names it but it is not in ${dir} (was the layer modified during the diff?).`,
      { subject: rel });
  }
  const st = found.st;
  let mode = st.mode & 0o7777;
  const ifmt = st.mode & S_IFMT;
  const rdevZero = st.rdevMajor === 0 && st.rdevMinor === 0;
  // A whiteout's owner means nothing (overlayfs makes them with the mounter's ids): unmapped, 0:0.
  const whiteout = overlay && ifmt === S_IFCHR && rdevZero;
  let [uid, gid] = packedOwner(ctx, rel, st.uid, st.gid, whiteout);
  let type: TarEntryType;
  if (ifmt === S_IFREG) type = 'file';
  else if (ifmt === S_IFDIR) type = 'dir';
  else if (ifmt === S_IFLNK) type = 'symlink';
  else if (ifmt === S_IFCHR) type = 'char';
  else if (ifmt === S_IFBLK) type = 'block';
  else if (ifmt === S_IFIFO) type = 'fifo';
  else return; // sockets have no tar form

  if (whiteout) {
    // moby's overlay converter: the whiteout keeps the device's owner and mtime, mode 0600.
    yield { header: whiteoutHeader(parts, uid, gid, st.mtimeNs, 0o600) };
    return;
  }
  const xattrs = new Map<string, Buffer>();
  for (const [name, value] of found.xattrs) if (exportableXattr(name)) xattrs.set(name, value);
  let device: { major: number; minor: number } | null = null;
  const recorded = type === 'file' && st.size === 0 && mode === 0 ? xattrs.get(RECORDED_DEVICE_XATTR) : undefined;
  const dev = recorded === undefined ? null : parseRecordedDevice(recorded.toString('latin1'));
  if (dev !== null) {
    // The placeholder of a device an unprivileged apply could not make: packed as the device.
    [uid, gid] = packedOwner(ctx, rel, dev.uid, dev.gid);
    type = dev.block ? 'block' : 'char';
    mode = dev.mode;
    device = { major: dev.major, minor: dev.minor };
    xattrs.delete(RECORDED_DEVICE_XATTR);
  }
  const header: TarHeaderInput = { name: rel, type, mode, uid, gid, mtimeNs: st.mtimeNs };
  if (xattrs.size > 0) header.xattrs = xattrs;

  if (type !== 'dir' && st.nlink > 1) {
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
      header.size = st.size;
      yield { header, file: { root: dir, rel, dev: st.dev, ino: st.ino } };
      break;
    case 'symlink':
      header.linkname = found.link ?? '';
      yield { header };
      break;
    case 'char':
    case 'block':
      header.devmajor = device?.major ?? st.rdevMajor;
      header.devminor = device?.minor ?? st.rdevMinor;
      yield { header };
      break;
    case 'dir': {
      yield { header };
      const opaque = overlay ? found.xattrs.get('trusted.overlay.opaque') ?? found.xattrs.get('user.overlay.opaque') ?? null : null;
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

/** A sync tar stream over entries, in BATCH-sized chunks, ending with the trailer. */
function packDirect(entries: Iterable<ExportEntry>): Readable {
  // highWaterMark 1: one chunk is buffered at a time, so read() hands that chunk over as
  // it is; with room for two, the async iterator's read() concatenated (copied) them.
  return Readable.from(tarChunks(entries), { objectMode: false, highWaterMark: 1 });
}

/**
 * Encodes headers and reads file content synchronously into BATCH-sized buffers. A file
 * is read for exactly its header's size; one that shrank meanwhile fails the stream
 * with ERR_INVALID_ARCHIVE (the tar would be corrupt), as packEntries does. Each yielded
 * buffer is fresh, so consumers may hold on to it.
 */
function* tarChunks(entries: Iterable<ExportEntry>): Generator<Buffer> {
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
    const fd = openRegular(header.name, file);
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

/**
 * Opens the regular file an entry's header was built from, for reading, as the native
 * packer does (openBeneathSync: resolved beneath the layer root without following a
 * symlink, checked as an O_PATH fd, reopened from a file handle where the process may):
 * it must be that very regular file (device, inode), or the export fails with
 * ERR_INVALID_ARCHIVE before a byte is read, and nothing else — a device, a fifo — was
 * opened for reading.
 */
function openRegular(name: string, file: { root: string; rel: string; dev: bigint; ino: bigint }): number {
  const fd = openRegularBeneath(file.root, file.rel, file);
  if (fd === null) throw changedWhilePacked(name);
  return fd;
}

/** Paths handed to the native packer per push. */
const PUSH_BATCH = 1024;

/**
 * The tar stream from @cairnfs/sys's TarPacker: headers, content and padding are written
 * by the addon straight into BATCH-sized buffers, one native call per buffer. With
 * `changes`, their paths are pushed PUSH_BATCH at a time (sorted, normalised,
 * deletions flagged); with null, the packer walks the whole tree itself.
 */
function packNative(dir: string, flags: number, changes: readonly Change[] | null, maps: IdMappings | null): Readable {
  return directStream((next) => nativeChunks(dir, flags, changes, maps, next), BATCH);
}

/** The packer's archive, filled into the buffers `next` hands out (a new one after each full one is yielded). */
function* nativeChunks(dir: string, flags: number, changes: readonly Change[] | null, maps: IdMappings | null, next: () => Buffer): Generator<Buffer> {
  let packer: TarPacker;
  try {
    packer = openTarPacker(dir, flags, changes === null, maps);
  } catch (err) {
    throw packError(err, dir);
  }
  try {
    let ended = changes === null;
    let at = 0;
    let buf = next();
    let used = 0;
    for (;;) {
      used = packer.fill(buf, used);
      if (used === buf.length) {
        yield buf;
        buf = next();
        used = 0;
        continue;
      }
      if (ended) {
        if (used > 0) yield buf.subarray(0, used);
        return;
      }
      const rels: string[] = [];
      const deletes = new Uint8Array(PUSH_BATCH);
      while (rels.length < PUSH_BATCH && at < changes!.length) {
        const change = changes![at++]!;
        const rel = entryPath(change.path);
        if (rel === '') continue; // the root itself is not an entry of a changeset
        if (change.kind === 'delete') deletes[rels.length] = 1;
        rels.push(rel);
      }
      if (rels.length > 0) packer.push(rels, deletes);
      else {
        packer.end();
        ended = true;
      }
    }
  } catch (err) {
    throw packError(err, dir);
  } finally {
    packer.close();
  }
}

/**
 * '/a/b': one leading slash, no empty, '.' or '..' components, no NUL, components of at
 * most 85 UTF-16 units and at most 1,366 in all, so that no component can exceed NAME_MAX
 * bytes nor the whole PATH_MAX (splitEntryPath's limits; a unit is at most 3 UTF-8 bytes).
 */
const CLEAN_PATH = /^(?:\/(?!\.\.?(?:\/|$))[^/\0]{1,85})+$/;

/** A change path in its normalised relative form; splitEntryPath (and its refusals) only for paths that need it. */
function entryPath(path: string): string {
  if (path.length <= 1366 && CLEAN_PATH.test(path)) return path.slice(1);
  return splitEntryPath(path.replace(/^\/+/, '')).join('/');
}

/** The packer's failures as the CairnErrors the node:fs path throws. */
function packError(err: unknown, dir: string): unknown {
  const e = err as { cairnCode?: string; subject?: string; detail?: string; code?: string; syscall?: string; path?: string; message?: string };
  if (e.code === 'EOVERFLOW' && e.syscall === 'chown') {
    const rel = (e.path ?? '').startsWith(`${dir}/`) ? e.path!.slice(dir.length + 1) : (e.path ?? '');
    return unmappedOwner(rel, /owner \d+:\d+/.exec(e.message ?? '')?.[0] ?? 'owner');
  }
  if (e.cairnCode === 'ERR_LAYER_NOT_FOUND') {
    const rel = e.subject!;
    return new CairnError('ERR_BACKEND_FAILED',
      `Cannot export /${rel}: the change list names it but it is not in ${dir} (was the layer modified during the diff?).`,
      { subject: rel });
  }
  if (e.cairnCode === 'ERR_UNSAFE_ARCHIVE' && e.detail === 'whiteout-name') return whiteoutNamed(e.subject!);
  if (e.cairnCode === 'ERR_INVALID_ARCHIVE') {
    const detail = e.detail ?? '';
    if (detail.startsWith('short:')) return shorterThanHeader(e.subject!, Number(detail.slice(6)));
    if (detail === 'changed') return changedWhilePacked(e.subject!);
    const name = e.subject!;
    const key = detail.slice('xattr:'.length);
    return new CairnError('ERR_INVALID_ARCHIVE', `Cannot pack xattr "${key}" of ${name}: the name cannot be written in a PAX record.`, { subject: name });
  }
  return err;
}

/** A file the layer holds under a whiteout's name: no layer tar can carry it as a file. */
function whiteoutNamed(rel: string): CairnError {
  const slash = rel.lastIndexOf('/');
  const target = rel.slice(0, slash + 1) + rel.slice(slash + 1 + WHITEOUT_PREFIX.length);
  return new CairnError('ERR_UNSAFE_ARCHIVE',
    `Cannot export /${rel}: a file whose name starts with "${WHITEOUT_PREFIX}" means a deletion in a layer tar ` +
    `(here of /${target}), so no layer can carry it. Rename or remove it (it was made in the container or layer, not by an image).`,
    { subject: rel });
}

function changedWhilePacked(name: string): CairnError {
  return new CairnError('ERR_INVALID_ARCHIVE',
    `Cannot pack ${name}: it was replaced (by another file, a device or a fifo) while it was being packed; nothing of the replacement was read. Export the layer again once nothing writes into it.`,
    { subject: name });
}

function shorterThanHeader(name: string, size: number): CairnError {
  return new CairnError('ERR_INVALID_ARCHIVE',
    `Cannot pack ${name}: its content is shorter than the ${size} bytes in its header (did the file change while it was being packed?).`,
    { subject: name });
}
