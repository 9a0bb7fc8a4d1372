// applyLayer: writes an OCI layer tar into a directory, the way moby's UnpackLayer does,
// but refusing (not stripping) anything that could reach outside the directory.
//
// Speed: the parser is synchronous and calls back into LayerWriter with slices of each
// input chunk; all file work is sync fs calls in that same stack. Per small file that
// is measurably cheaper than promise-based fs (no thread-pool hand-off per call), and a
// chunk holding many small entries is applied without yielding. File data is written as
// it arrives, so memory stays at one input chunk whatever the layer or file size.
//
// Safety model (the engine's invariant, README): every parent is checked component by
// component (lstat relative to its parent's fd) from the layer root; a symlink anywhere in
// the chain is ERR_UNSAFE_ARCHIVE, a missing directory is created. Verified directories
// are remembered, and their fds are opened beneath the root without following a symlink
// (openat2), so a parent swapped for a symlink after its check is refused (ELOOP), never
// walked through. Every call is relative to such a directory fd (@cairnfs/sys *at calls)
// and never follows its last component: files are created with O_CREAT|O_EXCL|O_NOFOLLOW
// after removing whatever was there; owner, mode and times are set on the file's fd or on
// an O_PATH fd of the node checked to be the kind just made; xattrs by name relative to
// the parent fd, not followed. It holds with something else writing into `dir` (a running
// container), as the native applier does; test/race.test.ts runs both.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Readable } from 'node:stream';
import { CairnError, errnoCode } from '@cairnfs/core';
import type { TarEntry } from './entry.js';
import { asBuffer } from './read-tar.js';
import { PATH_MAX, classifyWhiteout, printable, splitEntryPath, unsafeEntry } from './safe-path.js';
import * as sys from './sys.js';
import { O_DIR_PATH, O_NODE_PATH, lstatAt, removeContents } from './dirfd.js';
import { TarParser, type TarHandler } from './tar-parser.js';
import { isMainThread } from 'node:worker_threads';
import { applyLayerNative, processUmask, refreshUmask } from './apply-native.js';
import type { ApplyOptions, WhiteoutMode } from './apply-options.js';
import { OwnerShift, RECORDED_DEVICE_XATTR, recordedDeviceValue, reportDropped } from './owners.js';
import { explain } from './apply-errors.js';

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
  } finally {
    writer.close();
  }
  (opts.report ?? ((d) => reportDropped(root, d)))(writer.owners.dropped);
  return writer.bytes;
}

class LayerWriter implements TarHandler {
  bytes = 0;
  currentName = '';
  private readonly mode: WhiteoutMode;
  private readonly noDevices: boolean;
  private readonly ownership: boolean;
  /** The layer root, open (the trusted path, opened once); every other fd is resolved beneath it. */
  private readonly rootFd: number;
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
  /** O_PATH fds of known directories, opened beneath the root (emptied between entries when large). */
  private readonly dirFds = new Map<string, number>();
  /**
   * Overlay mode: paths this layer whited out. A directory re-created at one of them must
   * be opaque, or the lower layers' content would show through it (a whiteout removes what
   * is below this layer, never what this layer itself writes).
   */
  private readonly whitedOut = new Set<string>();
  /** Relative paths this apply wrote (delete mode: opaque dirs keep them). */
  private readonly unpacked = new Set<string>();
  private readonly dirTimes: Array<{ rel: string; atimeNs: bigint; mtimeNs: bigint }> = [];
  /** The regular file being written: its fd, and its parent's fd (valid until the next entry) and name. */
  private file: { fd: number; pfd: number; base: string; entry: TarEntry; inSetgidDir: boolean } | undefined;
  private readonly euid = process.geteuid?.() ?? -1;
  private readonly egid = process.getegid?.() ?? -1;
  /** Owner shift, dropped chowns, recorded devices (owners.ts). */
  readonly owners: OwnerShift;
  private readonly opaqueXattr: string;
  /** fchmodat2 (Linux 6.6): modes of O_PATH fds. Without it devices and fifos get their exact mode at mknod. */
  private readonly chmodFd = sys.haveChmodFd();

  constructor(root: string, opts: ApplyOptions) {
    this.owners = new OwnerShift(opts.idMappings, opts.ignoreChownErrors ?? false);
    this.opaqueXattr = opts.userXattr ? 'user.overlay.opaque' : 'trusted.overlay.opaque';
    this.mode = opts.whiteouts ?? 'delete';
    this.noDevices = opts.noDevices ?? false;
    this.ownership = opts.ownership ?? process.getuid?.() === 0;
    this.rootFd = fs.openSync(root, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
    this.knownDirs.set('', (fs.fstatSync(this.rootFd).mode & 0o2000) !== 0);
  }

  /** Closes every fd this writer holds (after finishing or failing). */
  close(): void {
    for (const fd of this.dirFds.values()) fs.closeSync(fd);
    this.dirFds.clear();
    fs.closeSync(this.rootFd);
  }

  entry(entry: TarEntry): void {
    this.currentName = entry.name;
    // Fds held by locals live for one entry (and its data/end): the cache is only emptied here.
    if (this.dirFds.size > DIR_FD_CACHE) {
      for (const fd of this.dirFds.values()) fs.closeSync(fd);
      this.dirFds.clear();
    }
    const e = this.ownership ? this.storedOwner(entry) : entry;
    const parts = splitEntryPath(e.name);
    if (parts.length === 0) {
      // `./` describes the layer root itself: only its metadata can change.
      if (e.type !== 'dir') throw unsafeEntry(e.name, `a ${e.type} cannot replace the layer root`);
      this.applyDirMetadata('', -1, '', e);
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
    const pfd = this.ensureDir(parentParts, e.name, parentRel);
    if (this.mode === 'delete') this.unpacked.add(rel);

    switch (e.type) {
      case 'dir': {
        const st = lstatAt(pfd, base);
        if (!st?.isDirectory()) {
          if (st) this.remove(rel, pfd, base, st);
          sys.mkdiratSync(pfd, base, 0o700);
          if (this.whitedOut.has(rel)) sys.setxattratSync(pfd, base, this.opaqueXattr, Buffer.from('y'));
        }
        this.applyDirMetadata(rel, pfd, base, e);
        return;
      }
      case 'file': {
        const inSetgidDir = this.knownDirs.get(parentRel) === true;
        // Created with its final permission bits (less the umask); end() fixes up only
        // what open cannot express, saving a syscall per file in the common case.
        const perm = e.mode & 0o777;
        let fd: number;
        try {
          fd = sys.openatSync(pfd, base, OPEN_NEW, perm);
        } catch (err) {
          if (errnoCode(err) !== 'EEXIST') throw err;
          this.remove(rel, pfd, base);
          fd = sys.openatSync(pfd, base, OPEN_NEW, perm);
        }
        this.file = { fd, pfd, base, entry: e, inSetgidDir };
        return; // content arrives through data(); metadata in end()
      }
      case 'symlink':
        // Linux cannot make a symlink to '' (ENOENT); found by the mutation fuzzer.
        if (!e.linkname) throw new CairnError('ERR_INVALID_ARCHIVE', `symlink entry "${printable(e.name)}" has an empty target; the archive is corrupt`, { subject: e.name });
        if (Buffer.byteLength(e.linkname) >= PATH_MAX) {
          throw new CairnError('ERR_INVALID_ARCHIVE', `symlink entry "${printable(e.name)}" has a target longer than PATH_MAX (${PATH_MAX} bytes); the archive is corrupt`, { subject: e.name });
        }
        this.removeIfPresent(rel, pfd, base);
        sys.symlinkatSync(e.linkname, pfd, base);
        this.applyMetadata(rel, pfd, base, e, fs.constants.S_IFLNK, null);
        return;
      case 'hardlink': {
        const target = this.resolveLinkTarget(e);
        if (target.rel === rel) return;
        this.removeIfPresent(rel, pfd, base);
        // Resolved again: the removal may have taken the target's directory with it.
        const tfd = this.existingDir(target.parentParts, e.name);
        if (tfd === null) throw missingLinkTarget(e);
        // linkat(2) with flags 0 does not follow a symlink target: linking to a symlink
        // makes another symlink, never a link to what it points sys. Metadata is the
        // target's, as GNU tar does: a hardlink header's mode/owner must not change the
        // shared inode.
        sys.linkatSync(tfd, target.base, pfd, base);
        return;
      }
      case 'char':
      case 'block':
      case 'fifo': {
        if (this.noDevices && e.type !== 'fifo') {
          throw unsafeEntry(e.name, `device nodes are not allowed here (noDevices)`);
        }
        this.removeIfPresent(rel, pfd, base);
        const kind = e.type === 'char' ? sys.S_IFCHR : e.type === 'block' ? sys.S_IFBLK : sys.S_IFIFO;
        try {
          // With fchmodat2 the mode is set on the node's O_PATH fd below; without it, here,
          // exactly (setuid/setgid included), as no later call could without following a name.
          if (this.chmodFd) sys.mknodatSync(pfd, base, kind | (e.mode & 0o777), e.devmajor, e.devminor);
          else sys.mknodatSync(pfd, base, kind | e.mode, e.devmajor, e.devminor, true);
        } catch (err) {
          if (errnoCode(err) !== 'EPERM' || e.type === 'fifo') throw err;
          this.devicePlaceholder(rel, pfd, base, e); // unprivileged (a user namespace): recorded, not made
          return;
        }
        this.applyMetadata(rel, pfd, base, e, kind, kind === sys.S_IFIFO ? null : [e.devmajor, e.devminor]);
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
    // By name in the verified parent, the name not followed; times on the fd itself.
    for (const [name, value] of e.xattrs) sys.setxattratSync(f.pfd, f.base, name, value);
    const [atime, mtime] = times(e);
    sys.utimensFdSync(f.fd, f.pfd, f.base, atime, mtime);
    this.file = undefined;
    fs.closeSync(f.fd);
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
    try { sys.unlinkatSync(f.pfd, f.base); } catch { /* nothing to remove */ }
  }

  /** Directory times last: writing their children changed them. */
  finishDirectories(): void {
    for (const d of this.dirTimes) {
      // Replaced later in the same layer (then forgotten, with everything below it): skipped.
      // Resolved beneath the root without symlinks, so a later entry cannot point the
      // update outside the layer.
      if (d.rel !== '' && !this.knownDirs.has(d.rel)) continue;
      let fd = this.rootFd;
      if (d.rel !== '') {
        try {
          fd = sys.openDirBeneathSync(this.rootFd, d.rel);
        } catch {
          continue; // no longer a directory reachable without symlinks
        }
      }
      try {
        sys.utimensFdSync(fd, fd, '.', d.atimeNs, d.mtimeNs);
      } finally {
        if (fd !== this.rootFd) fs.closeSync(fd);
      }
    }
  }

  private whiteout(e: TarEntry, parentParts: string[], target: string | undefined): void {
    const parentRel = parentParts.join('/');
    if (this.mode === 'overlay') {
      const pfd = this.ensureDir(parentParts, e.name);
      if (target === undefined) {
        sys.setxattratSync(pfd, '.', this.opaqueXattr, Buffer.from('y'));
        return;
      }
      const rel = parentRel === '' ? target : parentRel + '/' + target;
      this.removeIfPresent(rel, pfd, target);
      this.whitedOut.add(rel);
      // What the kernel and moby leave for a deletion: a 0/0 char device, mode 0000,
      // owned as the whiteout entry says.
      sys.mknodatSync(pfd, target, sys.S_IFCHR, 0, 0);
      if (this.ownership) {
        const fd = this.openMade(rel, pfd, target, sys.S_IFCHR, [0, 0]);
        try {
          this.chown(() => sys.fchownFdSync(fd, e.uid, e.gid), e);
        } finally {
          fs.closeSync(fd);
        }
      }
      return;
    }
    const pfd = this.existingDir(parentParts, e.name);
    if (pfd === null) return; // nothing there to delete
    if (target === undefined) {
      this.removeNotUnpacked(parentRel, pfd);
      return;
    }
    const rel = parentRel === '' ? target : parentRel + '/' + target;
    this.removeIfPresent(rel, pfd, target);
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
      const upFd = this.existingDir(up === '' ? [] : up.split('/'), this.currentName);
      if (upFd === null) return; // ensureDir creates the rest
      const st = lstatAt(upFd, part);
      if (st) {
        if (st.isDirectory()) continue;
        if (!st.isCharacterDevice() || st.rdev !== 0) continue; // not our whiteout: ensureDir reports it
        this.remove(cur, upFd, part, st);
      }
      sys.mkdiratSync(upFd, part, 0o755);
      sys.setxattratSync(upFd, part, this.opaqueXattr, Buffer.from('y'));
    }
  }

  /** Opaque directory in delete mode: removes what this apply did not write. */
  private removeNotUnpacked(rel: string, dfd: number): void {
    for (const name of sys.readdirFdSync(dfd)) {
      const childRel = rel === '' ? name : rel + '/' + name;
      if (!this.unpacked.has(childRel)) {
        this.removeIfPresent(childRel, dfd, name);
      } else if (lstatAt(dfd, name)?.isDirectory()) {
        const child = sys.openatSync(dfd, name, O_DIR_PATH);
        try {
          this.removeNotUnpacked(childRel, child);
        } finally {
          fs.closeSync(child);
        }
      }
    }
  }

  /**
   * Returns an O_PATH fd of the directory `parts`, creating missing components (mode 0755,
   * as moby does). A symlink in the chain is ERR_UNSAFE_ARCHIVE; a non-directory is
   * ERR_INVALID_ARCHIVE. The fd is the writer's (cached): valid until the next entry.
   */
  private ensureDir(parts: string[], entryName: string, rel?: string): number {
    return this.walkDirs(parts, entryName, true, rel)!;
  }

  /** Like ensureDir, but null when a component is missing (nothing is created). */
  private existingDir(parts: string[], entryName: string): number | null {
    return this.walkDirs(parts, entryName, false);
  }

  /**
   * Each component is looked at (lstat) and made relative to its parent's fd, never
   * followed; each verified directory's fd is then opened beneath the root without
   * following a symlink (openat2), so a component swapped for a symlink after the check
   * is refused (ELOOP → ERR_UNSAFE_ARCHIVE), never walked through.
   */
  private walkDirs(parts: string[], entryName: string, create: boolean, joined?: string): number | null {
    const rel = joined ?? parts.join('/');
    if (this.knownDirs.has(rel)) return this.dirFd(rel);
    let curRel = '';
    let curFd = this.rootFd;
    for (const part of parts) {
      const parentSetgid = this.knownDirs.get(curRel) === true;
      const parentFd = curFd;
      curRel = curRel === '' ? part : curRel + '/' + part;
      if (this.knownDirs.has(curRel)) {
        curFd = this.dirFd(curRel);
        continue;
      }
      const st = lstatAt(parentFd, part);
      if (st === null) {
        if (!create) return null;
        sys.mkdiratSync(parentFd, part, 0o755);
        this.knowDir(curRel, parentSetgid); // Linux: a new dir inherits setgid
      } else if (st.isSymbolicLink()) {
        throw unsafeEntry(entryName, `its path goes through the symlink "${curRel}"`);
      } else if (!st.isDirectory()) {
        throw new CairnError('ERR_INVALID_ARCHIVE',
          `Invalid layer archive: entry "${printable(entryName)}" needs "${curRel}" to be a directory, but it is not.`,
          { subject: entryName });
      } else {
        this.knowDir(curRel, (st.mode & 0o2000) !== 0);
      }
      curFd = this.dirFd(curRel);
    }
    return curFd;
  }

  /** The cached O_PATH fd of known directory `rel`, opened beneath the root without following a symlink. */
  private dirFd(rel: string): number {
    if (rel === '') return this.rootFd;
    let fd = this.dirFds.get(rel);
    if (fd === undefined) {
      fd = sys.openDirBeneathSync(this.rootFd, rel);
      this.dirFds.set(rel, fd);
    }
    return fd;
  }

  private resolveLinkTarget(e: TarEntry): { rel: string; parentParts: string[]; base: string } {
    const parts = splitEntryPath(e.linkname ?? '');
    if (parts.length === 0) throw unsafeEntry(e.name, 'a hardlink to the layer root');
    const parentParts = parts.slice(0, -1);
    const base = parts[parts.length - 1]!;
    const pfd = this.existingDir(parentParts, e.name);
    const st = pfd === null ? null : lstatAt(pfd, base);
    if (st === null) throw missingLinkTarget(e);
    if (st.isDirectory()) throw unsafeEntry(e.name, 'a hardlink to a directory');
    return { rel: parts.join('/'), parentParts, base };
  }

  private removeIfPresent(rel: string, pfd: number, base: string): void {
    const st = lstatAt(pfd, base);
    if (st) this.remove(rel, pfd, base, st);
  }

  private remove(rel: string, pfd: number, base: string, st: fs.Stats | null = lstatAt(pfd, base)): void {
    if (st === null) return;
    if (st.isDirectory()) {
      this.forgetDirs(rel);
      const dfd = sys.openatSync(pfd, base, O_DIR_PATH);
      try {
        removeContents(dfd);
      } finally {
        fs.closeSync(dfd);
      }
      sys.unlinkatSync(pfd, base, true);
    } else {
      sys.unlinkatSync(pfd, base);
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

  /** Forgets a removed directory and everything known below it, closing their fds. */
  private forgetDirs(rel: string): void {
    const slash = rel.lastIndexOf('/');
    this.knownChildren.get(slash < 0 ? '' : rel.slice(0, slash))?.delete(rel);
    const stack = [rel];
    for (let d = stack.pop(); d !== undefined; d = stack.pop()) {
      this.knownDirs.delete(d);
      const fd = this.dirFds.get(d);
      if (fd !== undefined) {
        this.dirFds.delete(d);
        fs.closeSync(fd);
      }
      const children = this.knownChildren.get(d);
      if (children === undefined) continue;
      this.knownChildren.delete(d);
      for (const child of children) stack.push(child);
    }
  }

  /**
   * A directory's owner, mode and xattrs (its times come last, finishDirectories), all on
   * an O_PATH fd of it opened from its verified parent with O_DIRECTORY|O_NOFOLLOW, so it
   * is the real directory the entry made or verified.
   */
  private applyDirMetadata(rel: string, pfd: number, base: string, e: TarEntry): void {
    const dfd = rel === '' ? this.rootFd : sys.openatSync(pfd, base, O_DIR_PATH);
    try {
      if (this.ownership) this.chown(() => sys.fchownFdSync(dfd, e.uid, e.gid), e);
      sys.chmodFdSync(dfd, e.mode, true);
      this.knowDir(rel, (e.mode & 0o2000) !== 0);
      if (e.xattrs.size > 0) {
        // By name from the parent (the mode just set may deny a lookup of "." inside it),
        // then checked to still be this directory.
        if (rel === '') {
          for (const [name, value] of e.xattrs) sys.setxattratSync(dfd, '.', name, value);
        } else {
          const st = fs.fstatSync(dfd, { bigint: true });
          for (const [name, value] of e.xattrs) sys.setxattratSync(pfd, base, name, value);
          const now = lstatAt(pfd, base, true);
          if (now === null || now.dev !== st.dev || now.ino !== st.ino) throw this.replaced(rel, now);
        }
      }
    } finally {
      if (dfd !== this.rootFd) fs.closeSync(dfd);
    }
    const [atimeNs, mtimeNs] = times(e);
    this.dirTimes.push({ rel, atimeNs, mtimeNs });
  }

  /**
   * Symlinks, devices and fifos just made by name in their (verified) parent: owner, mode
   * (not for symlinks), xattrs and times, on an O_PATH fd of the node checked to be the
   * kind made, so a name swapped for a symlink meanwhile is refused, never followed.
   */
  private applyMetadata(rel: string, pfd: number, base: string, e: TarEntry, kind: number, dev: [number, number] | null): void {
    const fd = this.openMade(rel, pfd, base, kind, dev);
    try {
      if (this.ownership) this.chown(() => sys.fchownFdSync(fd, e.uid, e.gid), e);
      if (kind !== fs.constants.S_IFLNK) {
        if (this.chmodFd) {
          sys.chmodFdSync(fd, e.mode);
        } else if ((fs.fstatSync(fd).mode & 0o7777) !== e.mode) {
          // Made with its exact mode; a chown since cleared setuid/setgid, which only a chmod could put back.
          throw new CairnError('ERR_NOT_SUPPORTED',
            `Archive entry "${printable(e.name)}" needs mode ${e.mode.toString(8)} after its owner was set, and this kernel has no fchmodat2 (Linux 6.6) to set it without following a symlink. The layer was not applied.`,
            { subject: e.name });
        }
      }
      for (const [name, value] of e.xattrs) sys.setxattratSync(pfd, base, name, value);
      const [atime, mtime] = times(e);
      sys.utimensFdSync(fd, pfd, base, atime, mtime);
    } finally {
      fs.closeSync(fd);
    }
  }

  /** An O_PATH fd of pfd/base (never followed, never opened) checked to be the kind of node just made. */
  private openMade(rel: string, pfd: number, base: string, kind: number, dev: [number, number] | null): number {
    const fd = sys.openatSync(pfd, base, O_NODE_PATH);
    let st: fs.BigIntStats;
    try {
      st = fs.fstatSync(fd, { bigint: true });
    } catch (err) {
      fs.closeSync(fd);
      throw err;
    }
    if ((Number(st.mode) & fs.constants.S_IFMT) !== kind || (dev !== null && (sys.devMajor(st.rdev) !== dev[0] || sys.devMinor(st.rdev) !== dev[1]))) {
      fs.closeSync(fd);
      throw this.replaced(rel, st);
    }
    return fd;
  }

  /** `rel` is no longer what this apply made: something else writes into the layer. */
  private replaced(rel: string, st: fs.BigIntStats | null): CairnError {
    const what = st === null ? 'nothing' : st.isSymbolicLink() ? 'a symlink' : st.isDirectory() ? 'a directory' : st.isFile() ? 'a file'
      : st.isCharacterDevice() ? 'a character device' : st.isBlockDevice() ? 'a block device' : 'something else';
    return new CairnError('ERR_UNSAFE_ARCHIVE',
      `Archive entry "${printable(this.currentName)}": "${printable(rel)}" was replaced by ${what} while the layer was being applied (something else is writing into the layer directory). Nothing was done to the replacement; the layer was not applied.`,
      { subject: this.currentName });
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
  private devicePlaceholder(rel: string, pfd: number, base: string, e: TarEntry): void {
    const fd = sys.openatSync(pfd, base, OPEN_NEW, 0);
    try {
      sys.setxattratSync(pfd, base, RECORDED_DEVICE_XATTR, Buffer.from(recordedDeviceValue(e.uid, e.gid, e.mode, e.type === 'block', e.devmajor, e.devminor)));
      if (this.ownership) this.chown(() => fs.fchownSync(fd, e.uid, e.gid), e);
      const [atime, mtime] = times(e);
      sys.utimensFdSync(fd, pfd, base, atime, mtime);
    } catch (err) {
      fs.closeSync(fd);
      sys.unlinkatSync(pfd, base);
      throw err;
    }
    fs.closeSync(fd);
    this.owners.recorded(rel);
  }
}

/** Directory fds cached by one apply before the cache is emptied (at an entry boundary). */
const DIR_FD_CACHE = 256;

function missingLinkTarget(e: TarEntry): CairnError {
  return new CairnError('ERR_INVALID_ARCHIVE',
    `Invalid layer archive: hardlink "${printable(e.name)}" points to "${printable(e.linkname ?? '')}", which is not in the layer.`,
    { subject: e.name });
}

/** atime defaults to mtime and is never before it (moby does the same). */
function times(e: TarEntry): [bigint, bigint] {
  const atime = e.atimeNs !== undefined && e.atimeNs > e.mtimeNs ? e.atimeNs : e.mtimeNs;
  return [atime, e.mtimeNs];
}
