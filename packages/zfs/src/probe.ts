import { CairnError, detectBackingFs, findMountOf, nearestExistingPath } from '@cairnfs/core';
import { ZfsCommandError, findTool, missingZfsTool } from './command.js';
import type { ZfsCommands } from './command.js';

/** The driver option naming the parent dataset, as moby names it. */
export const FSNAME_OPTION = 'zfs.fsname';

/**
 * The dataset that holds `path` (or would hold it): the source of its mount when that
 * mount is ZFS, `zfs` (OpenZFS) or `fuse.zfs` (zfs-fuse). moby's default `zfs.fsname`.
 */
export async function datasetHolding(path: string): Promise<string | null> {
  const mount = await findMountOf(await nearestExistingPath(path));
  if (!mount || (mount.fsType !== 'zfs' && mount.fsType !== 'fuse.zfs')) return null;
  return mount.source;
}

/** Checks the `zfs.*` options; returns the explicit fsname, if any. */
export function checkOptions(options: Readonly<Record<string, string>>): string | null {
  let fsname: string | null = null;
  for (const [key, value] of Object.entries(options)) {
    if (key === FSNAME_OPTION) {
      if (!/^[A-Za-z0-9][A-Za-z0-9_.:\-/]*$/.test(value) || value.endsWith('/') || value.includes('//')) {
        throw new CairnError('ERR_INVALID_OPTION', `invalid ${FSNAME_OPTION} ${JSON.stringify(value)}: name a filesystem dataset, e.g. tank/docker`, { subject: key });
      }
      fsname = value;
    } else if (key.startsWith('zfs.')) {
      throw new CairnError('ERR_INVALID_OPTION', `unknown zfs driver option ${JSON.stringify(key)}; the zfs driver takes ${FSNAME_OPTION}`, { subject: key });
    }
  }
  return fsname;
}

export interface ZfsProbe {
  /** The parent dataset layers go under. */
  fsname: string;
}

/**
 * Whether the zfs driver can run with its home at `home` (with `explicit` the
 * `zfs.fsname` option, if given), changing nothing:
 * the `zfs` tool is installed (ERR_PREREQUISITES), the home is on ZFS
 * (ERR_INCOMPATIBLE_FS; zfs-fuse counts, its mounts show as `fuse.zfs`), and the parent
 * dataset answers (ERR_NOT_SUPPORTED when the module or daemon is not there). The last
 * check is one `zfs get` call when `cmds` is given.
 */
export async function probeZfs(home: string, explicit: string | null, cmds?: ZfsCommands): Promise<ZfsProbe> {
  if (!cmds && await findTool('zfs') === null) throw missingZfsTool();
  const fs = await detectBackingFs(home);
  if (fs.name !== 'zfs') {
    throw new CairnError('ERR_INCOMPATIBLE_FS',
      `backing filesystem is ${fs.name}${fs.fuseSubtype ? ` (fuse.${fs.fuseSubtype})` : ''}, not zfs: put the storage root on a ZFS dataset`,
      { subject: home });
  }
  const fsname = explicit ?? await datasetHolding(home);
  if (fsname === null) {
    throw new CairnError('ERR_INCOMPATIBLE_FS', `cannot tell which ZFS dataset holds ${home}; pass ${FSNAME_OPTION}`, { subject: home });
  }
  if (cmds) await checkParentDataset(cmds, fsname);
  return { fsname };
}

/** Fails unless `fsname` is an existing filesystem dataset the tools can reach. */
export async function checkParentDataset(cmds: ZfsCommands, fsname: string): Promise<void> {
  let type: string | undefined;
  try {
    type = (await cmds.getProperties([fsname], ['type'])).get(fsname)?.get('type');
  } catch (err) {
    if (err instanceof ZfsCommandError && err.notFound) {
      throw new CairnError('ERR_NOT_SUPPORTED', `the parent dataset ${fsname} does not exist; create it or set ${FSNAME_OPTION} to an existing one`, { subject: fsname, cause: err });
    }
    const detail = err instanceof Error ? err.message : String(err);
    throw new CairnError('ERR_NOT_SUPPORTED',
      `ZFS is not answering (${detail}); load the zfs module (OpenZFS) or start the zfs-fuse daemon`,
      { subject: fsname, cause: err });
  }
  if (type !== 'filesystem') {
    throw new CairnError('ERR_NOT_SUPPORTED', `${fsname} is a ${type ?? 'dataset of unknown type'}, not a filesystem; set ${FSNAME_OPTION} to a filesystem dataset`, { subject: fsname });
  }
}
