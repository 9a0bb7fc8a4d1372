import { Dirent } from 'node:fs';
import { mkdtemp, readdir, rm, statfs, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { CairnError, errnoCode } from './errors.js';
import { findMountOf } from './mountinfo.js';
import type { MountInfoEntry } from './mountinfo.js';

/**
 * statfs(2) f_type values and the names moby prints for them (its fstype.FsNames table,
 * so `status()` reads `Backing Filesystem: extfs` exactly as `docker info` does).
 * cifs is not in moby's table; it is here because a CIFS share is a common (and bad)
 * place to put a storage root, and "cifs" says more than "<unknown>".
 */
export const FS_MAGIC_NAMES: ReadonlyMap<number, string> = new Map([
  [0x61756673, 'aufs'],
  [0x9123683e, 'btrfs'],
  [0x28cd3d45, 'cramfs'],
  [0x0000f15f, 'ecryptfs'],
  [0x0000ef53, 'extfs'],
  [0xf2f52010, 'f2fs'],
  [0x65735546, 'fuse'],
  [0x47504653, 'gpfs'],
  [0x000072b6, 'jffs2'],
  [0x3153464a, 'jfs'],
  [0x00006969, 'nfs'],
  [0x794c7630, 'overlayfs'],
  [0x858458f6, 'ramfs'],
  [0x52654973, 'reiserfs'],
  [0x0000517b, 'smb'],
  [0xff534d42, 'cifs'],
  [0x73717368, 'squashfs'],
  [0x01021994, 'tmpfs'],
  [0xa501fcf5, 'vxfs'],
  [0x58465342, 'xfs'],
  [0x2fc12fc1, 'zfs'],
]);

export const FS_MAGIC_FUSE = 0x65735546;

/** What moby prints for a magic it does not know. */
export const UNKNOWN_FS_NAME = '<unknown>';

export interface BackingFs {
  /** moby's name for the filesystem: `extfs`, `xfs`, `btrfs`, `zfs`, `overlayfs`, `tmpfs`, … */
  name: string;
  /** The raw statfs f_type, unsigned. */
  magic: number;
  /** For FUSE mounts, the subtype from mountinfo (`zfs` for fstype `fuse.zfs`). */
  fuseSubtype?: string;
}

/**
 * The path itself when it exists, else its nearest existing ancestor: a driver home is
 * probed before it is created, and it will live on whatever filesystem holds its parent.
 */
export async function nearestExistingPath(path: string): Promise<string> {
  let current = resolve(path);
  for (;;) {
    try {
      await statfs(current);
      return current;
    } catch (err) {
      const code = errnoCode(err);
      const parent = dirname(current);
      if ((code !== 'ENOENT' && code !== 'ENOTDIR') || parent === current) throw err;
      current = parent;
    }
  }
}

/**
 * Identifies the filesystem that holds `path` (or would hold it, if it does not exist
 * yet) by statfs f_type, as moby's GetFSMagic does. FUSE filesystems all share one
 * magic, so for those the mount table says which one it is: zfs-fuse shows up as
 * fstype `fuse.zfs` and is reported as `zfs`, since for the zfs driver it is one.
 */
export async function detectBackingFs(path: string): Promise<BackingFs> {
  const existing = await nearestExistingPath(path);
  const magic = (await statfs(existing)).type >>> 0;
  return nameBackingFs(magic, magic === FS_MAGIC_FUSE ? await findMountOf(existing) : undefined);
}

/**
 * Names a filesystem from its statfs magic and, for FUSE, the mount that holds the path
 * (its fstype is `fuse.<subtype>`; `fuse.zfs` is zfs-fuse, reported as `zfs`).
 */
export function nameBackingFs(magic: number, mount?: Pick<MountInfoEntry, 'fsType'>): BackingFs {
  const name = FS_MAGIC_NAMES.get(magic >>> 0) ?? UNKNOWN_FS_NAME;
  if (magic >>> 0 !== FS_MAGIC_FUSE) return { name, magic: magic >>> 0 };
  const match = mount ? /^fuse(?:blk)?\.(.+)$/.exec(mount.fsType) : null;
  if (!match) return { name, magic: FS_MAGIC_FUSE };
  const fuseSubtype = match[1]!;
  return { name: fuseSubtype === 'zfs' ? 'zfs' : name, magic: FS_MAGIC_FUSE, fuseSubtype };
}

/**
 * True when the filesystem at `path` fills in d_type in directory entries. overlayfs
 * needs it (without it, whiteouts are not recognised and deleted files reappear), so
 * overlay2 refuses such a backing filesystem, as moby does; the usual culprit is xfs
 * made with ftype=0.
 *
 * Node's readdir never shows DT_UNKNOWN: when the kernel reports it, Node lstat()s the
 * entry and returns an internal Dirent subclass built from the stats. So the test is
 * whether the entry is a plain `fs.Dirent` (type came from the kernel) or not.
 *
 * A temp directory `.cairn-dtype-*` is made under `path` (or its nearest existing
 * ancestor) and removed again.
 */
export async function supportsDType(path: string): Promise<boolean> {
  const base = await nearestExistingPath(path);
  let dir: string;
  try {
    dir = await mkdtemp(join(base, '.cairn-dtype-'));
  } catch (err) {
    throw new CairnError('ERR_PREREQUISITES',
      `cannot check d_type support on ${base}: creating a test directory failed (${errnoCode(err) ?? String(err)}); make the directory writable`,
      { subject: base, cause: err });
  }
  try {
    await writeFile(join(dir, 'probe'), '');
    const entries = await readdir(dir, { withFileTypes: true });
    const entry = entries.find((e) => e.name === 'probe');
    if (!entry) throw new CairnError('ERR_PREREQUISITES', `cannot check d_type support on ${base}: the test file vanished`, { subject: base });
    return Object.getPrototypeOf(entry) === Dirent.prototype && entry.isFile();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
