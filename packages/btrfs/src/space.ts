import { CairnError, translateSpaceError } from '@cairnfs/core';

// Node 20's libuv has no name for EDQUOT: a write past a qgroup limit fails with
// code 'UNKNOWN' (sync calls) or no code at all (promises), errno -122. So the errno,
// not the code, is what identifies it. (Linux x86/arm: EDQUOT 122, ENOSPC 28.)
const EDQUOT = 122;
const ENOSPC = 28;

/** ERR_NO_SPACE for ENOSPC and EDQUOT (also when Node reports EDQUOT as 'UNKNOWN'); other errors unchanged. */
export function spaceError(err: unknown, what: string): unknown {
  const errno = Math.abs(Number((err as { errno?: unknown } | null)?.errno));
  if (errno === EDQUOT || errno === ENOSPC) {
    const name = errno === EDQUOT ? 'EDQUOT, the layer\'s qgroup limit' : 'ENOSPC';
    return new CairnError('ERR_NO_SPACE',
      `${what}: no space left (${name}). Free space on the btrfs filesystem or create the layer with a larger size.`,
      { cause: err });
  }
  return translateSpaceError(err, what);
}
