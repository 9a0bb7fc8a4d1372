import type { BigIntStats } from 'node:fs';
import { constants as fsConstants } from 'node:fs';
import { chmod, copyFile, lchown, link, lstat, mkdir, readdir, readlink, symlink, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import pLimit from 'p-limit';
import { lsetxattrSync, lutimesNsSync, major, minor, mknodSync } from '@cairn/sys';
import { readXattrs } from './changes.js';
import { CairnError, errnoCode, translateSpaceError } from './errors.js';

export type ReflinkMode = 'auto' | 'always' | 'never';

export interface CopyTreeOptions {
  /**
   * `auto` (default) clones file extents where the filesystem can (btrfs, xfs with
   * reflink=1) and copies bytes where it cannot, deciding on the first file and keeping
   * that answer for the rest of the copy; `always` fails with ERR_NOT_SUPPORTED when a
   * clone is impossible; `never` always copies bytes.
   */
  reflink?: ReflinkMode;
  /** Parallel file operations; default 16. */
  concurrency?: number;
}

export interface CopyTreeStats {
  /** Non-directory entries created (files, links, devices, fifos). */
  files: number;
  /** Bytes of regular-file content copied or cloned (hardlinked files counted once). */
  bytes: number;
  /** Regular files cloned instead of copied. */
  reflinked: number;
  /** Unix sockets found and not copied: they mean nothing without the process that bound them. */
  skippedSockets: number;
}

// errnos that mean "this filesystem (pair) cannot clone": copy bytes instead.
const NO_CLONE = new Set(['EOPNOTSUPP', 'ENOTSUP', 'EXDEV', 'EINVAL', 'ENOSYS', 'ENOTTY']);

/**
 * Copies the tree at `src` into `dst` (which may exist as an empty directory, e.g. a
 * staging dir) keeping everything a layer is made of: hardlinks stay hardlinks,
 * symlinks, devices and fifos are recreated, and every entry gets its owner, mode
 * (set after the owner: chown clears setuid/setgid), every readable xattr (trusted.*
 * and security.* included, we run as root) and nanosecond atime/mtime. Directories get
 * their metadata last, after their children stopped changing their mtimes.
 *
 * Sparse files come out dense when bytes are copied (cloning keeps holes).
 */
export async function copyTree(src: string, dst: string, opts: CopyTreeOptions = {}): Promise<CopyTreeStats> {
  const copier = new TreeCopier(opts.reflink ?? 'auto', opts.concurrency ?? 16);
  try {
    const root = await lstat(src, { bigint: true });
    if (!root.isDirectory()) {
      throw new CairnError('ERR_LAYER_NOT_FOUND', `cannot copy ${src}: it is not a directory`, { subject: src });
    }
    await mkdir(dst, { mode: 0o700 }).catch((err: unknown) => { if (errnoCode(err) !== 'EEXIST') throw err; });
    await copier.copyDir(src, dst, root);
  } catch (err) {
    throw translateSpaceError(err, `copying ${src} to ${dst}`);
  }
  return copier.stats;
}

/**
 * Like Promise.all, but waits for every task before rejecting, so that a failed copy
 * never returns while sibling tasks are still writing (the caller is about to delete dst).
 */
async function settleAll(tasks: Array<Promise<unknown>>): Promise<void> {
  const results = await Promise.allSettled(tasks);
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
}

class TreeCopier {
  readonly stats: CopyTreeStats = { files: 0, bytes: 0, reflinked: 0, skippedSockets: 0 };
  private readonly limit;
  // First destination path of every multiply-linked inode, so later names become links.
  private readonly inodes = new Map<string, Promise<string>>();
  // undefined until the first clone attempt answers whether this filesystem can clone.
  private canClone: boolean | undefined;

  constructor(private readonly reflink: ReflinkMode, concurrency: number) {
    this.limit = pLimit(concurrency);
    if (reflink === 'never') this.canClone = false;
  }

  async copyDir(src: string, dst: string, st: BigIntStats): Promise<void> {
    const entries = await this.limit(() => readdir(src, { withFileTypes: true }));
    await settleAll(entries.map(async (entry) => {
      const from = join(src, entry.name);
      const to = join(dst, entry.name);
      if (entry.isDirectory()) {
        const childSt = await this.limit(() => lstat(from, { bigint: true }));
        await this.limit(() => mkdir(to, { mode: 0o700 }));
        await this.copyDir(from, to, childSt);
      } else {
        await this.limit(() => this.copyEntry(from, to));
      }
    }));
    await this.limit(async () => this.applyMetadata(src, dst, st));
  }

  private async copyEntry(from: string, to: string): Promise<void> {
    const st = await lstat(from, { bigint: true });
    if (st.isSocket()) {
      this.stats.skippedSockets++;
      return;
    }
    if (st.nlink > 1n) {
      const key = `${st.dev}:${st.ino}`;
      const first = this.inodes.get(key);
      if (first) {
        // Only the first name creates the inode; every other name waits for it, then links.
        await link(await first, to);
        this.stats.files++;
        return;
      }
      let done!: (p: string) => void;
      let failed!: (e: unknown) => void;
      this.inodes.set(key, new Promise<string>((resolve, reject) => { done = resolve; failed = reject; }));
      try {
        await this.createEntry(from, to, st);
        done(to);
      } catch (err) {
        failed(err);
        throw err;
      }
      return;
    }
    await this.createEntry(from, to, st);
  }

  private async createEntry(from: string, to: string, st: BigIntStats): Promise<void> {
    if (st.isFile()) {
      await this.copyContent(from, to);
      this.stats.bytes += Number(st.size);
    } else if (st.isSymbolicLink()) {
      await symlink(await readlink(from), to);
    } else if (st.isCharacterDevice() || st.isBlockDevice() || st.isFIFO()) {
      mknodSync(to, Number(st.mode), major(Number(st.rdev)), minor(Number(st.rdev)));
    } else {
      throw new CairnError('ERR_NOT_SUPPORTED', `cannot copy ${from}: unknown file type (mode ${st.mode.toString(8)})`, { subject: from });
    }
    this.stats.files++;
    await this.applyNonDir(from, to, st);
  }

  private async copyContent(from: string, to: string): Promise<void> {
    if (this.canClone !== false) {
      try {
        await copyFile(from, to, fsConstants.COPYFILE_EXCL | fsConstants.COPYFILE_FICLONE_FORCE);
        this.canClone = true;
        this.stats.reflinked++;
        return;
      } catch (err) {
        if (!NO_CLONE.has(errnoCode(err) ?? '')) throw err;
        if (this.reflink === 'always') {
          throw new CairnError('ERR_NOT_SUPPORTED',
            `cannot clone ${from} (${errnoCode(err)}): reflink copies need btrfs or xfs formatted with reflink=1, on one filesystem`,
            { subject: from, cause: err });
        }
        this.canClone = false;
        await unlink(to).catch(() => undefined); // a failed clone may leave an empty file behind
      }
    }
    await copyFile(from, to, fsConstants.COPYFILE_EXCL);
  }

  private async applyMetadata(from: string, to: string, st: BigIntStats): Promise<void> {
    await lchown(to, Number(st.uid), Number(st.gid));
    await chmod(to, Number(st.mode & 0o7777n));
    this.copyXattrsAndTimes(from, to, st);
  }

  private async applyNonDir(from: string, to: string, st: BigIntStats): Promise<void> {
    await lchown(to, Number(st.uid), Number(st.gid));
    // Linux symlinks have no mode of their own, and chmod would follow the link.
    if (!st.isSymbolicLink()) await chmod(to, Number(st.mode & 0o7777n));
    this.copyXattrsAndTimes(from, to, st);
  }

  private copyXattrsAndTimes(from: string, to: string, st: BigIntStats): void {
    for (const [name, value] of readXattrs(from)) lsetxattrSync(to, name, value);
    lutimesNsSync(to, st.atimeNs, st.mtimeNs);
  }
}
