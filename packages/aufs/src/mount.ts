import { readFile } from 'node:fs/promises';
import { CairnError, mountLabelOption } from '@cairnfs/core';
import { constants as sysConstants, mount, umount2 } from '@cairnfs/sys';

/** Why the kernel cannot mount aufs, or null when /proc/filesystems lists it. */
export async function aufsMissingReason(procFilesystems = '/proc/filesystems'): Promise<string | null> {
  let text: string;
  try {
    text = await readFile(procFilesystems, 'utf8');
  } catch (err) {
    return `cannot read ${procFilesystems} (${(err as Error).message}) to check for aufs`;
  }
  const listed = text.split('\n').some((line) => line.trim().split(/\s+/).pop() === 'aufs');
  if (listed) return null;
  return 'this kernel has no aufs (not in /proc/filesystems; mainline Linux never merged it): layers can be ' +
    'created, read, diffed and exported without mounting, but get() needs an aufs kernel; ' +
    'migrate the store to overlay2 (cairn migrate --to overlay2)';
}

// Mount data is copied in one page; moby leaves room for the options and appends the rest by remount.
const PAGE_SIZE = 4096;
const DATA_BUDGET = PAGE_SIZE - 512;

/**
 * Mounts an aufs union at `target`: `rw` the writable branch, `ro` the lower ones
 * (nearest first) as `=ro+wh`. Branches past one page of mount data are appended with
 * `remount,append:` one at a time, as moby does. Not exercised here: no kernel on this
 * project's machines has aufs.
 */
export async function mountUnion(rw: string, ro: readonly string[], target: string, mountLabel?: string): Promise<void> {
  const context = mountLabelOption(mountLabel);
  const label = context === null ? '' : `,${context}`;
  let data = `br:${rw}=rw`;
  let i = 0;
  for (; i < ro.length; i++) {
    const next = `:${ro[i]}=ro+wh`;
    if (data.length + next.length + label.length + ',dio,xino=/dev/shm/aufs.xino'.length > DATA_BUDGET) break;
    data += next;
  }
  data += `,dio,xino=/dev/shm/aufs.xino${label}`;
  await mount('none', target, 'aufs', 0, data);
  try {
    for (; i < ro.length; i++) {
      await mount('none', target, 'aufs', sysConstants.MS_REMOUNT, `append:${ro[i]}=ro+wh`);
    }
  } catch (err) {
    await umount2(target, sysConstants.MNT_DETACH).catch(() => undefined);
    throw new CairnError('ERR_NOT_SUPPORTED', `appending aufs branch ${ro[i]} to ${target} failed: ${(err as Error).message}`, { cause: err });
  }
}
