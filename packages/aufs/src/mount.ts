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
const XINO = ',dio,xino=/dev/shm/aufs.xino';

/** What mountUnion passes to mount(2): the first call's data, then one remount per branch past the page. */
export interface AufsMountPlan {
  data: string;
  appends: string[];
}

/**
 * Builds the aufs mount data: `br:<rw>=rw:<ro>=ro+wh:…` (lower branches nearest first),
 * options, and the SELinux context (core's mountLabelOption: quoted, no quotes or control
 * characters inside). The data is a comma-separated option list whose `br` value is
 * ':'-separated `path=perm` pairs, with no quoting: a branch path holding ',', ':' or '='
 * (a storage root such as `/data,xino=/etc/x`) would inject options or branches, so such
 * paths are refused with ERR_INVALID_OPTION. Pure: no I/O, testable without an aufs kernel.
 */
export function planAufsMount(rw: string, ro: readonly string[], mountLabel?: string): AufsMountPlan {
  for (const [i, path] of [rw, ...ro].entries()) {
    // eslint-disable-next-line no-control-regex
    if (/[,:=\x00-\x1f]/.test(path)) {
      throw new CairnError('ERR_INVALID_OPTION',
        `cannot mount aufs: ${i === 0 ? 'branch' : 'lower branch'} ${JSON.stringify(path)} contains ',', ':', '=' or a control character, ` +
        'which aufs mount data cannot carry; use a storage root without them', { subject: path });
    }
  }
  const context = mountLabelOption(mountLabel);
  const label = context === null ? '' : `,${context}`;
  let data = `br:${rw}=rw`;
  let i = 0;
  for (; i < ro.length; i++) {
    const next = `:${ro[i]}=ro+wh`;
    if (data.length + next.length + label.length + XINO.length > DATA_BUDGET) break;
    data += next;
  }
  return { data: `${data}${XINO}${label}`, appends: ro.slice(i).map((b) => `append:${b}=ro+wh`) };
}

/**
 * Mounts an aufs union at `target` from {@link planAufsMount}: `rw` the writable branch, `ro`
 * the lower ones (nearest first) as `=ro+wh`. Branches past one page of mount data are
 * appended with `remount,append:` one at a time, as moby does. Not exercised here: no
 * kernel on this project's machines has aufs.
 */
export async function mountUnion(rw: string, ro: readonly string[], target: string, mountLabel?: string): Promise<void> {
  const plan = planAufsMount(rw, ro, mountLabel);
  await mount('none', target, 'aufs', 0, plan.data);
  let step = '';
  try {
    for (step of plan.appends) await mount('none', target, 'aufs', sysConstants.MS_REMOUNT, step);
  } catch (err) {
    await umount2(target, sysConstants.MNT_DETACH).catch(() => undefined);
    throw new CairnError('ERR_NOT_SUPPORTED', `aufs ${step} on ${target} failed: ${(err as Error).message}`, { cause: err });
  }
}
