// applyLayer: writes an OCI layer tar into a directory, the way moby's UnpackLayer does,
// but refusing (not stripping) anything that could reach outside the directory.
//
// Speed: the parser is synchronous and calls back into LayerWriter with slices of each
// input chunk; all file work is sync fs calls in that same stack. Per small file that
// is measurably cheaper than promise-based fs (no thread-pool hand-off per call), and a
// chunk holding many small entries is applied without yielding. File data is written as
// it arrives, so memory stays at one input chunk whatever the layer or file size.
//
// Safety model: every parent path is resolved component by component with lstat from
// the layer root; a symlink anywhere in the chain is ERR_UNSAFE_ARCHIVE, a missing
// directory is created. Verified directories are cached and the cache is invalidated
// whenever this apply removes or replaces a path. Final components are never followed:
// files are created with O_CREAT|O_EXCL|O_NOFOLLOW after removing whatever was there,
// and metadata calls on them are fd-based or l* (no-follow). This assumes nothing else
// writes into `dir` during the apply (the driver holds the layer), as moby does.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Readable } from 'node:stream';
import { CairnError, errnoCode, isCairnError, translateSpaceError } from '@cairnfs/core';
import type { TarEntry } from './entry.js';
import { asBuffer } from './read-tar.js';
import { PATH_MAX, classifyWhiteout, printable, splitEntryPath, unsafeEntry } from './safe-path.js';
import * as sys from './sys.js';
import { TarParser, type TarHandler } from './tar-parser.js';
import { isMainThread } from 'node:worker_threads';
import { applyLayerNative, processUmask, refreshUmask } from './apply-native.js';
import type { ApplyOptions, WhiteoutMode } from './apply-options.js';
import { OwnerShift, RECORDED_DEVICE_XATTR, recordedDeviceValue, reportDropped } from './owners.js';

const OPEN_NEW = fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW;

/**
 * Applies a layer tar into `dir`; resolves to the number of file-content bytes written.
 *
 * Regular files, directories (an existing directory is kept and its metadata updated;
 * anything else in the way is replaced), symlinks, hardlinks (to entries inside `dir`
 * only), character/block devices and fifos; ownership, modes with setuid/setgid/sticky
 * (chmod after chown, which clears them), xattrs, and nanosecond mtimes — set after the
 * content, directories' at the very end. Sparse files are written with holes.
 *
 * Errors: ERR_UNSAFE_ARCHIVE (an entry would land outside `dir` or act through a
 * symlink; names the entry), ERR_INVALID_ARCHIVE (corrupt or truncated tar),
 * ERR_NO_SPACE (ENOSPC/EDQUOT). On failure the file being written is removed; entries
 * applied before it stay (the driver discards the whole layer).
 */
export async function applyLayer(dir: string, tar: Readable | AsyncIterable<Uint8Array>, opts: ApplyOptions = {}): Promise<number> {
  const root = path.resolve(dir);
  refreshUmask();
  if (!fs.statSync(root, { throwIfNoEntry: false })?.isDirectory()) {
    throw new CairnError('ERR_INVALID_OPTION', `Cannot apply a layer into ${root}: it is not a directory.`, { subject: root });
  }
  if (!(opts.pureJs ?? process.env.CAIRN_PURE_JS === '1')) {
    const offThread = opts.offThread ?? (isMainThread && process.env.CAIRN_APPLY_THREAD !== '0');
    return applyLayerNative(root, tar, opts, offThread, (err, entry) => explain(err, entry, root));
  }
  const writer = new LayerWriter(root, opts);
  const parser = new TarParser(writer);
  try {
    for await (const chunk of tar as AsyncIterable<Uint8Array>) {
      // After the end-of-archive marker the parser ignores input; we still drain it so
      // the producer (a decompressor, a socket) is not left blocked.
      if (!parser.finished) parser.write(asBuffer(chunk));
    }
    parser.finish();
    writer.finishDirectories();
  } catch (err) {
    writer.abort();
    throw explain(err, writer.currentName, root);
  }
  (opts.report ?? ((d) => reportDropped(root, d)))(writer.owners.dropped);
  return writer.bytes;
}

/** Turns an errno from the file work into a CairnError that names the entry. */
function explain(err: unknown, entry: string, root: string): unknown {
  if (isCairnError(err)) return err;
  const what = `applying layer entry "${printable(entry)}" into ${root}`;
  const space = translateSpaceError(err, what);
  if (space !== err) return space;
  const code = errnoCode(err);
  const detail = err instanceof Error ? err.message : String(err);
  const syscall = (err as { syscall?: string } | null)?.syscall;
  if (code === 'EOVERFLOW' && syscall === 'chown') {
    return new CairnError('ERR_INVALID_OPTION',
      `${what}: its owner has no mapping in idMappings (${detail}); give maps that cover every id the image uses (usually 0-65535), or ignoreChownErrors: true to keep such files owned by the caller`,
      { subject: entry, cause: err });
  }
  if ((code === 'EINVAL' || code === 'EPERM') && (syscall === 'fchown' || syscall === 'lchown' || syscall === 'chown')) {
    // EINVAL: the id is not mapped in this user namespace (rootless with a single id).
    return new CairnError('ERR_PREREQUISITES',
      `${what}: the kernel refused to give it its owner (${detail}); this process cannot own files as every id the layer uses (a user namespace mapping one id?). ` +
      'Run it through `cairn unshare` (newuidmap with /etc/subuid and /etc/subgid ranges), or pass ignoreChownErrors: true to keep such files owned by the caller.',
      { subject: entry, cause: err });
  }
  switch (code) {
    case 'ELOOP':
    case 'EXDEV':
      // openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS) refused a parent: a symlink appeared
      // on the way after the JS-side check (something else is writing into the layer).
      return unsafeEntry(entry, `its path goes through a symlink or leaves the layer (${detail})`);
    case 'EPERM':
    case 'EACCES':
      return new CairnError('ERR_PREREQUISITES',
        `${what}: ${detail}. Applying layers with devices, ownership or trusted.* xattrs needs root (or pass ownership: false / noDevices: true).`,
        { subject: entry, cause: err });
    case 'EOPNOTSUPP':
    case 'ENOTSUP':
      return new CairnError('ERR_NOT_SUPPORTED',
        `${what}: ${detail}. The filesystem under ${root} does not support this (extended attributes?).`, { subject: entry, cause: err });
    case 'ENAMETOOLONG':
    case 'ENOTDIR':
    case 'EISDIR':
    case 'EINVAL':
      return new CairnError('ERR_INVALID_ARCHIVE', `${what}: ${detail}.`, { subject: entry, cause: err });
    default:
      return err;
  }
}

class LayerWriter implements TarHandler {
  bytes = 0;
  currentName = '';
  private readonly mode: WhiteoutMode;
  private readonly noDevices: boolean;
  private readonly ownership: boolean;
  /**
   * Relative paths known to be real directories (not symlinks) in this apply, each with
   * whether it has the setgid bit (new files in it then take its group, not ours).
   */
  private readonly knownDirs = new Map<string, boolean>();
  /**
   * The known directories directly below each known directory, so that forgetting a
   * removed directory's subtree costs that subtree, not a scan of every known directory (an
   * archive replacing n directories cost n^2).
   */
  private readonly knownChildren = new Map<string, Set<string>>();
  /**
   * Overlay mode: paths this layer whited out. A directory re-created at one of them must
   * be opaque, or the lower layers' content would show through it (a whiteout removes what
   * is below this layer, never what this layer itself writes).
   */
  private readonly whitedOut = new Set<string>();
  /** Relative paths this apply wrote (delete mode: opaque dirs keep them). */
  private readonly unpacked = new Set<string>();
  private readonly dirTimes: Array<{ rel: string; abs: string; atimeNs: bigint; mtimeNs: bigint }> = [];
  private file: { fd: number; abs: string; entry: TarEntry; inSetgidDir: boolean } | undefined;
  private readonly euid = process.geteuid?.() ?? -1;
  private readonly egid = process.getegid?.() ?? -1;
  /** Owner shift, dropped chowns, recorded devices (owners.ts). */
  readonly owners: OwnerShift;
  private readonly opaqueXattr: string;

  constructor(private readonly root: string, opts: ApplyOptions) {
    this.owners = new OwnerShift(opts.idMappings, opts.ignoreChownErrors ?? false);
    this.opaqueXattr = opts.userXattr ? 'user.overlay.opaque' : 'trusted.overlay.opaque';
    this.mode = opts.whiteouts ?? 'delete';
    this.noDevices = opts.noDevices ?? false;
    this.ownership = opts.ownership ?? process.getuid?.() === 0;
    this.knownDirs.set('', (fs.statSync(root).mode & 0o2000) !== 0);
  }

  entry(entry: TarEntry): void {
    this.currentName = entry.name;
    const e = this.ownership ? this.storedOwner(entry) : entry;
    const parts = splitEntryPath(e.name);
    if (parts.length === 0) {
      // `./` describes the layer root itself: only its metadata can change.
      if (e.type !== 'dir') throw unsafeEntry(e.name, `a ${e.type} cannot replace the layer root`);
      this.applyDirMetadata('', this.root, e);
      return;
    }
    const base = parts[parts.length - 1]!;
    const parentParts = parts.slice(0, -1);
    // Joined once per entry (hot): the parent's relative path is a prefix of the entry's.
    const rel = parts.length === 1 ? base : parts.join('/');
    const parentRel = parts.length === 1 ? '' : rel.slice(0, rel.length - base.length - 1);

    if (this.mode !== 'aufs') {
      const wh = classifyWhiteout(base, e.name);
      if (wh.kind === 'meta') return;
      if (wh.kind === 'whiteout' || wh.kind === 'opaque') {
        this.whiteout(e, parentParts, wh.kind === 'whiteout' ? wh.target : undefined);
        return;
      }
    }

    if (this.whitedOut.size > 0 && !this.knownDirs.has(parentRel)) this.recreateWhitedOutParents(parentParts);
    const parent = this.ensureDir(parentParts, e.name, parentRel);
    const abs = parent + '/' + base;
    if (this.mode === 'delete') this.unpacked.add(rel);

    switch (e.type) {
      case 'dir': {
        const st = lstatOrNull(abs);
        if (!st?.isDirectory()) {
          if (st) this.remove(rel, abs, st);
          fs.mkdirSync(abs, 0o700);
          if (this.whitedOut.has(rel)) sys.lsetxattrSync(abs, this.opaqueXattr, Buffer.from('y'));
        }
        this.applyDirMetadata(rel, abs, e);
        return;
      }
      case 'file': {
        const inSetgidDir = this.knownDirs.get(parentRel) === true;
        // Created with its final permission bits (less the umask); end() fixes up only
        // what open cannot express, saving a syscall per file in the common case.
        const perm = e.mode & 0o777;
        let fd: number;
        try {
          fd = fs.openSync(abs, OPEN_NEW, perm);
        } catch (err) {
          if (errnoCode(err) !== 'EEXIST') throw err;
          this.remove(rel, abs);
          fd = fs.openSync(abs, OPEN_NEW, perm);
        }
        this.file = { fd, abs, entry: e, inSetgidDir };
        return; // content arrives through data(); metadata in end()
      }
      case 'symlink':
        // Linux cannot make a symlink to '' (ENOENT); found by the mutation fuzzer.
        if (!e.linkname) throw new CairnError('ERR_INVALID_ARCHIVE', `symlink entry "${printable(e.name)}" has an empty target; the archive is corrupt`, { subject: e.name });
        if (Buffer.byteLength(e.linkname) >= PATH_MAX) {
          throw new CairnError('ERR_INVALID_ARCHIVE', `symlink entry "${printable(e.name)}" has a target longer than PATH_MAX (${PATH_MAX} bytes); the archive is corrupt`, { subject: e.name });
        }
        this.removeIfPresent(rel, abs);
        fs.symlinkSync(e.linkname, abs);
        this.applyMetadata(abs, e, false);
        return;
      case 'hardlink': {
        const target = this.resolveLinkTarget(e);
        if (target === abs) return;
        this.removeIfPresent(rel, abs);
        // link(2) does not follow a symlink target: linking to a symlink makes another
        // symlink, never a link to what it points at. Metadata is the target's, as GNU
        // tar does: a hardlink header's mode/owner must not change the shared inode.
        fs.linkSync(target, abs);
        return;
      }
      case 'char':
      case 'block':
      case 'fifo': {
        if (this.noDevices && e.type !== 'fifo') {
          throw unsafeEntry(e.name, `device nodes are not allowed here (noDevices)`);
        }
        this.removeIfPresent(rel, abs);
        const kind = e.type === 'char' ? sys.S_IFCHR : e.type === 'block' ? sys.S_IFBLK : sys.S_IFIFO;
        try {
          sys.mknodSync(abs, kind | (e.mode & 0o777), e.devmajor, e.devminor);
        } catch (err) {
          if (errnoCode(err) !== 'EPERM' || e.type === 'fifo') throw err;
          this.devicePlaceholder(rel, abs, e); // unprivileged (a user namespace): recorded, not made
          return;
        }
        this.applyMetadata(abs, e, true);
        return;
      }
    }
  }

  data(chunk: Buffer, position: number): void {
    const f = this.file;
    if (!f) return;
    let off = 0;
    while (off < chunk.length) {
      off += fs.writeSync(f.fd, chunk, off, chunk.length - off, position + off);
    }
    this.bytes += chunk.length;
  }

  end(): void {
    const f = this.file;
    if (!f) return;
    const e = f.entry;
    if (e.sparse) fs.ftruncateSync(f.fd, e.sparse.realSize);
    const { chown, chmod } = this.metaNeeds(e, f.inSetgidDir);
    if (chown) this.chown(() => fs.fchownSync(f.fd, e.uid, e.gid), e);
    if (chmod) fs.fchmodSync(f.fd, e.mode);
    fs.closeSync(f.fd);
    this.file = undefined;
    this.applyXattrs(f.abs, e);
    const [atime, mtime] = times(e);
    sys.lutimesNsSync(f.abs, atime, mtime);
  }

  /**
   * What a new regular file needs besides open: a new file already belongs to us, so
   * chown only when the entry says otherwise (or a setgid parent gave it another group);
   * chmod when open's mode fell short: umask, setuid/setgid/sticky, or a chown (which
   * clears setuid/setgid).
   */
  private metaNeeds(e: TarEntry, inSetgidDir: boolean): { chown: boolean; chmod: boolean } {
    const chown = this.ownership && (e.uid !== this.euid || e.gid !== this.egid || inSetgidDir);
    const chmod = chown || e.mode > 0o777 || (e.mode & processUmask()) !== 0;
    return { chown, chmod };
  }

  /** Closes and removes a half-written file so no partial file keeps a final name. */
  abort(): void {
    const f = this.file;
    if (!f) return;
    this.file = undefined;
    try { fs.closeSync(f.fd); } catch { /* already closed */ }
    try { fs.unlinkSync(f.abs); } catch { /* nothing to remove */ }
  }

  /** Directory times last: writing their children changed them. */
  finishDirectories(): void {
    for (const d of this.dirTimes) {
      // Replaced later in the same layer (then forgotten, with everything below it: a
      // symlink now in its place must not lead the update outside the layer, and a file
      // in place of a parent would make the lstat fail with ENOTDIR).
      if (d.rel !== '' && !this.knownDirs.has(d.rel)) continue;
      const st = d.rel === '' ? null : lstatOrNull(d.abs);
      if (d.rel !== '' && !st?.isDirectory()) continue;
      sys.lutimesNsSync(d.abs, d.atimeNs, d.mtimeNs);
    }
  }

  private whiteout(e: TarEntry, parentParts: string[], target: string | undefined): void {
    const parentRel = parentParts.join('/');
    if (this.mode === 'overlay') {
      const parent = this.ensureDir(parentParts, e.name);
      if (target === undefined) {
        sys.lsetxattrSync(parent, this.opaqueXattr, Buffer.from('y'));
        return;
      }
      const abs = parent + '/' + target;
      const rel = parentRel === '' ? target : parentRel + '/' + target;
      this.removeIfPresent(rel, abs);
      this.whitedOut.add(rel);
      // What the kernel and moby leave for a deletion: a 0/0 char device, mode 0000,
      // owned as the whiteout entry says.
      sys.mknodSync(abs, sys.S_IFCHR, 0, 0);
      if (this.ownership) this.chown(() => fs.lchownSync(abs, e.uid, e.gid), e);
      return;
    }
    const parent = this.existingDir(parentParts, e.name);
    if (parent === null) return; // nothing there to delete
    if (target === undefined) {
      this.removeNotUnpacked(parentRel, parent);
      return;
    }
    const rel = parentRel === '' ? target : parentRel + '/' + target;
    this.removeIfPresent(rel, parent + '/' + target);
  }

  /**
   * Overlay mode: an entry below a path this layer whited out (`.wh.dir`, then `dir/g` with
   * no `dir/` entry) finds the whiteout device where its parent should be. Each such
   * ancestor becomes a new opaque directory (0755, as implicit parents are), which is what
   * delete mode leaves: the lower `dir` gone, this layer's `dir/g` in a fresh one.
   */
  private recreateWhitedOutParents(parentParts: string[]): void {
    let cur = '';
    let up = '';
    for (const part of parentParts) {
      up = cur;
      cur = cur === '' ? part : cur + '/' + part;
      if (!this.whitedOut.has(cur) || this.knownDirs.has(cur)) continue;
      const upAbs = this.existingDir(up === '' ? [] : up.split('/'), this.currentName);
      if (upAbs === null) return; // ensureDir creates the rest
      const abs = upAbs + '/' + part;
      const st = lstatOrNull(abs);
      if (st) {
        if (st.isDirectory()) continue;
        if (!st.isCharacterDevice() || st.rdev !== 0) continue; // not our whiteout: ensureDir reports it
        this.remove(cur, abs, st);
      }
      fs.mkdirSync(abs, 0o755);
      sys.lsetxattrSync(abs, this.opaqueXattr, Buffer.from('y'));
    }
  }

  /** Opaque directory in delete mode: removes what this apply did not write. */
  private removeNotUnpacked(rel: string, abs: string): void {
    for (const name of fs.readdirSync(abs)) {
      const childRel = rel === '' ? name : rel + '/' + name;
      const childAbs = abs + '/' + name;
      if (!this.unpacked.has(childRel)) {
        this.removeIfPresent(childRel, childAbs);
      } else if (lstatOrNull(childAbs)?.isDirectory()) {
        this.removeNotUnpacked(childRel, childAbs);
      }
    }
  }

  /**
   * Returns the absolute path of the directory `parts`, creating missing components
   * (mode 0755, as moby does). A symlink in the chain is ERR_UNSAFE_ARCHIVE; a
   * non-directory is ERR_INVALID_ARCHIVE.
   */
  private ensureDir(parts: string[], entryName: string, rel?: string): string {
    return this.walkDirs(parts, entryName, true, rel)!;
  }

  /** Like ensureDir, but null when a component is missing (nothing is created). */
  private existingDir(parts: string[], entryName: string): string | null {
    return this.walkDirs(parts, entryName, false);
  }

  private walkDirs(parts: string[], entryName: string, create: boolean, joined?: string): string | null {
    const rel = joined ?? parts.join('/');
    const abs = rel === '' ? this.root : this.root + '/' + rel;
    if (this.knownDirs.has(rel)) return abs;
    let curRel = '';
    let curAbs = this.root;
    for (const part of parts) {
      const parentSetgid = this.knownDirs.get(curRel) === true;
      curRel = curRel === '' ? part : curRel + '/' + part;
      curAbs = curAbs + '/' + part;
      if (this.knownDirs.has(curRel)) continue;
      const st = lstatOrNull(curAbs);
      if (st === null) {
        if (!create) return null;
        fs.mkdirSync(curAbs, 0o755);
        this.knowDir(curRel, parentSetgid); // Linux: a new dir inherits setgid
        continue;
      } else if (st.isSymbolicLink()) {
        throw unsafeEntry(entryName, `its path goes through the symlink "${curRel}"`);
      } else if (!st.isDirectory()) {
        throw new CairnError('ERR_INVALID_ARCHIVE',
          `Invalid layer archive: entry "${printable(entryName)}" needs "${curRel}" to be a directory, but it is not.`,
          { subject: entryName });
      }
      this.knowDir(curRel, (st.mode & 0o2000) !== 0);
    }
    return abs;
  }

  private resolveLinkTarget(e: TarEntry): string {
    const parts = splitEntryPath(e.linkname ?? '');
    if (parts.length === 0) throw unsafeEntry(e.name, 'a hardlink to the layer root');
    const parent = this.existingDir(parts.slice(0, -1), e.name);
    const abs = parent === null ? null : parent + '/' + parts[parts.length - 1]!;
    const st = abs === null ? null : lstatOrNull(abs);
    if (abs === null || st === null) {
      throw new CairnError('ERR_INVALID_ARCHIVE',
        `Invalid layer archive: hardlink "${printable(e.name)}" points to "${printable(e.linkname ?? '')}", which is not in the layer.`,
        { subject: e.name });
    }
    if (st.isDirectory()) throw unsafeEntry(e.name, 'a hardlink to a directory');
    return abs;
  }

  private removeIfPresent(rel: string, abs: string): void {
    const st = lstatOrNull(abs);
    if (st) this.remove(rel, abs, st);
  }

  private remove(rel: string, abs: string, st: fs.Stats | null = lstatOrNull(abs)): void {
    if (st === null) return;
    if (st.isDirectory()) {
      fs.rmSync(abs, { recursive: true, force: true });
      this.forgetDirs(rel);
    } else {
      fs.unlinkSync(abs);
    }
  }

  private knowDir(rel: string, setgid: boolean): void {
    if (!this.knownDirs.has(rel) && rel !== '') {
      const slash = rel.lastIndexOf('/');
      const parent = slash < 0 ? '' : rel.slice(0, slash);
      let children = this.knownChildren.get(parent);
      if (children === undefined) this.knownChildren.set(parent, children = new Set());
      children.add(rel);
    }
    this.knownDirs.set(rel, setgid);
  }

  private forgetDirs(rel: string): void {
    const slash = rel.lastIndexOf('/');
    this.knownChildren.get(slash < 0 ? '' : rel.slice(0, slash))?.delete(rel);
    const stack = [rel];
    for (let d = stack.pop(); d !== undefined; d = stack.pop()) {
      this.knownDirs.delete(d);
      const children = this.knownChildren.get(d);
      if (children === undefined) continue;
      this.knownChildren.delete(d);
      for (const child of children) stack.push(child);
    }
  }

  private applyDirMetadata(rel: string, abs: string, e: TarEntry): void {
    if (this.ownership) this.chown(() => fs.lchownSync(abs, e.uid, e.gid), e);
    fs.chmodSync(abs, e.mode); // abs was just verified (or made) a real directory
    this.knowDir(rel, (e.mode & 0o2000) !== 0);
    this.applyXattrs(abs, e);
    const [atimeNs, mtimeNs] = times(e);
    this.dirTimes.push({ rel, abs, atimeNs, mtimeNs });
  }

  private applyMetadata(abs: string, e: TarEntry, chmod: boolean): void {
    if (this.ownership) this.chown(() => fs.lchownSync(abs, e.uid, e.gid), e);
    if (chmod) fs.chmodSync(abs, e.mode); // devices/fifos just made by us, not symlinks
    this.applyXattrs(abs, e);
    const [atime, mtime] = times(e);
    sys.lutimesNsSync(abs, atime, mtime);
  }

  /** The entry with the owner to store: shifted by idMappings; the caller's own when uncovered and ignoreChownErrors. */
  private storedOwner(e: TarEntry): TarEntry {
    const mapped = this.owners.map(e.uid, e.gid);
    if (mapped === null) {
      if (!this.owners.drop('EOVERFLOW', e.name, e.uid, e.gid)) {
        throw Object.assign(new Error(`EOVERFLOW: owner ${e.uid}:${e.gid} has no mapping in the id map, chown '${e.name}'`), { code: 'EOVERFLOW', syscall: 'chown' });
      }
      return { ...e, uid: this.euid, gid: this.egid };
    }
    return mapped[0] === e.uid && mapped[1] === e.gid ? e : { ...e, uid: mapped[0], gid: mapped[1] };
  }

  /** A chown, dropped (and counted) when the kernel refuses it and ignoreChownErrors is set. */
  private chown(fn: () => void, e: TarEntry): void {
    try {
      fn();
    } catch (err) {
      if (!this.owners.drop(err, e.name, e.uid, e.gid)) throw err;
    }
  }

  /**
   * A device node where mknod is refused (no CAP_MKNOD over the host in a user namespace):
   * an empty 0000 file carrying RECORDED_DEVICE_XATTR, which export turns back into the device.
   */
  private devicePlaceholder(rel: string, abs: string, e: TarEntry): void {
    const fd = fs.openSync(abs, OPEN_NEW, 0);
    try {
      sys.lsetxattrSync(abs, RECORDED_DEVICE_XATTR, Buffer.from(recordedDeviceValue(e.uid, e.gid, e.mode, e.type === 'block', e.devmajor, e.devminor)));
      if (this.ownership) this.chown(() => fs.fchownSync(fd, e.uid, e.gid), e);
    } catch (err) {
      fs.closeSync(fd);
      fs.unlinkSync(abs);
      throw err;
    }
    fs.closeSync(fd);
    const [atime, mtime] = times(e);
    sys.lutimesNsSync(abs, atime, mtime);
    this.owners.recorded(rel);
  }

  private applyXattrs(abs: string, e: TarEntry): void {
    for (const [name, value] of e.xattrs) sys.lsetxattrSync(abs, name, value);
  }
}

/** atime defaults to mtime and is never before it (moby does the same). */
function times(e: TarEntry): [bigint, bigint] {
  const atime = e.atimeNs !== undefined && e.atimeNs > e.mtimeNs ? e.atimeNs : e.mtimeNs;
  return [atime, e.mtimeNs];
}

function lstatOrNull(p: string): fs.Stats | null {
  return fs.lstatSync(p, { throwIfNoEntry: false }) ?? null;
}
