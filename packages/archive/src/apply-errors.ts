// applyLayer's failures as CairnErrors that name the entry (shared by both apply paths).
import { CairnError, errnoCode, isCairnError, translateSpaceError } from '@cairnfs/core';
import { printable, unsafeEntry } from './safe-path.js';

/** Turns an errno from the file work into a CairnError that names the entry. */
export function explain(err: unknown, entry: string, root: string): unknown {
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
