import { mkdir, readFile, rmdir } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { CairnError, errnoCode, readMountInfo, mountLabelOption } from '@cairnfs/core';
import type { MountInfoEntry } from '@cairnfs/core';
import { constants as sysConstants, mount, umount2 } from '@cairnfs/sys';
import { ZfsCommandError } from './command.js';
import type { ZfsCommands } from './command.js';

/**
 * How layers get mounted, decided once per driver:
 * - `legacy` (OpenZFS, as moby): datasets have `mountpoint=legacy` and are mounted with
 *   mount(2) `-t zfs` directly, no process per mount;
 * - `zfs-mount` (zfs-fuse): there is no `zfs` kernel filesystem to mount(2), and `zfs
 *   mount` refuses legacy datasets, so datasets carry `canmount=noauto` and
 *   `mountpoint=<home>/graph/<id>` and are mounted with `zfs mount`. `canmount=noauto`
 *   keeps them from being mounted when the pool is imported.
 * Legacy mounts are undone with umount2(2), zfs-fuse ones with `zfs unmount` (see unmount).
 */
export type MountMethod = 'legacy' | 'zfs-mount';

/** `legacy` when the kernel has a `zfs` filesystem type (the OpenZFS module), else `zfs-mount`. */
export async function detectMountMethod(): Promise<MountMethod> {
  let text = '';
  try {
    text = await readFile('/proc/filesystems', 'utf8');
  } catch {
    // no /proc: assume the userspace daemon, whose mounts do not need the kernel type
  }
  return text.split('\n').some((line) => line.split('\t').pop() === 'zfs') ? 'legacy' : 'zfs-mount';
}

/** The properties a new layer dataset is created with so that `method` can mount it at `path`. */
export function mountProperties(method: MountMethod, path: string): Record<string, string> {
  return method === 'legacy' ? { mountpoint: 'legacy' } : { canmount: 'noauto', mountpoint: path };
}

/** zfs-fuse needs a moment after an unmount before the dataset can be mounted or destroyed again. */
const BUSY_RETRY_MS = [10, 20, 40, 80, 160, 320, 640];

/** Runs `fn`, retrying while it fails with a "busy" ZFS error. */
export async function retryWhileBusy<T>(fn: () => Promise<T>): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      const delay = BUSY_RETRY_MS[attempt];
      if (!(err instanceof ZfsCommandError) || !err.busy || delay === undefined) throw err;
      await sleep(delay);
    }
  }
}

/** The mount of `dataset` exactly at `path`, if there is one. */
export function findDatasetMount(table: readonly MountInfoEntry[], dataset: string, path: string): MountInfoEntry | undefined {
  return table.find((m) => m.mountPoint === path && m.source === dataset && (m.fsType === 'zfs' || m.fsType === 'fuse.zfs'));
}

/** Mounts and unmounts layer datasets with the method chosen at open. */
export class ZfsMounter {
  constructor(readonly method: MountMethod, private readonly cmds: ZfsCommands) {}

  /**
   * Mounts `dataset` at `path`; `readOnly` makes this mount read-only (see {@link makeReadOnly}).
   */
  async mount(dataset: string, path: string, opts: { readOnly?: boolean; mountLabel?: string } = {}): Promise<void> {
    if (this.method === 'legacy') {
      await mkdir(path, { recursive: true, mode: 0o755 });
      const flags = opts.readOnly ? sysConstants.MS_RDONLY : 0;
      const data = mountLabelOption(opts.mountLabel);
      await mount(dataset, path, 'zfs', flags, data);
      return;
    }
    try {
      await retryWhileBusy(() => this.cmds.zfs('mount', dataset));
    } catch (err) {
      // "already mounted" that outlived the retries: fine if it is mounted where we want it.
      if (!(err instanceof ZfsCommandError && findDatasetMount(await readMountInfo(), dataset, path))) throw err;
    }
    if (opts.readOnly) await makeReadOnly(path);
  }

  /**
   * Unmounts `dataset` from `path` and removes the now empty mount point, as moby does.
   *
   * zfs-fuse: through the daemon (`zfs unmount`), never umount2(2). An unmount from
   * outside reaches the daemon as a hung-up FUSE channel that it tears down on its own
   * thread, later; a snapshot or clone racing that teardown can deadlock the whole
   * daemon (every FUSE request on its mounts then blocks forever, and SIGTERM no longer
   * stops it). Seen here with three drivers chaining 20 layers each in parallel: all
   * three hung within 10 s with umount2; with `zfs unmount`, which returns once the
   * daemon is done, nine such runs finished. It costs one call per last put.
   */
  async unmount(dataset: string, path: string): Promise<void> {
    if (this.method === 'zfs-mount') {
      try {
        await retryWhileBusy(() => this.cmds.zfs('unmount', dataset));
      } catch (err) {
        if (err instanceof ZfsCommandError && /not currently mounted|not mounted/i.test(err.stderr)) {
          // already gone
        } else if (err instanceof ZfsCommandError && err.busy) {
          throw new CairnError('ERR_LAYER_IN_USE', `cannot unmount ${path}: it is busy (a process has files open or its cwd there); close them and put again`, { subject: path, cause: err });
        } else {
          throw err;
        }
      }
    } else {
      try {
        await umount2(path);
      } catch (err) {
        const code = errnoCode(err);
        if (code === 'EBUSY') {
          throw new CairnError('ERR_LAYER_IN_USE', `cannot unmount ${path}: it is busy (a process has files open or its cwd there); close them and put again`, { subject: path, cause: err });
        }
        if (code !== 'EINVAL' && code !== 'ENOENT') throw err; // those two: not mounted (any more)
      }
    }
    await rmdir(path).catch(() => undefined);
  }
}

/**
 * Makes the mount at `path` read-only with a per-mount flag (MS_REMOUNT|MS_BIND|MS_RDONLY),
 * leaving the dataset itself writable. Not the `readonly` ZFS property: under zfs-fuse a
 * read-only dataset fails listxattr with ENOTSUP on files that have no xattr directory
 * yet (ZFS would have to create one), which breaks every tree walk that reads xattrs.
 */
export async function makeReadOnly(path: string): Promise<void> {
  await mount('none', path, null, sysConstants.MS_REMOUNT | sysConstants.MS_BIND | sysConstants.MS_RDONLY);
}
